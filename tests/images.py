"""Test images made in code from the shared photos, in every format and colour mode the API accepts."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import SHARED

PHOTOS = SHARED / "data" / "images"


def photo_paths() -> list[Path]:
    """The shared real photos; empty when ../shared is not beside the project."""
    if not PHOTOS.is_dir():
        return []
    return sorted(path for path in PHOTOS.iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def sample_rgb(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic, textured RGB image (gradients and stripes), no file needed."""
    x, y = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]))
    red, green, blue = x * 255, y * 255, (np.sin(x * 40) * 0.5 + 0.5) * 255
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


def variants() -> dict[str, bytes]:
    """Every accepted encoding of the same picture."""
    rgb = sample_rgb()
    sixteen_bit = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    animated = io.BytesIO()
    rgb.save(animated, format="GIF", save_all=True, append_images=[rgb.rotate(90)], duration=100, loop=0)
    return {
        "jpeg": encode(rgb, "JPEG", quality=90),
        "png": encode(rgb, "PNG"),
        "webp": encode(rgb, "WEBP"),
        "gif-animated": animated.getvalue(),
        "bmp": encode(rgb, "BMP"),
        "grayscale-png": encode(rgb.convert("L"), "PNG"),
        "palette-png": encode(rgb.convert("P"), "PNG"),
        "cmyk-jpeg": encode(rgb.convert("CMYK"), "JPEG"),
        "rgba-png": encode(rgb.convert("RGBA"), "PNG"),
        "16-bit-png": encode(sixteen_bit, "PNG"),
    }


def decompression_bomb(pixels: int) -> bytes:
    """A tiny PNG that decodes to ``pixels`` pixels (1-bit, so building it stays cheap)."""
    side = int(pixels**0.5) + 1
    return encode(Image.new("1", (side, side)), "PNG", optimize=True)


def rle_bmp(width: int, height: int) -> bytes:
    """An 8-bit BMP with RLE compression, its rows each one pixel then end-of-line: tens of kilobytes for a
    40-megapixel image that Pillow's RLE decoder (written in Python) takes seconds to decode."""
    palette = bytes(1024)
    pixels = b"\x01\x00\x00\x00" * height + b"\x00\x01"  # per row: a run of 1 pixel, end of line; end of image
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + palette + pixels


def many_scan_jpeg(side: int, repeats: int) -> bytes:
    """A progressive grayscale JPEG whose last scan (with the Huffman tables before it) comes ``repeats`` more times:
    libjpeg decodes every one over the whole image, so a few hundred bytes per scan buy seconds of decoding."""
    data = encode(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=90)
    segments: list[tuple[int, bytes]] = []  # (marker, bytes), an SOS with its entropy-coded data
    at = 2
    while data[at + 1] != 0xD9:
        marker = data[at + 1]
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker == 0xDA:  # the scan's data runs to the next marker that is not a stuffed FF or a restart
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        segments.append((marker, data[at:end]))
        at = end
    last = len(segments) - 1
    first = last
    while segments[first - 1][0] == 0xC4:  # DHT segments belong to the scan after them
        first -= 1
    unit = b"".join(segment for _, segment in segments[first:])
    return data[:2] + b"".join(segment for _, segment in segments) + unit * repeats + data[at:]


# Valid images padded with structure Pillow parses in Python, one piece at a time (deployments/resnet/structure.py).


def png_chunk(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def empty_chunks_png(count: int) -> bytes:
    png = encode(sample_rgb((64, 64)), "PNG")
    return png[:33] + png_chunk(b"prVt") * count + png[33:]  # after IHDR: private chunks Pillow skips one by one


def app2_markers_jpeg(count: int) -> bytes:
    jpeg = encode(sample_rgb((64, 64)), "JPEG")
    return jpeg[:2] + b"\xff\xe2\x00\x02" * count + jpeg[2:]


def junk_jpeg(junk: int) -> bytes:
    jpeg = encode(sample_rgb((64, 64)), "JPEG")
    return jpeg[:2] + b"\x00" * junk + jpeg[2:]


def icc_profiles_png(count: int, inflated: int = 1_000_000) -> bytes:
    """A 64 x 64 PNG with ``count`` ICC profiles (iCCP chunks), each inflating to ``inflated`` bytes (~1 KB)."""
    png = encode(sample_rgb((64, 64)), "PNG")
    profile = png_chunk(b"iCCP", b"p\x00\x00" + zlib.compress(b"\x00" * inflated, 9))
    return png[:33] + profile * count + png[33:]


def fill_after_scan_jpeg(fill: int) -> bytes:
    """A 64 x 64 JPEG with ``fill`` 0xFF fill bytes between its scan and its end marker (legal before a marker)."""
    jpeg = encode(sample_rgb((64, 64)), "JPEG")
    return jpeg[:-2] + b"\xff" * fill + jpeg[-2:]


def comment_blocks_gif(count: int) -> bytes:
    gif = encode(Image.new("P", (8, 8), 1), "GIF")
    table = 3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0
    start = 13 + table
    return gif[:start] + b"\x21\xfe" + b"\x01x" * count + b"\x00" + gif[start:]

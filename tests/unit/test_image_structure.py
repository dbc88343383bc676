"""Images whose container structure makes Pillow's Python parsers loop (deployments/resnet/structure.py) are
refused in milliseconds, before Pillow reads them; real images of every accepted format still decode."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from deployments.errors import InvalidInput
from deployments.resnet.preprocess import MAX_PIXELS_PER_BYTE, decode_image, open_header
from deployments.resnet.structure import MAX_GIF_SUB_BLOCKS, MAX_JPEG_MARKERS, MAX_JPEG_STRAY_BYTES, MAX_PNG_CHUNKS
from tests.images import (
    app2_markers_jpeg,
    comment_blocks_gif,
    empty_chunks_png,
    encode,
    fill_after_scan_jpeg,
    icc_profiles_png,
    junk_jpeg,
    photo_paths,
    png_chunk,
)

MAX_PIXELS = 40_000_000


def refusal(data: bytes) -> tuple[InvalidInput, float]:
    started = time.monotonic()
    with pytest.raises(InvalidInput) as raised:
        decode_image(data, MAX_PIXELS)
    return raised.value, time.monotonic() - started


@pytest.mark.parametrize(
    ("hostile", "what"),
    [
        (empty_chunks_png(1_500_000), "PNG chunks"),  # 18 MB; Pillow took 3.3 s to open it
        (app2_markers_jpeg(4_500_000), "JPEG markers"),  # 18 MB; 6 s and ~590 MB
        (junk_jpeg(19_000_000), "stray bytes"),  # 0.95 s
        (comment_blocks_gif(9_000_000), "sub-blocks"),  # 18 MB; 1.9 s
        (icc_profiles_png(8_100), "ICC profile"),  # 8 MB, each inflating to 1 MB: 10 s to open, decoded twice
        (fill_after_scan_jpeg(18_000_000), "stray bytes"),  # libjpeg's decode grows with the square: 2.3 s
    ],
    ids=["png-chunks", "jpeg-markers", "jpeg-junk", "gif-sub-blocks", "png-icc-profiles", "jpeg-fill-after-scan"],
)
def test_an_image_padded_with_empty_structure_is_refused_in_milliseconds(hostile, what):
    error, seconds = refusal(hostile)
    assert error.kind == "image_too_complex" and what in error.message
    assert seconds < 0.5, seconds


def test_a_tiny_file_declaring_a_huge_canvas_is_refused():
    gif = bytearray(encode(Image.new("P", (8, 8), 1), "GIF"))
    gif[6:10] = struct.pack("<HH", 6324, 6324)  # 40 megapixels around an 8 x 8 frame, in 48 bytes
    error, seconds = refusal(bytes(gif))
    assert error.kind == "image_too_complex" and "pixels per byte" in error.message
    assert seconds < 0.1, seconds


def test_real_structure_near_the_limits_still_decodes():
    # A PNG in libpng's 8 KiB IDAT chunks (as browsers write them), an EXIF/ICC-heavy JPEG, XMP-like GIF extensions.
    pixels = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    compressed = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in pixels))
    idat = b"".join(png_chunk(b"IDAT", compressed[i : i + 8192]) for i in range(0, len(compressed), 8192))
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1000, 1000, 8, 2, 0, 0, 0))
    png = b"\x89PNG\r\n\x1a\n" + header + idat + png_chunk(b"IEND")
    assert 300 < len(idat) // 8204 < MAX_PNG_CHUNKS
    assert decode_image(png, MAX_PIXELS).size == (1000, 1000)
    jpeg = app2_markers_jpeg(MAX_JPEG_MARKERS - 20)
    assert decode_image(jpeg, MAX_PIXELS).size == (64, 64)
    gif = comment_blocks_gif(MAX_GIF_SUB_BLOCKS - 10)
    assert decode_image(gif, MAX_PIXELS).size == (8, 8)
    assert decode_image(icc_profiles_png(1), MAX_PIXELS).size == (64, 64)  # one profile, of Pillow's largest
    assert decode_image(fill_after_scan_jpeg(MAX_JPEG_STRAY_BYTES - 2), MAX_PIXELS).size == (64, 64)
    for path in photo_paths():  # the shared test photos
        open_header(path.read_bytes())


def test_a_blank_page_compresses_below_the_pixels_per_byte_limit():
    # The most compressible real image: a white 1-bit page of 40 megapixels.
    buffer = io.BytesIO()
    Image.new("1", (5000, 8000), 1).save(buffer, "PNG", optimize=True)
    assert 5000 * 8000 / len(buffer.getvalue()) < MAX_PIXELS_PER_BYTE
    assert open_header(buffer.getvalue()).size == (5000, 8000)

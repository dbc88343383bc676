"""Image bytes to the tensor ResNet-152 expects, exactly as ``ResNet152_Weights.IMAGENET1K_V2.transforms()``.

Decoding is defensive: only the formats the API documents (JPEG, PNG, WebP, GIF, BMP) are opened at all, so
Pillow's other decoders (TIFF, JPEG 2000, AVIF, PPM and some forty more, each its own attack surface) never see
a client's bytes; the pixel count is checked from the header before any pixel is decoded (decompression
bombs), EXIF orientation is applied, animated formats give their first frame, and every colour mode (palette,
grayscale, CMYK, alpha, 16-bit) ends up as 8-bit RGB. A request's images are also checked together, from their
headers, against a budget of pixels (``check_request_pixels``), and JPEGs are decoded at reduced size (DCT
scaling, ``Image.draft``) when that still leaves twice the resolution the resize keeps: a 40-megapixel photo
then costs a fraction of the time and memory and classifies the same (benchmarks/results/worst_inputs.md).
Anything that is not a whole, sane image raises InvalidInput (InputTooLarge for too many pixels) with a
``kind`` and a message a client can act on.
"""

import io
import math
import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.models import ResNet152_Weights

from deployments.errors import MAX_DETAIL_CHARS, InputTooLarge, InvalidInput, shorten
from deployments.resnet.settings import ImageModelSettings
from deployments.resnet.structure import check_structure

IMAGENET_TRANSFORM = ResNet152_Weights.IMAGENET1K_V2.transforms()
HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Pillow's names of the formats the API accepts (docs/api.md "Image classification"); Image.open tries no other plugin.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF or BMP"
SIGNATURE_BYTES = 16  # what Image.open shows each plugin's signature check
RESIZE_SHORT_SIDE: int = IMAGENET_TRANSFORM.resize_size[0]  # 232
# JPEG decodes at 1/2, 1/4 or 1/8 size only while the short side stays at least this many times RESIZE_SHORT_SIDE,
# so the antialiased resize still averages several decoded pixels into each one, as from the full image.
DRAFT_MARGIN = 2
DEFAULT_MAX_ASPECT_RATIO: float = ImageModelSettings.model_fields["max_aspect_ratio"].default
# A progressive JPEG is decoded once per scan, over the whole image: libjpeg writes 6 scans (grayscale) to 18 (CMYK),
# and accepts any number. 1,000 repeated scans of a 36-megapixel image (223 KB) took 23 s to decode, without end
# in sight as the file grows; 32 scans cost at most ~0.8 s there. Scans start with an SOS marker (FF DA), which
# entropy-coded data cannot contain (an FF there is followed by 00 or a restart marker), so counting them is exact.
MAX_JPEG_SCANS = 32
# Declared pixels per byte of the file. A 48-byte GIF declared a 6,324 x 6,324 canvas around an 8 x 8 frame: five
# of them (743 bytes) were 200 megapixels to decode, 3.3 s, while the admission counts bytes. Photos and drawings
# stay far below this; only blank canvases come near it (40 megapixels of white: 1-bit PNG 2,900 pixels a byte,
# GIF 1,300, lossless WebP 25,000, which is refused as no picture).
MAX_PIXELS_PER_BYTE = 20_000
# EXIF metadata: JPEG's APP1 segment holds at most 64 KiB, so no camera writes more; PNG (eXIf) and WebP (EXIF)
# chunks have no such bound. A 64 x 32 PNG with 780 KB of EXIF (65,000 entries and an orientation) took 1.8 s to
# decode, nearly all of it Pillow re-writing the metadata after turning the image (ImageOps.exif_transpose), and
# 12 of them in one request held the image replica for 30 s while the pixel budgets saw 2,048 pixels each.
MAX_EXIF_BYTES = 65_536
ORIENTATION_TAG = 0x0112
# Pillow's own decompression-bomb error names its internal limit (178,956,970 pixels), not the service's.
DECLARED_PIXELS = re.compile(r"\((\d+) pixels\)")
# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose maps it).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_BIT_DEPTH_MODES:
        # In the image's own dtype: a float64 copy of a 40-megapixel 16-bit image was 320 MB, twice over.
        pixels = np.asarray(image)
        if image.mode != "F" and pixels.max(initial=0) > 255:
            pixels = pixels // 257  # 16-bit range onto 8-bit (floor, as float division then truncation was)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))  # 2-D uint8: mode L
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas become white, as a browser shows them, instead of whatever colour they hide.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def signature_format(data: bytes) -> str | None:
    """The format whose signature the data starts with, by Pillow's plugins' checks of the first bytes alone
    (no header is parsed); None when no plugin knows it."""
    Image.init()
    prefix = data[:SIGNATURE_BYTES]
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a signature check that cannot read this prefix does not know it
            continue
    return None


def _unidentified(data: bytes) -> InvalidInput:
    detected = signature_format(data)
    if detected is not None and detected not in ACCEPTED_FORMATS:
        return InvalidInput("unsupported_image_format", f"{detected} images are not accepted: send {ACCEPTED_NAMES}")
    return InvalidInput("not_an_image", f"not a recognised image ({ACCEPTED_NAMES})")


def _reason(error: Exception) -> str:
    return shorten(str(error), MAX_DETAIL_CHARS)


def open_header(data: bytes) -> Image.Image:
    """The image with only its header read (Pillow decodes pixels on ``load``); InvalidInput if it is not one."""
    if not data:
        raise InvalidInput("empty_image", "the image is empty (0 bytes)")
    check_structure(data)
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Image.DecompressionBombError as error:
        declared = DECLARED_PIXELS.search(str(error))
        pixels = f"{declared[1]} pixels" if declared else "more pixels than Pillow decodes"
        message = f"the image declares {pixels}, far over the limit per image (images.max_pixels)"
        raise InputTooLarge("image_too_large", message) from None
    except Exception as error:  # PIL's format plugins raise many types on hostile headers
        raise InvalidInput("corrupt_image", f"the image header could not be read: {_reason(error)}") from None
    _refuse_python_decoders(image)
    if image.format in ("JPEG", "MPO") and (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        raise InvalidInput(
            "image_too_complex",
            f"the JPEG has {scans} scans, over the limit of {MAX_JPEG_SCANS} (each scan decodes the whole image "
            "again): re-encode it as a baseline or ordinary progressive JPEG",
        )
    width, height = image.size
    if width * height > MAX_PIXELS_PER_BYTE * len(data):
        raise InvalidInput(
            "image_too_complex",
            f"the image declares {width}x{height} pixels in {len(data)} bytes, over {MAX_PIXELS_PER_BYTE} pixels per "
            "byte (only a blank canvas compresses that far): send the picture itself",
        )
    return image


def _refuse_python_decoders(image: Image.Image) -> None:
    """InvalidInput if decoding would run one of Pillow's decoders written in Python (Image.DECODERS; the C ones are
    in Image.core): a Python loop per pixel. In the accepted formats that is BMP's RLE compression, whose 26 KB of
    a 40-megapixel image took 4.6 s to decode (a photo at the same size: 0.3 s)."""
    python_decoders = {tile[0] for tile in getattr(image, "tile", ())} & set(Image.DECODERS)
    if python_decoders:
        compression = "RLE compression" if "bmp_rle" in python_decoders else f"{sorted(python_decoders)[0]} encoding"
        raise InvalidInput(
            "unsupported_image_format",
            f"{image.format} images with {compression} are not accepted (their decoder is too slow): send it "
            "without that compression, or in another accepted format",
        )


def check_request_pixels(images: Sequence[bytes], max_request_pixels: int) -> list[int]:
    """Each image's pixels, read from its header; InputTooLarge when they are more than ``max_request_pixels`` in
    all. An image whose header cannot be read raises its own error, located at its place in the request."""
    pixels = []
    for index, data in enumerate(images):
        try:
            width, height = open_header(data).size
        except InvalidInput as error:
            raise error.at(f"images.{index}") from None
        pixels.append(width * height)
    total = sum(pixels)
    if total > max_request_pixels:
        message = (
            f"the request's {len(images)} images have {total} pixels in all, over the limit of {max_request_pixels} "
            "pixels per request: send fewer or smaller images per request"
        )
        raise InputTooLarge("request_too_large", message, "images")
    return pixels


def _decode_reduced(image: Image.Image) -> None:
    """For a JPEG, pick the smallest DCT scaling that keeps DRAFT_MARGIN times the resize's short side."""
    if image.format == "JPEG":
        width, height = image.size
        keep = DRAFT_MARGIN * RESIZE_SHORT_SIDE / min(width, height)
        if keep < 1:  # draft picks the largest scale that gives at least this size
            image.draft(None, (math.ceil(width * keep), math.ceil(height * keep)))


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF (or XMP) orientation says; only the pixels, no metadata written back."""
    exif = image.info.get("exif")
    if exif is not None and len(exif) > MAX_EXIF_BYTES:
        message = f"the image's EXIF metadata is {len(exif)} bytes, over the limit of {MAX_EXIF_BYTES}: strip it"
        raise InvalidInput("image_metadata_too_large", message)
    method = UPRIGHT.get(image.getexif().get(ORIENTATION_TAG))
    return image.transpose(method) if method is not None else image


def decode_image(data: bytes, max_pixels: int, max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO) -> Image.Image:
    """Decode, orient and convert to RGB; raises InvalidInput for anything unusable."""
    image = open_header(data)
    width, height = image.size
    if width * height > max_pixels:
        raise InputTooLarge("image_too_large", f"{width}x{height} pixels is over the limit of {max_pixels} pixels")
    if width == 0 or height == 0:
        raise InvalidInput("not_an_image", "the image has no pixels")
    # Checked from the header too: resizing the short side to 232 scales the long side by the same factor, so
    # a few hundred bytes of 65535x1 GIF would become a 15-million-pixel-long image (gigabytes) before the crop.
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise InvalidInput(
            "image_too_elongated",
            f"{width}x{height} pixels is more elongated than the limit of {max_aspect_ratio:g}:1 (long:short side)",
        )
    try:
        image.seek(0)  # animated GIF/WebP: the first frame
        _decode_reduced(image)
        image.load()
        return _to_rgb(_upright(image))
    except InvalidInput:
        raise
    except Exception as error:  # likewise for the pixel data (and its EXIF): truncated, corrupt or malicious
        message = f"the image could not be decoded (truncated or corrupt): {_reason(error)}"
        raise InvalidInput("corrupt_image", message) from None


def preprocess(data: bytes, max_pixels: int, max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO) -> torch.Tensor:
    """A (3, 224, 224) float tensor: resize 232 (bilinear, antialiased), centre crop 224, normalise."""
    return IMAGENET_TRANSFORM(decode_image(data, max_pixels, max_aspect_ratio))

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, features
from PIL.BmpImagePlugin import BmpRleDecoder
from torchvision.models import ResNet152_Weights

from deployments.errors import InputTooLarge, InvalidInput
from deployments.resnet import preprocess as preprocess_module
from deployments.resnet.preprocess import check_request_pixels, decode_image, preprocess
from serve_app.testing.worst_inputs import exif_with_entries
from tests.images import (
    decompression_bomb,
    encode,
    many_scan_jpeg,
    rle_bmp,
    sample_rgb,
    variants,
)

LIMIT = 40_000_000


@pytest.mark.parametrize("name", sorted(variants()))
def test_every_format_and_mode_becomes_a_normalised_rgb_tensor(name):
    tensor = preprocess(variants()[name], LIMIT)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    assert torch.isfinite(tensor).all()


def test_matches_torchvision_preset_transforms():
    data = variants()["png"]
    expected = ResNet152_Weights.IMAGENET1K_V2.transforms()(Image.open(io.BytesIO(data)).convert("RGB"))
    assert torch.equal(preprocess(data, LIMIT), expected)


def test_sixteen_bit_keeps_its_contrast():
    gray = np.asarray(decode_image(variants()["16-bit-png"], LIMIT).convert("L"), dtype=int)
    reference = np.asarray(sample_rgb().convert("L"), dtype=int)
    assert np.abs(gray - reference).max() <= 1


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(encode(image, "PNG"), LIMIT).getpixel((4, 4)) == (255, 255, 255)


def test_gif_gives_its_first_frame():
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    buffer = io.BytesIO()
    red.save(buffer, format="GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert decode_image(buffer.getvalue(), LIMIT).getpixel((8, 8)) == (255, 0, 0)


def test_exif_orientation_is_applied():
    image = sample_rgb((300, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()), LIMIT)
    assert decoded.size == (100, 300)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_orientation_is_applied_from_exif_up_to_the_largest_a_jpeg_can_carry(image_format):
    exif = exif_with_entries(5_400)  # 64,838 bytes: under MAX_EXIF_BYTES (a JPEG APP1 segment holds at most 64 KiB)
    assert len(exif) <= preprocess_module.MAX_EXIF_BYTES
    decoded = decode_image(encode(sample_rgb((300, 100)), image_format, exif=exif), LIMIT)
    assert decoded.size == (100, 300)


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_exif_larger_than_a_jpeg_can_carry_is_refused_before_it_is_read(image_format, monkeypatch):
    # 65,000 entries (780 KB) in a 64 x 32 image took 1.8 s to decode: Pillow re-wrote them after turning it.
    data = encode(Image.new("RGB", (64, 32)), image_format, exif=exif_with_entries(65_000))
    monkeypatch.setattr(Image.Image, "getexif", lambda self: pytest.fail("the EXIF was parsed"))
    with pytest.raises(InvalidInput) as raised:
        decode_image(data, LIMIT)
    assert raised.value.kind == "image_metadata_too_large" and "780" in str(raised.value)


def png_text_chunk(kind: bytes, index: int, text: bytes) -> bytes:
    """A compressed text chunk: a zTXt with keyword k<index> (``index`` None: an empty keyword, which Pillow inflates
    and drops), or an iTXt, compressed, of ``text`` (Pillow drops one that is not UTF-8, after inflating it)."""
    keyword = b"" if index is None else b"k%d" % index
    stream = zlib.compress(text, 9)
    data = keyword + (b"\x00\x00" + stream if kind == b"zTXt" else b"\x00\x01\x00en\x00\x00" + stream)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_text(chunks: list[bytes], after_pixels: bool = False) -> bytes:
    """A 64 x 64 PNG holding ``chunks`` before its pixel data (IDAT), or after it."""
    png = encode(Image.new("RGB", (64, 64)), "png")
    at = png.index(b"IEND" if after_pixels else b"IDAT") - 4
    return png[:at] + b"".join(chunks) + png[at:]


@pytest.mark.parametrize(
    "chunks",
    [
        # 60 chunks of 1 MB (61 KB sent) took 168 ms of CPU to open, twice a request; counted as 4,096 pixels.
        pytest.param([png_text_chunk(b"zTXt", n, b"a" * 1_000_000) for n in range(60)], id="zTXt"),
        # Pillow inflates these and keeps nothing, so its own text limit never saw them: 500 took 1.1 s to open.
        pytest.param([png_text_chunk(b"zTXt", None, b"a" * 1_000_000)] * 500, id="zTXt-without-keyword"),
        pytest.param([png_text_chunk(b"iTXt", n, b"\xff" * 1_000_000) for n in range(60)], id="iTXt-not-utf8"),
    ],
)
@pytest.mark.parametrize("after_pixels", [False, True], ids=["before-the-pixels", "after-the-pixels"])
def test_png_text_inflating_past_a_mebibyte_is_refused_before_pillow_reads_it(chunks, after_pixels, monkeypatch):
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("Pillow opened it"))
    with pytest.raises(InvalidInput) as raised:
        preprocess(png_with_text(chunks, after_pixels), LIMIT)
    assert raised.value.kind == "image_too_complex" and "text chunks" in str(raised.value)


def test_png_text_under_a_mebibyte_in_all_is_fine():
    chunks = [png_text_chunk(b"zTXt", n, b"a" * 200_000) for n in range(4)] + [png_text_chunk(b"iTXt", 9, b"x" * 1000)]
    assert preprocess(png_with_text(chunks), LIMIT).shape == (3, 224, 224)
    assert preprocess(png_with_text(chunks, after_pixels=True), LIMIT).shape == (3, 224, 224)


def test_a_bomb_past_pillows_own_limit_names_its_pixels_not_pillows_limit():
    with pytest.raises(InputTooLarge) as raised:
        preprocess(decompression_bomb(200_000_000), LIMIT)
    assert "images.max_pixels" in str(raised.value) and "178956970" not in str(raised.value)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty_image"),
        (b"definitely not an image", "not_an_image"),
        (variants()["jpeg"][:600], "corrupt_image"),
        (variants()["png"][:-200], "corrupt_image"),
        (decompression_bomb(LIMIT + 1), "image_too_large"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "bomb"],
)
def test_bad_images_raise_a_clear_error(data, kind):
    with pytest.raises(InvalidInput) as raised:
        preprocess(data, LIMIT)
    assert raised.value.kind == kind and str(raised.value)


def test_too_many_pixels_is_an_input_too_large_the_other_refusals_are_not():
    # The ingress answers InputTooLarge with 413, any other InvalidInput with 422 (serve_app.errors).
    with pytest.raises(InputTooLarge):
        preprocess(decompression_bomb(LIMIT + 1), LIMIT)
    with pytest.raises(InvalidInput) as raised:
        preprocess(b"", LIMIT)
    assert not isinstance(raised.value, InputTooLarge)


@pytest.mark.parametrize("size", [(65535, 1), (1, 65535), (102, 2)])
def test_images_more_elongated_than_the_limit_are_refused_before_decoding(size):
    # 65535x1 is a few hundred bytes of PNG, but resized to 232 on its short side it would be ~15 million pixels
    # long: gigabytes before the centre crop.
    with pytest.raises(InvalidInput) as raised:
        preprocess(encode(Image.new("1", size), "PNG", optimize=True), LIMIT, max_aspect_ratio=50)
    assert raised.value.kind == "image_too_elongated" and "50:1" in str(raised.value)


def test_an_image_exactly_at_the_aspect_ratio_limit_is_classified():
    tensor = preprocess(encode(sample_rgb().resize((500, 10)), "PNG"), LIMIT, max_aspect_ratio=50)
    assert tensor.shape == (3, 224, 224)


# Formats Pillow decodes but the API does not accept (docs/api.md "Image classification"): refused before any
# decoder of theirs runs.
REFUSED_FORMATS = ("TIFF", "PPM", "JPEG2000", "AVIF", "ICO", "PCX", "QOI", "SGI")


@pytest.mark.parametrize("image_format", REFUSED_FORMATS)
def test_formats_the_api_does_not_list_are_refused_naming_the_format(image_format):
    if image_format == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support to make a test image with")
    with pytest.raises(InvalidInput) as raised:
        preprocess(encode(sample_rgb(), image_format), LIMIT)
    assert raised.value.kind == "unsupported_image_format"
    assert str(raised.value) == f"{image_format} images are not accepted: send JPEG, PNG, WebP, GIF or BMP"


def test_bmp_with_rle_compression_is_refused_before_its_python_decoder_runs(monkeypatch):
    decoded = []
    monkeypatch.setattr(BmpRleDecoder, "decode", lambda self, buffer: decoded.append(buffer) or (-1, 0))
    for data in (rle_bmp(6324, 6324), rle_bmp(64, 48)):
        with pytest.raises(InvalidInput) as raised:
            preprocess(data, LIMIT)
        assert raised.value.kind == "unsupported_image_format"
        assert "BMP images with RLE compression" in str(raised.value)
    assert decoded == []
    assert preprocess(encode(sample_rgb(), "BMP"), LIMIT).shape == (3, 224, 224)  # uncompressed BMP still classified


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding_and_ordinary_progressive_ones_are_not():
    with pytest.raises(InvalidInput) as raised:
        preprocess(many_scan_jpeg(2000, 1000), LIMIT)  # took 2.3 s to decode when accepted
    assert raised.value.kind == "image_too_complex" and "over the limit of 32" in str(raised.value)
    assert preprocess(many_scan_jpeg(64, 10), LIMIT).shape == (3, 224, 224)  # 16 scans: fine
    for mode in ("L", "RGB", "CMYK"):  # libjpeg's progressive JPEGs: 6, 10 and 18 scans
        assert preprocess(encode(sample_rgb().convert(mode), "JPEG", progressive=True), LIMIT).shape == (3, 224, 224)


def test_no_other_format_plugin_reads_a_clients_bytes(monkeypatch):
    Image.init()
    opened = []
    for name, (_, accept) in list(Image.OPEN.items()):
        if name not in ("JPEG", "PNG", "WEBP", "GIF", "BMP"):

            def refuse(*args, name=name, **kwargs):
                opened.append(name)
                raise AssertionError(f"the {name} plugin was asked to open a client's image")

            monkeypatch.setitem(Image.OPEN, name, (refuse, accept))
    for image_format in ("TIFF", "PPM", "JPEG2000", "PCX"):
        with pytest.raises(InvalidInput):
            preprocess(encode(sample_rgb(), image_format), LIMIT)
    for data in variants().values():
        preprocess(data, LIMIT)
    assert opened == []


def test_an_accepted_format_with_a_broken_header_is_not_called_unsupported():
    broken_png = variants()["png"][:8] + b"\x00" * 40
    with pytest.raises(InvalidInput) as raised:
        preprocess(broken_png, LIMIT)
    assert raised.value.kind == "not_an_image" and "JPEG, PNG, WebP, GIF or BMP" in str(raised.value)


def _jpeg_of(size: tuple[int, int]) -> bytes:
    return encode(sample_rgb().resize(size, Image.BICUBIC), "JPEG")


def test_a_request_over_its_pixel_budget_is_refused_from_the_headers():
    images = [_jpeg_of((400, 300))] * 3  # 120,000 pixels each
    check_request_pixels(images, 360_000)  # exactly at the budget
    with pytest.raises(InputTooLarge, match="360000 pixels in all, over the limit of 359999") as raised:
        check_request_pixels(images, 359_999)
    assert raised.value.kind == "request_too_large" and raised.value.field == "images"


def test_the_pixel_budget_check_names_an_image_it_cannot_read():
    with pytest.raises(InvalidInput) as raised:
        check_request_pixels([_jpeg_of((40, 30)), b"not an image"], 10**9)
    assert raised.value.kind == "not_an_image" and raised.value.field == "images.1"


def test_large_jpegs_decode_at_reduced_size_keeping_twice_the_resize():
    assert decode_image(_jpeg_of((3200, 2400)), LIMIT).size == (800, 600)  # 1/4: short side 600 >= 2 x 232
    assert decode_image(_jpeg_of((900, 600)), LIMIT).size == (900, 600)  # 1/2 would leave 300 < 464


def test_reduced_jpeg_decoding_gives_nearly_the_full_decodes_tensor(monkeypatch):
    data = _jpeg_of((3200, 2400))
    reduced = preprocess(data, LIMIT)
    monkeypatch.setattr(preprocess_module, "_decode_reduced", lambda image: None)
    full = preprocess(data, LIMIT)
    # Normalised units (one 8-bit step is ~0.017): the resize averages either way, DCT scaling rounds a little
    # differently. benchmarks/results/worst_inputs.md shows the same top-5 classes on the shared photos.
    assert (reduced - full).abs().mean() < 0.01 and (reduced - full).abs().max() < 0.2

"""The costliest inputs we know how to build within the default limits, shared by benchmarks/worst_inputs.py and
the tests that bound their cost (tests/hostile/test_worst_inputs.py)."""

import io
import math
import random
import struct

import numpy as np
from PIL import Image

MAX_CHARS = 10_000  # limits.max_question_chars
ORDINARY_QUESTION = "How do I remove a specific item from an array in JavaScript?"
_PROSE = (
    "I have an array of objects and I want to remove the one whose id matches a value I get from a form. "
    "I tried splice inside a forEach loop but the indexes shift and the wrong element is removed. "
    "What is the idiomatic way to do this without mutating the original array? "
)
ORDINARY_TEXT = (_PROSE * (MAX_CHARS // len(_PROSE) + 1))[:MAX_CHARS]


UNKNOWN_SCRIPT_LETTERS = "".join(chr(code) for code in range(0x20000, 0x2A6E0))


def _fill(unit: str, chars: int = MAX_CHARS) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def _random_words(seed: int, length: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    rng = random.Random(seed)
    words, size = [], 0
    while size < MAX_CHARS:
        words.append("".join(rng.choices(alphabet, k=length)))
        size += length + 1
    return " ".join(words)[:MAX_CHARS]


def never_seen_questions(count: int, seed: int = 0) -> list[str]:
    """``count`` questions of MAX_CHARS characters of random 2-4 letter words: most of their words are new to any
    word cache (about 475,000 such words exist; a cache holds ~30,000), the costliest text known to score."""
    rng = random.Random(seed)
    questions = []
    for _ in range(count):
        words, size = [], 0
        while size < MAX_CHARS - 5:
            words.append("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 4))))
            size += len(words[-1]) + 1
        questions.append(" ".join(words))
    return questions


def worst_questions() -> dict[str, str]:
    """Name -> a question of at most MAX_CHARS characters built to be slow in one step of the text path."""
    return {
        "dots": "." * MAX_CHARS,
        "dots then a letter": "." * (MAX_CHARS - 1) + "a",
        "operator run": _fill("=!<>&|?"),
        "operators and punctuation": _fill("=.=,"),
        "unclosed <a": _fill("<a "),
        "unclosed <!--": _fill("<!--"),
        "unclosed <pre><code>": _fill("<pre><code>x "),
        "lone <": _fill("< b "),
        "long numeric charref": "&#" + "9" * (MAX_CHARS - 2),
        "many charrefs": _fill("&amp;&#x41;&lt"),
        "urls": _fill("http://a.b/c www."),
        "one 10,000-letter word": "a" * MAX_CHARS,
        "one random 10,000-letter word": _random_words(1, MAX_CHARS),
        "distinct 3-letter words": _random_words(5, 3),
        "distinct 5-letter words": _random_words(2, 5),
        # 5,000 words, nearly all distinct, of a script the FAQ never uses (CJK Extension B).
        "distinct 1-character words, unknown script": _random_words(4, 1, UNKNOWN_SCRIPT_LETTERS),
        "distinct 64-letter words": _random_words(3, 64),
        "repeated bigram": _fill("sort array "),
        "combining marks": _fill("e\u0301\u0302\u0303"),
        "emoji with modifiers": _fill("\U0001f44d\U0001f3fd\u200d "),
        "right-to-left": _fill("\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202e"),
        "dotted capital I (lower() grows)": "\u0130" * MAX_CHARS,
        "whitespace then a word": " " * (MAX_CHARS - 1) + "a",
    }


def _gradient(width: int, height: int, channels: int, dtype: type = np.uint8, noise: int = 0) -> np.ndarray:
    """A smooth image (with a little noise for JPEG): small enough a file at the pixel limit to pass the body
    limit, while decoding costs what any pixels cost."""
    top = 255 if dtype == np.uint8 else 65535
    x = np.linspace(0, top, width, dtype=np.float32)
    y = np.linspace(0, top, height, dtype=np.float32)[:, None]
    plane = (x + y) / 2
    if noise:
        plane = plane + np.random.default_rng(0).integers(0, noise, (height, width)).astype(np.float32)
    plane = np.clip(plane, 0, top).astype(dtype)
    return plane if channels == 1 else np.repeat(plane[:, :, None], channels, axis=2)


def exif_with_entries(entries: int, orientation: int = 6) -> bytes:
    """Little-endian EXIF whose first IFD holds an orientation and ``entries`` more SHORT tags (12 bytes each)."""
    tags = [(0x0112, orientation)] + [(0x0200 + index, 1) for index in range(entries)]
    body = b"".join(struct.pack("<HHII", tag, 3, 1, value) for tag, value in tags)
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, len(tags)) + body + b"\x00" * 4


def _save(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def _size(pixels: int, aspect: float = 1.6) -> tuple[int, int]:
    height = int(math.sqrt(pixels / aspect))
    return int(pixels // height), height


def ordinary_jpeg() -> bytes:
    """A photo-sized JPEG (500 x 375), what most requests send."""
    return _save(Image.fromarray(_gradient(500, 375, 3, noise=4)), "JPEG", quality=90)


def worst_images(max_pixels: int, max_body_bytes: int) -> dict[str, bytes]:
    """Name -> an image of every accepted format and colour mode at the pixel limit (BMP in true colour at the
    most pixels the body limit lets through), and an ordinary photo-sized JPEG."""
    width, height = _size(max_pixels)
    rgb = Image.fromarray(_gradient(width, height, 3))
    noisy = Image.fromarray(_gradient(width, height, 3, noise=4))
    images = {
        "ordinary_500x375.jpg": ordinary_jpeg(),
        "jpeg_rgb": _save(noisy, "JPEG", quality=90),
        "jpeg_cmyk": _save(noisy.convert("CMYK"), "JPEG", quality=90),
        "jpeg_gray_progressive": _save(noisy.convert("L"), "JPEG", quality=90, progressive=True),
        "png_rgb": _save(rgb, "PNG", compress_level=1),
        "png_rgba": _save(rgb.convert("RGBA"), "PNG", compress_level=1),
        "png_16bit_gray": _save(Image.fromarray(_gradient(width, height, 1, np.uint16)), "PNG", compress_level=1),
        "png_palette_transparent": _save(rgb.convert("P"), "PNG", transparency=0, compress_level=1),
        "webp_rgba": _save(rgb.convert("RGBA"), "WEBP", quality=80, method=0),
        "gif_animated_50_frames": _save(
            rgb.convert("P"),
            "GIF",
            save_all=True,
            append_images=[Image.new("P", (width, height), i) for i in range(49)],
        ),
        "bmp_1bit": _save(rgb.convert("1"), "BMP"),
        # Ordinary pixels with the most EXIF accepted (just under 64 KiB: 5,400 entries) and an orientation to apply.
        "png_500x375_exif_64_kib": _save(
            Image.open(io.BytesIO(ordinary_jpeg())), "PNG", exif=exif_with_entries(5_400), compress_level=1
        ),
    }
    bmp_width, bmp_height = _size((max_body_bytes - 1024) // 3)
    images["bmp_rgb_body_limit"] = _save(Image.fromarray(_gradient(bmp_width, bmp_height, 3)), "BMP")
    too_large = {name: len(data) for name, data in images.items() if len(data) > max_body_bytes}
    assert not too_large, f"over the body limit of {max_body_bytes} bytes: {too_large}"
    return images


def sparse_canvas_gif(pixels: int, pixels_per_byte: int) -> bytes:
    """The fewest bytes that decode to ``pixels`` (a GIF canvas around an 8 x 8 frame): a comment pads it to just
    under ``pixels_per_byte`` (deployments.resnet.preprocess.MAX_PIXELS_PER_BYTE), so it is accepted, and it costs
    what any image of that many pixels costs to decode."""
    side = math.isqrt(pixels)
    gif = bytearray(_save(Image.new("P", (8, 8), 1), "GIF"))
    gif[6:10] = side.to_bytes(2, "little") * 2
    table = 3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0
    start = 13 + table  # after the header and the global colour table
    padding = side * side // pixels_per_byte + 1 - len(gif)
    blocks = b"".join(b"\xff" + b"x" * 255 for _ in range(max(0, padding) // 256 + 1))
    return bytes(gif[:start]) + b"\x21\xfe" + blocks + b"\x00" + bytes(gif[start:])

"""Bounds on an image's container structure, checked before Pillow reads its header.

Pillow parses PNG chunks, JPEG markers (and any bytes between them) and GIF extension sub-blocks one at a time in
Python. A valid 64x64 PNG padded with 1.5 million empty chunks (18 MB) took 3.3 s to open, a JPEG with 4.5 million
empty APP2 markers 6 s and ~590 MB, a GIF with 9 million one-byte comment sub-blocks 1.9 s, each read twice per
request (the request's pixel check, then the decode) and beyond the work budget's reach. Real images have a few
dozen of these (an 18 MB PNG written with libpng's 8 KiB IDAT chunks has ~2,300), so each walk below stops at a
limit well above that, after a few milliseconds, and the image is refused as too complex.

Two more bound what Pillow and libjpeg do in C, found by a hostile client: a PNG may hold one ICC profile (iCCP; the
PNG specification allows one), where 8,100 of them, each inflating to Pillow's 1 MB cap, took 10 s to open (Pillow
counts kept text against its text memory limit, not iCCP); and a JPEG's fill bytes (0xFF 0xFF, legal only before a
marker) count against MAX_JPEG_STRAY_BYTES after its first scan as before it: libjpeg's decode time grows with
the square of a fill run (9 MB: 0.95 s, 18 MB: 2.3 s). And a PNG's compressed text (zTXt, compressed iTXt
metadata) inflates to at most MAX_PNG_TEXT_BYTES in all, measured here by inflating it up to that: Pillow inflates
each such chunk up to 1 MB as it opens the image and counts only the text it keeps against its own limit (not a
chunk with an empty keyword, nor an iTXt that is not UTF-8): 60 zTXt chunks of 1 MB each (61 KB sent) took 168 ms
to open, 500 with empty keywords 1.1 s, twice a request (the pixel check, then the decode), while the pixel budgets
saw 4,096 pixels.
"""

import struct
import zlib

from deployments.errors import InvalidInput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"
GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
MAX_PNG_CHUNKS = 8192  # 20 MiB of libpng's 8 KiB IDAT chunks is 2,560
MAX_JPEG_MARKERS = 512  # before the first scan: APPn (EXIF, ICC profile parts, XMP), DQT, DHT, SOF, ...
MAX_JPEG_STRAY_BYTES = 4096  # fill bytes and junk between markers, which libjpeg skips with a warning
MAX_GIF_SUB_BLOCKS = 16384  # of the extensions before the first frame (XMP data reads as many small ones)
MAX_PNG_ICC_PROFILES = 1  # iCCP chunks (the PNG specification allows one)
# Real metadata is far smaller (EXIF is held to 64 KiB apart, XMP packets take kilobytes): ~3 ms to inflate it all.
MAX_PNG_TEXT_BYTES = 1 << 20
# JPEG markers that stand alone, without a length: TEM, RST0-7, SOI.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8}
_JPEG_SOS = 0xDA


def _too_complex(what: str, limit: int) -> InvalidInput:
    return InvalidInput(
        "image_too_complex", f"the image has more than {limit} {what}: re-encode it (any image editor or converter)"
    )


def check_structure(data: bytes) -> None:
    """InvalidInput ``image_too_complex`` when a PNG, JPEG or GIF has more chunks, markers, stray bytes or
    sub-blocks than any real image; anything else (other formats, truncated files) is left to Pillow."""
    if data.startswith(PNG_SIGNATURE):
        _check_png(data)
    elif data.startswith(JPEG_SIGNATURE):
        _check_jpeg(data)
    elif data.startswith(GIF_SIGNATURES):
        _check_gif(data)


def _check_png(data: bytes) -> None:
    position, chunks, profiles, text_bytes = len(PNG_SIGNATURE), 0, 0, 0
    while position + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _too_complex("PNG chunks", MAX_PNG_CHUNKS)
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        if kind == b"IEND":
            return
        profiles += kind == b"iCCP"
        if profiles > MAX_PNG_ICC_PROFILES:
            raise _too_complex("ICC profile (iCCP chunk)", MAX_PNG_ICC_PROFILES)
        if kind in (b"zTXt", b"iTXt"):
            text = _compressed_text(kind, data[position + 8 : position + 8 + length])
            text_bytes += _inflated_bytes(text, MAX_PNG_TEXT_BYTES + 1 - text_bytes) if text else 0
            if text_bytes > MAX_PNG_TEXT_BYTES:
                message = (
                    f"the PNG's text chunks (metadata) inflate to over {MAX_PNG_TEXT_BYTES} bytes: strip its metadata"
                )
                raise InvalidInput("image_too_complex", message)
        position += 12 + length  # length, type, data, CRC


def _compressed_text(kind: bytes, chunk: bytes) -> bytes | None:
    """The zlib stream of a zTXt chunk (keyword, 0, method, stream), or of an iTXt chunk whose compression flag is
    set (keyword, 0, flag, method, language, 0, translated keyword, 0, stream), as Pillow splits them."""
    _, found, rest = chunk.partition(b"\0")
    if not found or len(rest) < 2:
        return None
    if kind == b"zTXt":
        return rest[1:]
    if rest[0] == 0:  # iTXt, not compressed: its size is its size on the wire
        return None
    parts = rest[2:].split(b"\0", 2)
    return parts[2] if len(parts) == 3 else None


def _inflated_bytes(stream: bytes, most: int) -> int:
    """How many bytes ``stream`` inflates to, counted up to ``most`` (what it costs is bounded by that)."""
    try:
        return len(zlib.decompressobj().decompress(stream, most))
    except zlib.error:
        return 0  # not zlib: Pillow refuses it or skips it, without inflating anything


def _check_jpeg(data: bytes) -> None:
    position, markers, stray = len(JPEG_SIGNATURE), 0, 0
    while position + 1 < len(data):
        if data[position] != 0xFF:  # junk before the next marker
            following = data.find(b"\xff", position)
            following = len(data) if following < 0 else following
            stray += following - position
            position = following
        elif data[position + 1] == 0xFF:  # a fill byte
            stray += 1
            position += 1
        else:
            markers += 1
            marker = data[position + 1]
            if marker == _JPEG_SOS:
                # The scans are libjpeg's (in C; MAX_JPEG_SCANS bounds how many). In entropy-coded data 0xFF is
                # followed by 0x00 or a marker, so each 0xFF 0xFF from here is a fill byte (or two), or part of a
                # table between scans: counted in C, a run of them counts as its length.
                fill = 2 * data.count(b"\xff\xff", position)
                if stray + fill > MAX_JPEG_STRAY_BYTES:
                    raise _too_complex("stray bytes between JPEG markers", MAX_JPEG_STRAY_BYTES)
                return
            if marker in _JPEG_STANDALONE:
                position += 2
            elif position + 4 <= len(data):
                (length,) = struct.unpack_from(">H", data, position + 2)
                position += 2 + length
            else:
                return
        if markers > MAX_JPEG_MARKERS:
            raise _too_complex("JPEG markers before its first scan", MAX_JPEG_MARKERS)
        if stray > MAX_JPEG_STRAY_BYTES:
            raise _too_complex("stray bytes between JPEG markers", MAX_JPEG_STRAY_BYTES)


def _check_gif(data: bytes) -> None:
    if len(data) < 13:
        return
    flags = data[10]
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    sub_blocks = 0
    while position < len(data) and data[position] == 0x21:  # extensions, up to the first frame (0x2C)
        position += 2  # introducer, label
        while position < len(data) and (size := data[position]):
            sub_blocks += 1
            if sub_blocks > MAX_GIF_SUB_BLOCKS:
                raise _too_complex("sub-blocks in the GIF's extensions", MAX_GIF_SUB_BLOCKS)
            position += 1 + size
        position += 1  # the terminator

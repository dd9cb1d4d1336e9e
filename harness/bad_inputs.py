"""Byte builders for broken uploads: PNG chunks and whole PNG files with any header, and multipart bodies.

The fuzz tests (tests/test_fuzz_preprocess.py, tests/test_fuzz_rest_api.py) and the hardening
run's bad-input scenario (bench/hardening/bad_inputs.py) write their malformed files and
forms with these, so a PNG header or a form part is laid out the same way everywhere. Only
the layout is here; what to break, and how, stays with each caller.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, kind, payload and the CRC of kind and payload."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_file(width: int, height: int, *, bit_depth: int = 1, colour_type: int = 0, interlace: int = 0,
             pixel_data: bytes | None = None) -> bytes:
    """A PNG with a well-formed IHDR (valid CRCs), so its declared size is believed by the decoder;
    ``pixel_data`` (the IDAT payload, if any) need not match it."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    chunks = [png_chunk(b"IHDR", header)]
    if pixel_data is not None:
        chunks.append(png_chunk(b"IDAT", pixel_data))
    chunks.append(png_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def multipart_body(parts: list[tuple[str, str | None, str | None, bytes]], boundary: bytes | str, *,
                   terminated: bool = True) -> bytes:
    """A multipart/form-data body from (field name, file name or None, content type or None, content) parts;
    ``terminated=False`` leaves out the closing boundary."""
    boundary = boundary.encode() if isinstance(boundary, str) else boundary
    pieces = []
    for name, file_name, content_type, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{file_name}"' if file_name is not None else "")
        head = f"Content-Disposition: {disposition}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
        pieces.append(b"--" + boundary + b"\r\n" + head.encode() + b"\r\n" + content + b"\r\n")
    return b"".join(pieces) + (b"--" + boundary + b"--\r\n" if terminated else b"")

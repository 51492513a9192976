"""Content-Encoding of ingest bodies (envelopes.http_body_bytes): gzip and deflate are read
completely and checked, or refused with a BodyError saying what is wrong."""

from __future__ import annotations

import base64
import gzip
import struct
import zlib
from typing import Any

import pytest

from heap_forwarder.envelopes import BodyError, http_body_bytes

FHCRC, FEXTRA, FNAME = 0x02, 0x04, 0x08
DOCUMENT = b'{"batch": [{"type": "track", "event": "a"}, {"type": "track", "event": "b"}]}'
FIRST, SECOND = DOCUMENT[:30], DOCUMENT[30:]


def event(data: bytes, encoding: str = "gzip") -> dict[str, Any]:
    """An HTTP API event as API Gateway passes a compressed body: base64-encoded."""
    return {
        "body": base64.b64encode(data).decode("ascii"),
        "isBase64Encoded": True,
        "headers": {"content-encoding": encoding},
    }


def member(data: bytes, *, flags: int = 0, method: int = 8, header_crc_delta: int = 0) -> bytes:
    """One gzip member written field by field (RFC 1952), with the optional header fields that
    ``flags`` names, so that the header parsing is tested beyond what gzip.compress writes."""
    header = bytes([0x1F, 0x8B, method, flags]) + bytes(4) + bytes([0, 255])
    if flags & FEXTRA:
        header += struct.pack("<H", 4) + b"ab\x02\x00"
    if flags & FNAME:
        header += b"events.json\x00"
    if flags & FHCRC:
        header += struct.pack("<H", (zlib.crc32(header) + header_crc_delta) & 0xFFFF)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(data) + compressor.flush()
    return header + deflated + struct.pack("<II", zlib.crc32(data), len(data))


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


# --- read completely ---------------------------------------------------------------------------

ACCEPTED = [
    # (id, body as sent, encoding); a single member and deflate are tested through the API
    ("two members", gzip.compress(FIRST) + gzip.compress(SECOND), "gzip"),
    (
        "three members, one empty",
        gzip.compress(FIRST) + gzip.compress(b"") + gzip.compress(SECOND),
        "gzip",
    ),
    (
        "headers with extra field, file name and header CRC",
        member(FIRST, flags=FEXTRA | FNAME) + member(SECOND, flags=FHCRC | FNAME),
        "gzip",
    ),
]


@pytest.mark.parametrize(("data", "encoding"), [case[1:] for case in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_a_valid_body_is_read_completely(data: bytes, encoding: str) -> None:
    assert http_body_bytes(event(data, encoding), max_bytes=10_000) == DOCUMENT


def test_the_size_bound_holds_across_members() -> None:
    """Every member counts toward max_bytes; decoding stops just past it (the caller's 413)."""
    data = gzip.compress(b"x" * 300) + gzip.compress(b"y" * 300) + gzip.compress(b"z" * 300)
    assert http_body_bytes(event(data), max_bytes=500) == b"x" * 300 + b"y" * 201


def test_a_gzip_bomb_in_a_later_member_is_not_inflated_past_the_bound() -> None:
    data = gzip.compress(b"{}") + gzip.compress(b" " * 50_000_000)
    assert len(http_body_bytes(event(data), max_bytes=500_000)) == 500_001


def test_without_a_bound_every_member_is_read() -> None:
    data = gzip.compress(b"x" * 100_000) + gzip.compress(b"y")
    assert http_body_bytes(event(data)) == b"x" * 100_000 + b"y"


# --- or refused, saying why --------------------------------------------------------------------

WHOLE = gzip.compress(DOCUMENT)
REFUSED = [
    # (id, body as sent, encoding, the BodyError's message)
    ("empty", b"", "gzip", "gzip body is empty"),
    ("not gzip", b"not gzip", "gzip", "gzip body does not start with gzip's magic bytes (1f 8b)"),
    (
        "trailing garbage",
        WHOLE + b"junk",
        "gzip",
        "gzip body has 4 bytes of trailing data after its last member",
    ),
    (
        "trailing zeros",
        WHOLE + b"\x00",
        "gzip",
        "gzip body has 1 byte of trailing data after its last member",
    ),
    (
        "trailing garbage after the second member",
        gzip.compress(FIRST) + gzip.compress(SECOND) + b"\x1f",
        "gzip",
        "gzip body has 1 byte of trailing data after its last member",
    ),
    ("trailer missing", WHOLE[:-8], "gzip", "gzip body is cut off before its trailer"),
    (
        "trailer cut off",
        WHOLE[:-3],
        "gzip",
        "gzip body is cut off in its trailer: 5 of its 8 bytes are there",
    ),
    (
        "second member's trailer cut off",
        gzip.compress(FIRST) + gzip.compress(SECOND)[:-1],
        "gzip",
        "gzip body is cut off in its trailer (member 2): 7 of its 8 bytes are there",
    ),
    (
        "compressed data cut off",
        WHOLE[: len(WHOLE) // 2],
        "gzip",
        "gzip body is cut off before the end of its compressed data",
    ),
    ("header cut off", WHOLE[:6], "gzip", "gzip body is cut off in its header"),
    ("file name cut off", member(DOCUMENT, flags=FNAME)[:15], "gzip", "gzip body is cut off in its header"),
    ("corrupt CRC", flip(WHOLE, -8), "gzip", "gzip body fails its CRC-32 check: the data is corrupt"),
    (
        "wrong length",
        flip(WHOLE, -4),
        "gzip",
        f"gzip body fails its length check: the trailer says {len(DOCUMENT) ^ 1} bytes, "
        f"the data has {len(DOCUMENT)}",
    ),
    (
        "corrupt header CRC",
        member(DOCUMENT, flags=FHCRC, header_crc_delta=1),
        "gzip",
        "gzip body's header fails its CRC-16 check",
    ),
    (
        "unknown method",
        member(DOCUMENT, method=7),
        "gzip",
        "gzip body uses compression method 7; gzip knows only deflate (8)",
    ),
    ("reserved flags", member(DOCUMENT, flags=0x20), "gzip", "gzip body's header sets reserved flags"),
    (
        "deflate trailing garbage",
        zlib.compress(DOCUMENT) + b"junk",
        "deflate",
        "deflate body has 4 bytes of trailing data after its end",
    ),
    ("deflate cut off", zlib.compress(DOCUMENT)[:-2], "deflate", "deflate body is cut off before its end"),
    ("deflate empty", b"", "deflate", "deflate body is empty"),
]


@pytest.mark.parametrize(
    ("data", "encoding", "message"), [case[1:] for case in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_a_broken_body_is_refused_saying_why(data: bytes, encoding: str, message: str) -> None:
    with pytest.raises(BodyError) as caught:
        http_body_bytes(event(data, encoding), max_bytes=10_000)
    assert str(caught.value) == message


def test_corrupt_deflate_data_is_refused_with_zlibs_reason() -> None:
    with pytest.raises(BodyError, match=r"^gzip body is not valid gzip \(member 2\): Error -3 "):
        http_body_bytes(event(gzip.compress(FIRST) + WHOLE[:10] + b"\xff" * 20), max_bytes=10_000)

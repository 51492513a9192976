"""Unwrapping what carries events: SQS records, API Gateway HTTP API (v2) requests, plain bodies.

Shared by the Lambda entry points and the CLI so that both read events the same way.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Mapping
from typing import Any

# The Segment/MetaRouter tracking API implies the event type by the route.
ROUTE_TYPES = {
    "/v1/track": "track",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/identify": "identify",
    "/v1/group": "group",
    "/v1/alias": "alias",
    "/v1/batch": None,
}


class BodyError(ValueError):
    """A body that cannot be read as events (bad base64, bad gzip, not JSON)."""


# RFC 1952: a gzip member is a header, deflate data and an 8-byte trailer (CRC-32, size mod 2^32).
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_DEFLATE = 8
_GZIP_HEADER_BYTES = 10
_GZIP_TRAILER_BYTES = 8
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 0x02, 0x04, 0x08, 0x10
_FRESERVED = 0xE0
# Compressed input is fed to zlib in pieces this large: zlib copies whatever follows the end of
# a member into unused_data, so feeding the whole rest of the body would make a body of many
# tiny members cost time quadratic in its size.
_FEED_BYTES = 16 * 1024


def is_sqs_event(document: Any) -> bool:
    records = document.get("Records") if isinstance(document, dict) else None
    return isinstance(records, list) and all(
        isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records
    )


def is_http_api_event(document: Any) -> bool:
    return isinstance(document, dict) and document.get("version") == "2.0" and "rawPath" in document


def header(event: Mapping[str, Any], name: str) -> str | None:
    headers = event.get("headers") or {}
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def http_body_bytes(event: Mapping[str, Any], max_bytes: int | None = None) -> bytes:
    """The request body as the producer sent it: base64 undone, gzip/deflate decompressed
    completely and checked (see :func:`gunzip`), else BodyError.

    ``max_bytes`` bounds the decompressed size, so a small gzip bomb cannot exhaust memory: past
    it, ``max_bytes + 1`` bytes are returned for the caller to refuse.
    """
    body = event.get("body") or ""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BodyError("body is marked base64 but is not valid base64") from None
    encoding = (header(event, "content-encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gunzip(raw, max_bytes)
    if encoding == "deflate":
        return inflate(raw, max_bytes)
    if encoding not in ("", "identity"):
        raise BodyError(f"unsupported Content-Encoding {encoding!r}; send identity or gzip")
    return raw


def gunzip(raw: bytes, max_bytes: int | None = None) -> bytes:
    """A gzip body read completely: every member (RFC 1952 allows several; they are read as
    their concatenation), each checked against its trailer, and nothing after the last.

    Anything else is a BodyError saying what is wrong. With ``max_bytes``, decompression stops
    once the output passes it (across members), returning ``max_bytes + 1`` bytes for the
    caller to refuse as too large, so a small gzip bomb never inflates in memory.
    """
    if not raw:
        raise BodyError("gzip body is empty")
    view = memoryview(raw)
    parts: list[bytes] = []
    total = 0
    position = 0
    member = 0
    while position < len(raw):
        member += 1
        if raw[position : position + 2] != _GZIP_MAGIC:
            if member == 1:
                raise BodyError("gzip body does not start with gzip's magic bytes (1f 8b)")
            raise BodyError(
                f"gzip body has {_bytes(len(raw) - position)} of trailing data after its last member"
            )
        suffix = "" if member == 1 else f" (member {member})"
        start = _gzip_data_start(raw, position, suffix)
        limit = None if max_bytes is None else max_bytes + 1 - total
        data, end = _inflate_member(view, start, limit, suffix)
        parts.append(data)
        total += len(data)
        if end is None:
            break  # over max_bytes: the caller refuses it as too large, whatever follows
        trailer = raw[end : end + _GZIP_TRAILER_BYTES]
        if not trailer:
            raise BodyError(f"gzip body is cut off before its trailer{suffix}")
        if len(trailer) < _GZIP_TRAILER_BYTES:
            raise BodyError(
                f"gzip body is cut off in its trailer{suffix}: "
                f"{len(trailer)} of its {_GZIP_TRAILER_BYTES} bytes are there"
            )
        crc, size = struct.unpack("<II", trailer)
        if crc != zlib.crc32(data):
            raise BodyError(f"gzip body fails its CRC-32 check{suffix}: the data is corrupt")
        if size != len(data) & 0xFFFFFFFF:
            raise BodyError(
                f"gzip body fails its length check{suffix}: "
                f"the trailer says {size} bytes, the data has {len(data)}"
            )
        position = end + _GZIP_TRAILER_BYTES
    return b"".join(parts)


def _gzip_data_start(raw: bytes, position: int, suffix: str) -> int:
    """Where the deflate data of the member at ``position`` begins, past its header."""
    cut_off = BodyError(f"gzip body is cut off in its header{suffix}")
    if len(raw) - position < _GZIP_HEADER_BYTES:
        raise cut_off
    method, flags = raw[position + 2], raw[position + 3]
    if method != _GZIP_DEFLATE:
        raise BodyError(f"gzip body uses compression method {method}{suffix}; gzip knows only deflate (8)")
    if flags & _FRESERVED:
        raise BodyError(f"gzip body's header sets reserved flags{suffix}")
    cursor = position + _GZIP_HEADER_BYTES
    if flags & _FEXTRA:
        if cursor + 2 > len(raw):
            raise cut_off
        (extra,) = struct.unpack_from("<H", raw, cursor)
        cursor += 2 + extra
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:  # a zero-terminated string
            terminator = raw.find(b"\0", cursor)
            if terminator < 0:
                raise cut_off
            cursor = terminator + 1
    if flags & _FHCRC:
        if cursor + 2 > len(raw):
            raise cut_off
        (header_crc,) = struct.unpack_from("<H", raw, cursor)
        if header_crc != zlib.crc32(raw[position:cursor]) & 0xFFFF:
            raise BodyError(f"gzip body's header fails its CRC-16 check{suffix}")
        cursor += 2
    if cursor > len(raw):
        raise cut_off
    return cursor


def _inflate_member(view: memoryview, start: int, limit: int | None, suffix: str) -> tuple[bytes, int | None]:
    """The member's data inflated from ``start`` and where its deflate data ends, or (at most
    ``limit`` bytes, None) once the output reaches ``limit``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate: the framing is read here
    parts: list[bytes] = []
    produced = 0
    position = start
    while not inflater.eof:
        if position >= len(view):
            raise BodyError(f"gzip body is cut off before the end of its compressed data{suffix}")
        piece = view[position : position + _FEED_BYTES]
        position += len(piece)
        try:
            # limit - produced >= 1 here (0 would mean no limit to zlib).
            data = inflater.decompress(piece, 0 if limit is None else limit - produced)
        except zlib.error as error:
            raise BodyError(f"gzip body is not valid gzip{suffix}: {error}") from None
        parts.append(data)
        produced += len(data)
        if limit is not None and produced >= limit:
            return b"".join(parts), None
    return b"".join(parts), position - len(inflater.unused_data)


def inflate(raw: bytes, max_bytes: int | None = None) -> bytes:
    """A ``deflate`` body (the zlib format, RFC 1950) read completely: its Adler-32 checked and
    nothing after its end; bounded by ``max_bytes`` like :func:`gunzip`."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, 0 if max_bytes is None else max_bytes + 1)
    except zlib.error as error:
        raise BodyError(f"deflate body is not valid deflate: {error}") from None
    if max_bytes is not None and len(data) > max_bytes:
        return data
    if not inflater.eof:
        raise BodyError("deflate body is empty" if not raw else "deflate body is cut off before its end")
    if inflater.unused_data:
        raise BodyError(
            f"deflate body has {_bytes(len(inflater.unused_data))} of trailing data after its end"
        )
    return data


def sqs_bodies(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(messageId, body) of each SQS record."""
    return [(str(r.get("messageId", "")), str(r.get("body", ""))) for r in document["Records"]]


def _bytes(count: int) -> str:
    return "1 byte" if count == 1 else f"{count} bytes"

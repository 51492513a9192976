"""Where a backfill reads from: local files and folders, and ``s3://bucket/prefix``, streamed.

A SOURCE names files; each is read once, front to back, as a stream: a local file from disk, an
S3 object through botocore's ``StreamingBody``. Gzip is recognised by its magic bytes (not by the
name: Segment's archive and MetaRouter's storage destinations both write ``.gz``, but a file
renamed by hand should still read), and multi-member gzip (concatenated archives) reads whole.
Nothing is held whole: lines come out one at a time, each bounded (``MAX_LINE_BYTES``).

Files are taken in a stable order, the one a resumed run must see again: the SOURCEs in the
order given, and within one, by key or relative path (Segment's day folders are epoch
milliseconds of a fixed width, so this is also time order). Hidden files (``.DS_Store``) and
S3 "folder" markers are skipped.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

S3_SCHEME = "s3://"
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 1 << 20  # bytes asked of the underlying stream at a time
# A line longer than this is refused without being held: no event the stack takes is near it
# (an SQS message is at most 256 KB).
MAX_LINE_BYTES = 1 << 20


class SourceError(RuntimeError):
    """A SOURCE cannot be listed or a file cannot be opened."""


class Opener(Protocol):
    """Opens the files of one SOURCE by label (shared by them: a listing holds no closure per file)."""

    def __call__(self, label: str) -> BinaryIO: ...


@dataclass(frozen=True, slots=True)
class DataFile:
    """One file of a SOURCE. ``label`` names it everywhere (progress, the invalid-lines report,
    the checkpoint, the stable messageIds of events without one): ``s3://bucket/key``, or the
    local file's absolute path. The run holds the whole listing: about 200 bytes a file."""

    label: str
    size: int  # bytes as stored (compressed)
    opener: Opener

    def open(self) -> BinaryIO:
        try:
            return self.opener(self.label)
        except OSError as error:
            raise SourceError(f"cannot open {self.label}: {error}") from None


def is_s3(source: str) -> bool:
    return source.startswith(S3_SCHEME)


def split_s3(source: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    bucket, _, prefix = source[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise SourceError(f"{source}: no bucket; write s3://BUCKET/PREFIX")
    return bucket, prefix


def list_files(sources: list[str], s3_client: Callable[[], Any]) -> Iterator[DataFile]:
    """Every file of every SOURCE, in the order a run reads them. ``s3_client`` is called once,
    when the first S3 SOURCE is met."""
    client: Any = None
    for source in sources:
        if is_s3(source):
            if client is None:
                client = s3_client()
            yield from _s3_files(client, source)
        else:
            yield from _local_files(source)


def _open_local(label: str) -> BinaryIO:
    return open(label, "rb")  # closed by the run, once the file is read


def _local_files(source: str) -> Iterator[DataFile]:
    path = Path(source).expanduser()
    if path.is_file():
        yield _local(path.resolve())
        return
    if not path.is_dir():
        raise SourceError(f"{source}: no such file or folder")
    found = sorted(
        (p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    for file in found:
        yield _local(file.resolve())


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _local(path: Path) -> DataFile:
    return DataFile(str(path), path.stat().st_size, _open_local)


def _s3_files(client: Any, source: str) -> Iterator[DataFile]:
    from botocore.exceptions import BotoCoreError, ClientError

    from heap_forwarder_tools.stacks import describe_error

    bucket, prefix = split_s3(source)
    opener = _S3Opener(client)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents") or []:
                key = str(item["Key"])
                if key.endswith("/") or _hidden(Path(key)):
                    continue
                yield DataFile(f"{S3_SCHEME}{bucket}/{key}", int(item.get("Size", 0)), opener)
    except (BotoCoreError, ClientError) as error:
        raise SourceError(f"cannot list {source}: {describe_error(error)}") from None


class _S3Opener:
    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, label: str) -> BinaryIO:
        bucket, key = split_s3(label)
        return io.BufferedReader(_S3Object(self.client, bucket, key), READ_CHUNK)


# A paced backfill reads an object for minutes, in bursts: S3 may drop a connection left unread
# that long. The object is then asked for again from the byte reached (the same version: its
# ETag), which the gunzipping above never notices.
RECONNECTS = 5


class _S3Object(io.RawIOBase):
    """An S3 object as a raw stream (botocore's ``StreamingBody`` has ``read(n)`` only) that
    picks up where it was when its connection drops."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._position = 0
        self._etag: str | None = None
        self._body: Any = None
        self._open()

    def _open(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from heap_forwarder_tools.stacks import describe_error

        request: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key}
        if self._position:
            request["Range"] = f"bytes={self._position}-"
        if self._etag:
            request["IfMatch"] = self._etag
        try:
            response = self._client.get_object(**request)
        except (BotoCoreError, ClientError) as error:
            where = f"s3://{self._bucket}/{self._key}"
            raise SourceError(f"cannot read {where}: {describe_error(error)}") from None
        self._etag = self._etag or response.get("ETag")
        self._body = response["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError

        for attempt in range(RECONNECTS + 1):
            try:
                data = self._body.read(len(buffer))
                break
            except (BotoCoreError, OSError, ValueError):  # ValueError: urllib3's "I/O on closed file"
                if attempt == RECONNECTS:
                    raise
                self._body.close()
                self._open()
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        try:
            if self._body is not None:
                self._body.close()
        finally:
            super().close()


class CountingReader(io.RawIOBase):
    """A raw stream that counts the bytes read from it (as stored: before gunzip), for progress."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


def decoded(raw: CountingReader) -> BinaryIO:
    """The file's content: gunzipped when it starts with gzip's magic bytes."""
    buffered = io.BufferedReader(raw, READ_CHUNK)
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), READ_CHUNK)
    return buffered


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based
    data: bytes  # without its line break; empty when ``too_long``
    too_long: bool = False


def lines(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """The stream's lines, numbered; a line longer than ``max_bytes`` is skipped to its end
    (never held) and reported ``too_long``."""
    number = 0
    readline = stream.readline
    while True:
        data = readline(max_bytes + 1)
        if not data:
            return
        number += 1
        if len(data) > max_bytes and not data.endswith(b"\n"):
            while data and not data.endswith(b"\n"):
                data = readline(max_bytes + 1)
            yield Line(number, b"", too_long=True)
            continue
        yield Line(number, data.rstrip(b"\r\n"))

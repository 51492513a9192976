"""The backfill figure: ``heap-forwarder backfill`` reading a generated Segment-style archive
(gzipped JSON lines in day folders) from S3 into the main queue, both moto's server in its own
process, the CLI in its own process as a user runs it.

What it measures: events enqueued per second (the CLI's own ceiling: pacing is scaled out of
the way with ``--time-scale``, the backlog bound lifted), SQS requests per 1,000 events, and the
CLI's peak RSS (``wait4``'s ``ru_maxrss``), at two archive sizes: the archive is streamed, so the
peak must not grow with it (target: at most 150 MB). Two threads receive and delete what reaches
the queue, as consumers would, so that moto's memory holds no copy of the archive either.

    .venv/bin/python bench/backfill.py --mb 20      # alone; bench/run.py runs it in full mode only
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import _common as c

BUCKET = "bench-archive"
PREFIX = "segment-logs/src_bench/"
FILE_MB = 10  # stored (gzipped) size of each archive file
PEAK_RSS_TARGET_MB = 150.0
FULL_MB = 200.0
SMALL_MB = 20.0


def _templates() -> list[str]:
    """Each event of the mix as compact JSON with slots for its ids and time, in mix order."""
    samples = {name: json.loads((c.RAW / f"{name}.json").read_text("utf-8")) for name in c.MIX}
    templates = {}
    for name, sample in samples.items():
        slots = {**sample, "messageId": "@MID@", "anonymousId": "@AID@", "timestamp": "@TS@"}
        if "userId" in slots:
            slots["userId"] = "@UID@"
        for blob in ("properties", "traits"):
            if isinstance(slots.get(blob), dict):
                slots[blob] = {**slots[blob], "ref": "@REF@"}  # values vary, as real ones do
        templates[name] = c.compact(slots)
    return [templates[name] for name in c.mix_order(c.MIX)]


def _lines(seed: int) -> Iterator[bytes]:
    """Endless events, each with its own ids (random: they compress as real ones do) and time."""
    rng = random.Random(seed)
    order = _templates()
    n = 0
    start = 1_672_531_200  # 2023-01-01
    while True:
        template = order[n % len(order)]
        user = rng.getrandbits(40)
        moment = time.gmtime(start + n // 20)
        line = (
            template.replace("@MID@", f"{rng.getrandbits(128):032x}")
            .replace("@AID@", f"{user:010x}-anon")
            .replace("@UID@", f"usr_{user:010x}")
            .replace("@TS@", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", moment))
            .replace("@REF@", f"{rng.getrandbits(96):024x}")
        )
        yield line.encode() + b"\n"
        n += 1


def write_archive(folder: Path, target_mb: float) -> tuple[list[Path], int]:
    """Files of ~FILE_MB gzipped each, ~target_mb in all; (the files, events written)."""
    files: list[Path] = []
    events = 0
    lines = _lines(seed=17)
    stored = 0
    day = 0
    while stored < target_mb * 1024 * 1024:
        path = folder / f"{1672531200000 + day * 86_400_000}" / f"{day:04d}.bench.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        limit = min(FILE_MB, target_mb - stored / 1024 / 1024) * 1024 * 1024
        with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as out:
            while raw.tell() < limit:
                out.write(b"".join(next(lines) for _ in range(2000)))
                events += 2000
        stored += path.stat().st_size
        files.append(path)
        day += 1
    return files, events


def _drain(sqs: Any, url: str, stop: threading.Event) -> None:
    """Receive and delete, as a consumer would, so that moto holds no copy of the archive (it
    allows one PurgeQueue a minute, as SQS does)."""
    while not stop.is_set():
        try:
            found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if found:
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(found)]
                sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        except Exception:  # a failed receive or delete leaves a message in memory: nothing measured
            time.sleep(0.1)


def run_once(moto_url: str, target_mb: float, work: Path) -> dict[str, Any]:
    import boto3

    folder = work / f"archive-{target_mb:g}"
    started = time.perf_counter()
    files, events = write_archive(folder, target_mb)
    generated_s = time.perf_counter() - started
    stored = sum(p.stat().st_size for p in files)
    env = {**os.environ, **c.DUMMY_AWS, "AWS_ENDPOINT_URL": moto_url}
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", region_name=c.REGION, endpoint_url=moto_url, **credentials)
    sqs = boto3.client("sqs", region_name=c.REGION, endpoint_url=moto_url, **credentials)
    s3.create_bucket(Bucket=BUCKET)
    for path in files:
        s3.upload_file(str(path), BUCKET, PREFIX + path.relative_to(folder).as_posix())
        path.unlink()
    url = sqs.create_queue(QueueName=f"bench-backfill-{target_mb:g}")["QueueUrl"]
    stop = threading.Event()
    drainers = [threading.Thread(target=_drain, args=(sqs, url, stop), daemon=True) for _ in range(2)]
    for drainer in drainers:
        drainer.start()
    out_path, err_path = work / "out.txt", work / "err.txt"
    argv = [
        c.PYTHON,
        "-m",
        "heap_forwarder_tools.cli",
        "backfill",
        f"s3://{BUCKET}/{PREFIX}",
        "--queue-url",
        url,
        "--time-scale",
        "1e9",  # the CLI's ceiling: no pacing
        "--max-backlog",
        "1000000000",
        "--checkpoint",
        str(work / f"checkpoint-{target_mb:g}.json"),
        "--report",
        str(work / "invalid.tsv"),
    ]
    try:
        with out_path.open("w") as out, err_path.open("w") as err:
            began = time.perf_counter()
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=c.ROOT)
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - began
            process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        stop.set()
        for drainer in drainers:
            drainer.join(5)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents") or []:
                s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    output = out_path.read_text("utf-8")
    if process.returncode != 0:
        raise RuntimeError(f"backfill exit {process.returncode}: {err_path.read_text('utf-8')[-2000:]}")
    enqueued = int(re.search(r"([\d,]+) event\(s\) enqueued", output).group(1).replace(",", ""))  # type: ignore[union-attr]
    messages = int(re.search(r"in ([\d,]+) message\(s\)", output).group(1).replace(",", ""))  # type: ignore[union-attr]
    requests = int(re.search(r"([\d,]+) SQS request\(s\)", output).group(1).replace(",", ""))  # type: ignore[union-attr]
    return {
        "target_mb": target_mb,
        "stored_mb": stored / 1024 / 1024,
        "files": len(files),
        "events": events,
        "enqueued": enqueued,
        "messages": messages,
        "sqs_requests": requests,
        "seconds": seconds,
        "events_per_s": enqueued / seconds,
        "requests_per_1000": 1000 * requests / enqueued,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "generated_s": generated_s,
        "delivered_all": enqueued == events,
    }


def packing_at_the_stacks_pace(events: int = 20_000, rate_per_instance: float = 6000.0) -> dict[str, float]:
    """The runs above pace nothing (``--time-scale``), so an invocation's pace does not bound
    their messages. At the template's pace it does: the same events packed as a deployed stack
    gets them (the backfill's own Packer), and the SendMessageBatch requests they take (10
    messages and 256 KB a request)."""
    from heap_forwarder_tools.backfill.packing import (
        SQS_MAX_BATCH_ENTRIES,
        SQS_MAX_MESSAGE_BYTES,
        InvocationFit,
        Packer,
    )

    packer = Packer(fit=InvocationFit.of(rate_per_instance))
    lines = _lines(seed=17)
    bodies = [b for _ in range(events) if (b := packer.add(text := next(lines)[:-1].decode(), len(text)))]
    last = packer.flush()
    bodies += [last] if last else []
    requests, entries, size = 0, 0, 0
    for body in bodies:
        if entries and (entries == SQS_MAX_BATCH_ENTRIES or size + body.size > SQS_MAX_MESSAGE_BYTES):
            requests, entries, size = requests + 1, 0, 0
        entries, size = entries + 1, size + body.size
    requests += 1 if entries else 0
    return {
        "events_per_message": events / len(bodies),
        "requests_per_1000": 1000 * requests / events,
        "invocation_events": packer.fit.max_events if packer.fit else 0,
    }


def run(sizes: Sequence[float] = (SMALL_MB, FULL_MB)) -> dict[str, Any]:
    moto = c.start_moto()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-backfill-") as folder:
            runs = [run_once(moto.url, size, Path(folder)) for size in sizes]
    finally:
        moto.stop()
    return {
        "runs": runs,
        "at_the_stacks_pace": packing_at_the_stacks_pace(),
        "delivered_all": all(r["delivered_all"] for r in runs),
        "peak_rss_target_mb": PEAK_RSS_TARGET_MB,
    }


def describe(result: dict[str, Any]) -> list[str]:
    paced = result["at_the_stacks_pace"]
    return [
        f"backfill of {r['stored_mb']:.0f} MB gzipped ({r['files']} files, {r['events']:,} events): "
        f"{r['events_per_s']:,.0f} events/s enqueued ({r['seconds']:.1f} s), "
        f"{r['requests_per_1000']:.2f} SQS requests per 1,000 events ({r['messages']:,} messages), "
        f"peak RSS {r['peak_rss_mb']:.1f} MB"
        for r in result["runs"]
    ] + [
        f"the same events packed at the template's pace (6,000 a minute an instance: at most "
        f"{paced['invocation_events']:,} events an invocation): {paced['events_per_message']:.1f} "
        f"events a message, {paced['requests_per_1000']:.2f} SendMessageBatch requests per 1,000 events"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, action="append", help="archive size(s), MB gzipped")
    args = parser.parse_args(argv)
    result = run(args.mb or (SMALL_MB, FULL_MB))
    print("\n".join(describe(result)))
    ok = result["delivered_all"] and all(r["peak_rss_mb"] <= PEAK_RSS_TARGET_MB for r in result["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

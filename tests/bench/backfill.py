#!/usr/bin/env python3
"""Benchmark: memory and speed of `sohoa ingest --from-file` as the export grows.

    tests/bench/backfill.py [--dossiers 50000] [--scales 1,4] [--work DIR] [--bin PATH]

For each scale it generates a province feed of `--dossiers` x scale dossiers with
`sohoa generate` (about 4.3 national sync records of ~1 KB per dossier, 1% cut short, 2%
repeated, syncs late and out of order), then, in the same run:

- reads the file with `cat` into /dev/null: the disk and page-cache ceiling;
- backfills it into an empty local root with the default configuration (256 MB buffer
  cap, fsync on), sampling the process's resident memory every 20 ms.

It prints, per scale: the feed's size and lines, the backfill's wall time, lines per
second, its ratio to `cat`'s time, peak RSS, and the files written. Memory that does not
grow with the file is the point: the peak at scale 4 should be close to the peak at 1.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def peak_rss_of(proc):
    """Sample /proc/<pid>/status until the process ends; the largest VmRSS, in bytes."""
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            break
        time.sleep(0.02)
    return peak


def timed(cmd, **kw):
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, **kw)
    peak = [0]
    sampler = threading.Thread(target=lambda: peak.__setitem__(0, peak_rss_of(proc)))
    sampler.start()
    proc.wait()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed with {proc.returncode}")
    return time.perf_counter() - started, peak[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dossiers", type=int, default=50_000)
    ap.add_argument("--scales", default="1,4")
    ap.add_argument("--work", type=pathlib.Path)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "sohoa"))
    args = ap.parse_args()
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="sohoa-bench-backfill-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOHOA")}
    env.update(SOHOA__PRIVACY__DEVELOPMENT_MODE="true", SOHOA__HTTP__LISTEN="",
               SOHOA__LOG__LEVEL="error")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"host: {cpu}, {os.cpu_count()} CPUs; binary {args.bin}")
    print(f"{'dossiers':>9} {'feed MB':>8} {'lines':>9} {'cat s':>6} {'backfill s':>10} "
          f"{'lines/s':>9} {'x cat':>6} {'peak RSS MB':>11} {'files':>6}")
    for scale in [int(s) for s in args.scales.split(",")]:
        n = args.dossiers * scale
        feed = work / f"feed-{n}.jsonl"
        if not feed.exists():
            subprocess.run([args.bin, "generate", "--dossiers", str(n), "--seed", "766",
                            "--out", str(feed)], check=True, env=env, capture_output=True)
        size = feed.stat().st_size
        lines = sum(1 for line in open(feed, "rb") if line.strip())
        with open(os.devnull, "wb") as null:
            cat_s, _ = timed(["cat", str(feed)], stdout=null)
        out = work / f"root-{n}"
        shutil.rmtree(out, ignore_errors=True)
        secs, peak = timed([args.bin, "ingest", "--from-file", str(feed), "--out", str(out)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files = sum(1 for _ in (out / "events").rglob("*.parquet"))
        print(f"{n:>9} {size / 1e6:>8.0f} {lines:>9} {cat_s:>6.2f} {secs:>10.1f} "
              f"{lines / secs:>9.0f} {cat_s / secs:>6.3f} {peak / 1e6:>11.0f} {files:>6}")
        shutil.rmtree(out, ignore_errors=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Hostile pool scan: every attack of issue 16 next to good adapters, peak RSS and time of `pool scan`.

    .venv/bin/python bench/hostile_scan.py [--max-rss-mb 500] [--max-seconds 60]

Builds the hostile corpus of ``tests/pool/hostile_corpus.py`` (a folder tree and a Hugging Face cache,
all generated locally from a tiny Llama), then runs the installed ``lora-recycle pool scan`` on both
sources in a fresh subprocess, side by side with a scan of the good adapters alone. It prints wall time
and peak RSS of each (from ``wait4``) and their ratios, and exits 1 unless the hostile scan exits 0,
catalogues every adapter with exactly its expected reasons, and stays under both bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "lora-recycle"


def build(tmp: Path) -> tuple[Path, Path, Path, Path, dict[str, list[str]]]:
    """``(base, tree, cache, good_only, expected)`` in ``tmp``."""
    sys.path.insert(0, str(ROOT / "tests" / "pool"))
    from hostile_corpus import GOOD_IDS, HOSTILE_EXPECTED, build_hostile_cache, build_hostile_tree
    from pool_corpus import BASE_NAME, AdapterFactory, build_tiny_base

    base = build_tiny_base(tmp / "models" / BASE_NAME)
    factory = AdapterFactory(base)
    tree = build_hostile_tree(factory, tmp / "tree")
    cache = build_hostile_cache(factory, tmp / "cache" / "hub", tmp / "outside")
    good = tmp / "good-only"
    for adapter_id in GOOD_IDS:
        if (tree / adapter_id).is_dir():
            shutil.copytree(tree / adapter_id, good / adapter_id, symlinks=False)
    return base, tree, cache, good, HOSTILE_EXPECTED


def timed_scan(sources: list[Path], base: Path, db: Path) -> dict:
    """Run ``pool scan`` in a subprocess; wall seconds, peak RSS (MB) and exit code from ``wait4``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    command = [str(CLI), "pool", "scan", *map(str, sources), "--base-model", str(base), "--db", str(db), "--json"]
    start = time.perf_counter()
    with open(db.with_suffix(".out"), "w") as out, open(db.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "code": proc.returncode,
            "summary": json.loads(db.with_suffix(".out").read_text() or "null")}


def catalogued(db: Path) -> dict[str, list[str]]:
    rows = subprocess.run([str(CLI), "pool", "list", "--db", str(db), "--json"], capture_output=True, text=True,
                          check=True).stdout
    return {row["id"]: row["reasons"] for row in json.loads(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-rss-mb", type=float, default=500.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        base, tree, cache, good, expected = build(tmp_path)
        baseline = timed_scan([good], base, tmp_path / "good.db")
        hostile = timed_scan([tree, cache], base, tmp_path / "hostile.db")
        found = catalogued(tmp_path / "hostile.db") if hostile["code"] == 0 else {}
    n_good = sum(1 for v in expected.values() if not v)
    print(f"{'pool':<34} {'adapters':>8} {'exit':>5} {'seconds':>8} {'peak RSS MB':>12}")
    print(f"{'good adapters only (baseline)':<34} {n_good - 1:>8} {baseline['code']:>5} "
          f"{baseline['seconds']:>8.2f} {baseline['rss_mb']:>12.1f}")
    print(f"{'hostile + good (tree + HF cache)':<34} {len(expected):>8} {hostile['code']:>5} "
          f"{hostile['seconds']:>8.2f} {hostile['rss_mb']:>12.1f}")
    print(f"ratios hostile/baseline: time {hostile['seconds'] / baseline['seconds']:.2f}, "
          f"peak RSS {hostile['rss_mb'] / baseline['rss_mb']:.2f}")
    if hostile["summary"]:
        print(f"summary: {hostile['summary']['accepted']} accepted, {hostile['summary']['rejected']} rejected, "
              f"reasons {hostile['summary']['reasons']}")
    failures = []
    if hostile["code"] != 0:
        failures.append(f"scan exited {hostile['code']}")
    if found != expected:
        wrong = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        failures.append(f"catalog differs from the expected reasons for {wrong}")
    if hostile["rss_mb"] > args.max_rss_mb:
        failures.append(f"peak RSS {hostile['rss_mb']:.0f} MB above {args.max_rss_mb:.0f} MB")
    if hostile["seconds"] > args.max_seconds:
        failures.append(f"{hostile['seconds']:.1f} s above {args.max_seconds:.0f} s")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        bounds = f"{args.max_rss_mb:.0f} MB and {args.max_seconds:.0f} s"
        print(f"OK: every adapter catalogued with its reason, under {bounds}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Pool-scale costs at N = 100, 300 and 1,000 adapters: scan, cosine and evaluation selection, merge, catalog size.

    .venv/bin/python bench/pool_scale.py [--sizes 100 300 1000] [--eval-sizes 100 300 1000] [--rows 100]

No mini-hub is built here (the `full` hub trains for 30+ minutes): the pools are derived with
``hub scale`` (``minihub/scaled_pool.py``) from four random PEFT adapters on the tiny random Llama (SmolLM2's
tokenizer and vocabulary, hidden 64, 2 layers), so evaluation costs are the tiny model's; the output says so.
Per size: scan time and the scan's peak RSS (a fresh subprocess), cosine selection to a target LoRA,
evaluation selection on ``--rows`` rows with 1 and 2 local Ray workers (``selection/sharded.py``), a TIES
merge of the top k = 30, and the catalog's size. Prints each cost's growth exponent between the smallest
and largest size and Ray's speed-up. On a machine shared with other jobs the timings are noisy.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pool_eval import make_adapters, make_task

SCAN = """
import json, resource, sys, time
from lora_recycle.pool import Catalog, ValidationPolicy, load_base_spec, scan_pool
start = time.perf_counter()
with Catalog(sys.argv[3]) as catalog:
    summary = scan_pool([sys.argv[1]], load_base_spec(sys.argv[2]), catalog, ValidationPolicy(), progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "accepted": summary.accepted, "seen": summary.seen,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scan(pool: Path, model: Path, db: Path) -> dict:
    """Scan ``pool`` into ``db`` in a fresh subprocess: its own time and peak RSS."""
    import json

    out = subprocess.run([sys.executable, "-c", SCAN, str(pool), str(model), str(db)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def warm_worker(model: str) -> int:
    """Load the base model into this worker process (kept for its shards) and hold it a moment, so each of the
    first tasks lands on another worker."""
    from lora_recycle.models.loading import cached_base_model

    cached_base_model(model, "cpu", "float32", 1)
    time.sleep(2)
    return os.getpid()


def evaluation_seconds(db: Path, model: Path, task, workers: int) -> float:
    """Evaluation selection of the whole pool (cache emptied first) on ``workers`` local Ray workers, timed after
    Ray has started and every worker holds the model (steady state: a one-off of seconds per worker)."""
    from lora_recycle.experiments.executors import RayExecutor
    from lora_recycle.selection.from_catalog import select_from_catalog
    from lora_recycle.selection.sharded import Workers

    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM scores WHERE kind = 'evaluation'")
    executor = RayExecutor(num_cpus=workers)
    try:
        assert len({pid for _, pid in executor.map(warm_worker, [(str(model),)] * workers)}) == workers
        start = time.perf_counter()
        select_from_catalog(db, "evaluation", 30, task=task, workers=Workers(executor, str(model), threads=1))
        return time.perf_counter() - start
    finally:
        executor.shutdown()


def cosine_and_merge(db: Path, target) -> tuple[float, float]:
    """Seconds of cosine selection (k = 30, nothing cached) and of a TIES merge of those 30 (loading included)."""
    from lora_recycle.pool import load_pool_adapters
    from lora_recycle.recipe.merge import merge_adapters
    from lora_recycle.recipe.presets import preset
    from lora_recycle.selection.from_catalog import select_from_catalog

    start = time.perf_counter()
    chosen, _ = select_from_catalog(db, "cosine", 30, target=target)
    cosine = time.perf_counter() - start
    start = time.perf_counter()
    merge_adapters(None, None, None, load_pool_adapters(db, chosen), preset("ties"))
    return cosine, time.perf_counter() - start


def base_forward_seconds(model: Path, task) -> float:
    """The frozen base model alone on the same rows, one thread: the ceiling of a worker's throughput."""
    import torch

    from lora_recycle.models.loading import load_base_model
    from lora_recycle.tasks.scoring import evaluate_task

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base, tokenizer = load_base_model(model)
    evaluate_task(base, tokenizer, task, "train", "cpu")  # warm-up
    start = time.perf_counter()
    evaluate_task(base, tokenizer, task, "train", "cpu")
    torch.set_num_threads(threads)
    return time.perf_counter() - start


def exponent(costs: dict[int, float]) -> float:
    """log(cost ratio) / log(size ratio) between the smallest and largest size."""
    small, large = min(costs), max(costs)
    return math.log(costs[large] / costs[small]) / math.log(large / small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--eval-sizes", type=int, nargs="*", default=None,
                        help="sizes evaluation selection runs at (default --sizes; it costs N x rows forwards)")
    parser.add_argument("--rows", type=int, default=100, help="labelled rows evaluation selection scores on")
    args = parser.parse_args()
    eval_sizes = args.sizes if args.eval_sizes is None else args.eval_sizes
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.minihub.base_model import build_tiny_model
    from lora_recycle.minihub.scaled_pool import write_derived_pool
    from lora_recycle.models.precision import cpu_kind
    from lora_recycle.pool import Catalog, ValidationPolicy, load_base_spec, scan_pool
    from lora_recycle.tasks import load_task

    print(f"tiny random Llama base, pools derived with `hub scale` (no built hub); {os.cpu_count()} cores, CPU kind "
          f"{cpu_kind()}, load average {os.getloadavg()[0]:.1f} at the start (timings are noisy above ~1 per core)")
    rows: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model")
        task = load_task(make_task(root, args.rows))
        sources = root / "sources"
        sources.mkdir()
        make_adapters(model, sources, 4)
        with Catalog(root / "sources.db") as catalog:
            scan_pool([sources], load_base_spec(model), catalog, ValidationPolicy(require_license=False),
                      progress=False)
        target = read_peft_adapter(sources / "a0", adapter_id="target:a0")
        cosine_and_merge(root / "sources.db", target)  # imports and first calls out of the timings
        base = base_forward_seconds(model, task)
        for n in sorted(set(args.sizes) | set(eval_sizes)):
            pool, db = root / f"pool{n}", root / f"pool{n}.db"
            start = time.perf_counter()
            write_derived_pool(root / "sources.db", pool, n, seed=0)
            row = {"derive": time.perf_counter() - start, **scan(pool, model, db)}
            row["cosine"], row["merge"] = cosine_and_merge(db, target)
            if n in eval_sizes:
                row["eval1"] = evaluation_seconds(db, model, task, 1)
                row["eval2"] = evaluation_seconds(db, model, task, 2)
            row["catalog_mb"] = sum(p.stat().st_size for p in root.glob(f"pool{n}.db*")) / 2**20
            rows[n] = row
            shutil.rmtree(pool)
    print(f"\nevaluation on {args.rows} rows; base forward alone on them (1 thread): {base:.3f} s")
    print(f"{'N':>6} {'accepted':>8} {'derive s':>9} {'scan s':>7} {'scan peak MB':>12} {'cosine s':>9} "
          f"{'eval 1w s':>10} {'eval 2w s':>10} {'speed-up':>8} {'merge k=30 s':>12} {'catalog MB':>10}")
    for n, r in rows.items():
        e1, e2 = r.get("eval1"), r.get("eval2")
        ev = f"{e1:>10.1f} {e2:>10.1f} {e1 / e2:>8.2f}" if e1 else f"{'-':>10} {'-':>10} {'-':>8}"
        print(f"{n:>6} {r['accepted']:>8} {r['derive']:>9.1f} {r['seconds']:>7.2f} {r['peak_mb']:>12.0f} "
              f"{r['cosine']:>9.2f} {ev} {r['merge']:>12.2f} {r['catalog_mb']:>10.2f}")
    print("\ngrowth exponents (cost ~ N^e) between the smallest and largest size:")
    for key, label in (("seconds", "scan"), ("peak_mb", "scan peak RSS"), ("cosine", "cosine selection"),
                       ("eval1", "evaluation, 1 worker"), ("eval2", "evaluation, 2 workers"),
                       ("merge", "merge k=30"), ("catalog_mb", "catalog size")):
        sizes = eval_sizes if key.startswith("eval") else args.sizes  # the 100 -> 1,000 for the rest
        costs = {n: r[key] for n, r in rows.items() if key in r and n in sizes}
        if len(costs) > 1:
            print(f"  {label:<22} {exponent(costs):5.2f}")
    for n, r in rows.items():
        if "eval1" in r:
            per_adapter = r["eval1"] / r["accepted"]
            print(f"N={n}: Ray speed-up 2 vs 1 worker {r['eval1'] / r['eval2']:.2f}x; one worker spends "
                  f"{per_adapter:.3f} s per adapter, {base / per_adapter:.2f} of the base forward's throughput")


if __name__ == "__main__":
    main()

"""Pool scan throughput and peak memory: N small generated adapters vs a smaller pool, side by side.

    .venv/bin/python bench/pool_scan.py [--n 1000] [--small 100]

Each scan runs in a fresh subprocess (so peak RSS is its own): once plain for adapters/s and peak RSS
above the post-import baseline, once under tracemalloc for the Python-heap peak. Memory must not grow
with the pool: the scan handles one adapter at a time and streams rows into SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _shapes() -> dict[str, tuple[int, int]]:
    head_dim = HIDDEN // HEADS
    q, kv = HEADS * head_dim, KV_HEADS * head_dim
    per_type = {
        "q_proj": (q, HIDDEN),
        "k_proj": (kv, HIDDEN),
        "v_proj": (kv, HIDDEN),
        "o_proj": (HIDDEN, q),
        "gate_proj": (INTER, HIDDEN),
        "up_proj": (INTER, HIDDEN),
        "down_proj": (HIDDEN, INTER),
    }
    block = {t: "self_attn" if t in TYPES[:4] else "mlp" for t in TYPES}
    return {f"model.layers.{i}.{block[t]}.{t}": per_type[t] for i in range(LAYERS) for t in TYPES}


def write_base(directory: Path) -> Path:
    """A base model directory: config.json and the projection weights (all validation reads)."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    config = {
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
    }
    (directory / "config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(0)
    weights = {f"{p}.weight": torch.randn(s, generator=generator) * 0.02 for p, s in _shapes().items()}
    save_file(weights, directory / "model.safetensors")
    return directory


def write_pool(root: Path, n: int, base_name: str) -> Path:
    """``n`` PEFT-layout adapters in ``contributorK/adapterI`` folders, ranks and target sets varied."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(1)
    shapes = _shapes()
    for i in range(n):
        rank = (4, 8, 16)[i % 3]
        targets = TYPES if i % 2 else ("q_proj", "v_proj")
        directory = root / f"contributor{i % 37}" / f"adapter{i:05d}"
        directory.mkdir(parents=True)
        tensors = {}
        for path, (out_features, in_features) in shapes.items():
            if path.rsplit(".", 1)[-1] in targets:
                key = f"base_model.model.{path}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * 0.01
                tensors[f"{key}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * 0.01
        save_file(tensors, directory / "adapter_model.safetensors")
        config = {
            "peft_type": "LORA",
            "r": rank,
            "lora_alpha": 2 * rank,
            "target_modules": list(targets),
            "base_model_name_or_path": base_name,
        }
        (directory / "adapter_config.json").write_text(json.dumps(config))
        (directory / "README.md").write_text("---\nlicense: mit\n---\n# bench adapter\n")
    return root


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(pool: Path, base: Path, db: Path, trace: bool) -> None:
    """Scan ``pool`` once into a fresh ``db`` and print one JSON line of measurements."""
    import tracemalloc

    from lora_recycle.pool import Catalog, load_base_spec, scan_pool

    spec = load_base_spec(base)
    baseline = _rss_mb()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    with Catalog(db) as catalog:
        summary = scan_pool([pool], spec, catalog)
    seconds = time.perf_counter() - start
    heap_peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    start = time.perf_counter()
    with Catalog(db) as catalog:
        rescan = scan_pool([pool], spec, catalog)
    rescan_seconds = time.perf_counter() - start
    assert rescan.validated == 0 and summary.accepted == summary.seen, (summary, rescan)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "adapters": summary.seen,
                "seconds": seconds,
                "rescan_seconds": rescan_seconds,
                "rss_baseline_mb": baseline,
                "rss_peak_mb": peak,
                "heap_peak_mb": heap_peak,
            }
        )
    )


def _run(pool: Path, base: Path, db: Path, trace: bool) -> dict:
    if db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    command = [sys.executable, __file__, "--worker", str(pool), str(base), str(db)] + (["--trace"] if trace else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="adapters in the large pool")
    parser.add_argument("--small", type=int, default=100, help="adapters in the small pool")
    parser.add_argument("--worker", nargs=3, metavar=("POOL", "BASE", "DB"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*map(Path, args.worker), trace=args.trace)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        base = write_base(tmp_path / "bench-base")
        results = {}
        for n in (args.small, args.n):
            pool = write_pool(tmp_path / f"pool{n}", n, "bench-base")
            plain = _run(pool, base, tmp_path / f"pool{n}.db", trace=False)
            traced = _run(pool, base, tmp_path / f"pool{n}.db", trace=True)
            results[n] = {**plain, "heap_peak_mb": traced["heap_peak_mb"]}
    print(f"{'adapters':>8} {'adapters/s':>11} {'rescan/s':>10} {'peak RSS - baseline MB':>23} {'heap peak MB':>13}")
    for n, r in results.items():
        rss = r["rss_peak_mb"] - r["rss_baseline_mb"]
        print(
            f"{n:>8} {n / r['seconds']:>11.1f} {n / r['rescan_seconds']:>10.1f} {rss:>23.1f} {r['heap_peak_mb']:>13.2f}"
        )
    small, large = results[args.small], results[args.n]
    print(f"throughput ratio (large/small): {(args.n / large['seconds']) / (args.small / small['seconds']):.2f}")
    grow = (large["rss_peak_mb"] - large["rss_baseline_mb"]) - (small["rss_peak_mb"] - small["rss_baseline_mb"])
    print(
        f"peak RSS growth from {args.small} to {args.n} adapters: {grow:+.1f} MB; "
        f"heap peak ratio: {large['heap_peak_mb'] / small['heap_peak_mb']:.2f}"
    )


if __name__ == "__main__":
    main()

"""Adaptive merging against its FLOP floor: one coefficient step in parts, validation, a whole merge.

On the real SmolLM2-135M-Instruct, a built mini-hub's real pool adapters and a real target task's
batches, it prints the frozen base's own step (forward and input-gradient backward, no adapters) against
the floor, then for each k and precision ms per coefficient step split into forward, backward,
delta build and optimiser, a validation pass, and each as a ratio to its floor; then a whole
``ours`` merge end to end (model load, calibration, every step and validation, as ``merge`` runs it)
with this tree's engine and, side by side in the same run, with another git revision's
(``--baseline-ref``, default ``HEAD~1`` style: give the commit before the engine changes).

The floor of a coefficient step: the frozen base's forward plus its input-gradient backward,
4 x matmul parameters x non-padding tokens (the LM head counted only at the answer positions the
loss reads), plus the LoRA path's FLOPs of the strategy each layer uses (``strategy_costs``), at the
matmul throughput this run measures per precision on model-shaped matmuls. The shared prompt prefix
runs once per batch, so a step can beat the floor, which counts every non-padding token; the floor
with the prefix counted once is printed beside it.

Pools larger than the hub's are topped up with derived copies of its real adapters (each rank-1
component's sign flipped at random: the same shapes, ranks, modules and norms, other directions).
Example (about 10 minutes on 2 cores):
    .venv/bin/python bench/adaptive_merge.py --k 5 10 30 --merge-steps 100 --baseline-ref af6ca5f
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.peft_io import write_peft_adapter
from lora_recycle.adapters.reader import read_adapter
from lora_recycle.minihub.base_model import default_cache_dir
from lora_recycle.models.inject import MergedModel
from lora_recycle.models.loading import load_base_model
from lora_recycle.models.merged_linear import strategy_costs
from lora_recycle.models.precision import computing_in, cpu_kind, matmul_seconds
from lora_recycle.tasks import load_task
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.loss import batch_loss, dataset_loss
from lora_recycle.tasks.prompting import IGNORE_INDEX, collate, pad_token_id
from lora_recycle.tasks.shared_prefix import shared_prefix_length
from lora_recycle.tuning.loop import batch_order

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def find_hub(profile: str, cache: Path) -> Path:
    built = sorted((cache / "hub").glob(f"{profile}-*"), key=lambda p: p.stat().st_mtime)
    if not built:
        sys.exit(f"no built {profile} mini-hub under {cache}/hub: run `lora-recycle hub build --profile {profile}`")
    return built[-1]


def real_adapters(pool_dir: Path, model) -> list[Path]:
    """Every adapter folder of the hub's pool that reads cleanly and fits the base (the hub's deliberately
    broken ones are skipped, as its scan rejects them)."""
    found = []
    for config in sorted(pool_dir.rglob("adapter_config.json")):
        try:
            adapter = read_adapter(config.parent)
            fits = all(model.get_submodule(path).weight.shape == (m.out_features, m.in_features)
                       for path, m in adapter.modules.items())
        except Exception:  # noqa: BLE001 - broken on purpose (the hub's hostile share)
            continue
        if fits:
            found.append(config.parent)
    return found


def derived(adapter: LoraAdapter, seed: int) -> LoraAdapter:
    """The same shapes, ranks and norms in other directions: every rank-1 component's sign flipped at random."""
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path, m in adapter.modules.items():
        signs = torch.randint(0, 2, (m.rank,), generator=generator).float() * 2 - 1
        modules[path] = LoraModule(m.A, m.B * signs, m.scale)
    return LoraAdapter(modules, f"{adapter.adapter_id}-derived-{seed}", adapter.base_model, dict(adapter.metadata))


def pool_of(dirs: list[Path], k: int, out: Path, base_model: str) -> list[Path]:
    """``k`` adapter folders: the real ones first, then derived copies written under ``out``."""
    chosen = list(dirs[:k])
    for i in range(len(chosen), k):
        source = read_adapter(dirs[i % len(dirs)])
        chosen.append(write_peft_adapter(derived(source, i), out / f"derived-{i}", base_model, servable=False))
    return chosen


def linear_params(model) -> tuple[int, int]:
    """(matmul parameters of the decoder's linear layers, the LM head's), embeddings excluded."""
    head = model.get_output_embeddings().weight
    decoder = sum(m.weight.numel() for m in model.modules()
                  if isinstance(m, torch.nn.Linear) and m.weight is not head)
    return decoder, head.numel()


def throughput(dtype: torch.dtype, tokens: int, config) -> float:
    """FLOP/s of the model's MLP matmuls at ``tokens`` rows, measured now (so it sees the same machine load)."""
    seconds = matmul_seconds(dtype, "cpu", tokens, config.hidden_size, config.intermediate_size, budget=0.3)
    return 4 * tokens * config.hidden_size * config.intermediate_size / seconds


def lora_flops(merged: MergedModel, tokens: int) -> float:
    """The LoRA path's extra FLOPs of one step, per layer under the strategy it resolves to."""
    total = 0.0
    for layer in merged.layers.values():
        costs = strategy_costs(layer.rank_sum, tokens, layer.base.out_features, layer.base.in_features)
        total += costs.get(layer.choose_strategy(tokens), min(costs.values()))
    return total


def delta_build_seconds(merged: MergedModel, tokens: int) -> float:
    """What materialising the merged weight costs in the layers whose strategy at ``tokens`` builds it
    (materialized, hybrid): the part of their forward that factored layers do not pay."""
    start = time.perf_counter()
    with torch.no_grad():
        for layer in merged.layers.values():
            if layer.choose_strategy(tokens) != "factored" and layer.coefficients is not None:
                col = layer.column_weights()
                torch.addmm(layer.base.weight, layer.B_cat * col.to(layer.B_cat.dtype), layer.A_cat)
    return time.perf_counter() - start


def step_parts(merged: MergedModel, model, batch: dict, optimizer) -> dict[str, float]:
    """One coefficient step, timed in its parts (seconds)."""
    optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    merged.apply_coefficients()
    loss = batch_loss(model, batch)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}


def measure_steps(model, tokenizer, task, adapters: list[LoraAdapter], precision: str, strategy: str,
                  steps: int) -> dict:
    """Median parts of ``steps`` coefficient steps and of one validation pass, with their floors."""
    train, val = encode_task(tokenizer, task).fit_splits()
    pad = pad_token_id(tokenizer)
    order = batch_order(len(train), 8, steps + 1, 0)
    decoder_params, head_params = linear_params(model)
    with computing_in(model, precision):
        merged = MergedModel(model, adapters, "module", "leaky_relu", "zero", strategy)
        try:
            optimizer = torch.optim.AdamW([merged.raw], lr=5e-2)
            parts, tokens, answers, prefix_tokens = [], [], [], []
            for i, indices in enumerate(order):
                batch = collate([train[j] for j in indices], pad)
                record = step_parts(merged, model, batch, optimizer)
                if i == 0:
                    continue  # warm-up
                positions = batch["labels"][:, 1:] != IGNORE_INDEX
                n_tokens = int(batch["attention_mask"].sum())
                answer_mask = torch.zeros_like(batch["labels"], dtype=torch.bool)
                answer_mask[:, :-1] = positions
                prefix = shared_prefix_length(batch["input_ids"], batch["attention_mask"], answer_mask)
                record["delta_build"] = delta_build_seconds(merged, int(batch["input_ids"].numel()))
                parts.append(record)
                tokens.append(n_tokens)
                answers.append(int(positions.sum()))
                prefix_tokens.append(prefix * (len(indices) - 1))
            start = time.perf_counter()
            with torch.no_grad():
                merged.apply_coefficients()
                dataset_loss(model, tokenizer, val)
            validation = time.perf_counter() - start
            T = statistics.mean(tokens)
            rate = throughput(DTYPES[precision], int(T), model.config)
            lora = lora_flops(merged, int(T))
        finally:
            merged.detach()
    med = {name: statistics.median(p[name] for p in parts) for name in parts[0]}
    A = statistics.mean(answers)
    base_flops = 4 * decoder_params * T + 4 * head_params * A
    floor = (base_flops + lora) / rate
    floor_shared = (4 * decoder_params * (T - statistics.mean(prefix_tokens)) + 4 * head_params * A + lora) / rate
    val_tokens = sum(len(s.input_ids) for s in val)
    val_answers = sum(sum(1 for label in s.labels if label != IGNORE_INDEX) for s in val)
    val_floor = (2 * decoder_params * val_tokens + 2 * head_params * val_answers) / rate
    return {"precision": precision, "strategy": strategy, "tokens": round(T, 1), "answer_tokens": round(A, 1),
            "matmul_gflops": round(rate / 1e9, 1), "ms": {k: round(v * 1000, 1) for k, v in med.items()},
            "floor_ms": round(floor * 1000, 1), "floor_shared_prefix_ms": round(floor_shared * 1000, 1),
            "ratio_to_floor": round(med["step"] / floor, 2),
            "ratio_to_floor_shared_prefix": round(med["step"] / floor_shared, 2),
            "validation_ms": round(validation * 1000, 1), "validation_rows": len(val),
            "validation_ratio_to_floor": round(validation / val_floor, 2)}


def measure_base(model, tokenizer, task, precision: str, steps: int) -> dict:
    """The frozen base alone on the same batches: forward plus input-gradient backward (the floor's own work, no
    LoRA path), against the same floor. Separates what the model's eager ops cost from what the merge adds."""
    train, _ = encode_task(tokenizer, task).fit_splits()
    pad = pad_token_id(tokenizer)
    decoder_params, head_params = linear_params(model)
    # the embedding's output requires grad, so backward runs every layer's input gradient and no weight gradient
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.detach().requires_grad_())
    records, tokens, answers = [], [], []
    try:
        with computing_in(model, precision):
            for i, indices in enumerate(batch_order(len(train), 8, steps + 1, 0)):
                batch = collate([train[j] for j in indices], pad)
                t0 = time.perf_counter()
                loss = batch_loss(model, batch)
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
                if i:
                    records.append({"forward": t1 - t0, "backward": t2 - t1, "step": t2 - t0})
                    tokens.append(int(batch["attention_mask"].sum()))
                    answers.append(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()))
            rate = throughput(DTYPES[precision], int(statistics.mean(tokens)), model.config)
    finally:
        hook.remove()
    med = {name: statistics.median(r[name] for r in records) for name in records[0]}
    floor = (4 * decoder_params * statistics.mean(tokens) + 4 * head_params * statistics.mean(answers)) / rate
    return {"precision": precision, "ms": {k: round(v * 1000, 1) for k, v in med.items()},
            "floor_ms": round(floor * 1000, 1), "ratio_to_floor": round(med["step"] / floor, 2)}


# A whole merge as the runner and the demo run it, importable from any revision of the package.
E2E = r"""
import json, sys, time
start = time.perf_counter()
import torch
from lora_recycle.models.loading import load_base_model
from lora_recycle.adapters.reader import read_adapter
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.tasks import load_task
args = json.loads(sys.argv[1])
model, tokenizer = load_base_model(args["model"])
task = load_task(args["task"])
adapters = [read_adapter(d) for d in args["adapters"]]
settings = preset("ours").with_overrides(steps=args["steps"], eval_every=args["eval_every"], seed=0,
                                         strategy=args["strategy"])
try:
    from lora_recycle.models.precision import computing_in
    region = computing_in(model, args["precision"])
except ImportError:  # revisions before models/precision.py: eager attention and autocast, as their runner did
    import contextlib, importlib
    old = importlib.import_module("lora_recycle." + "tuning.precision")  # spelled apart: renames must not touch it
    attention_for, autocast = old.attention_for, old.autocast
    region = contextlib.ExitStack()
    region.enter_context(attention_for(model, args["precision"]))
    region.enter_context(autocast(args["precision"]))
loaded = time.perf_counter()
with region:
    outcome = merge_adapters(model, tokenizer, task, adapters, settings)
done = time.perf_counter()
values = outcome.fit.values
print(json.dumps({"seconds": done - start, "merge_seconds": done - loaded, "best_step": outcome.fit.loop.best_step,
                  "best_val_loss": outcome.fit.loop.best_val_loss, "coefficients": values.flatten().tolist()}))
"""


def tree_for(ref: str, root: Path, work: Path) -> Path:
    """A detached checkout of ``ref`` (for its ``src``), made once under ``work``."""
    target = work / f"tree-{ref}"
    if not target.exists():
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-f", str(target), ref], check=True,
                       capture_output=True)
    return target


def e2e_merge(src: Path, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", E2E, json.dumps(args)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"end-to-end merge failed under {src}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell_line(cell: dict) -> str:
    ms = cell["ms"]
    return (f"k={cell['k']:>2} {cell['precision']} {cell['strategy']:>12}: step {ms['step']:7.1f} ms "
            f"(fwd {ms['forward']:.1f}, bwd {ms['backward']:.1f}, delta {ms['delta_build']:.1f}, "
            f"opt {ms['optimizer']:.2f}) floor {cell['floor_ms']:.1f} -> x{cell['ratio_to_floor']:.2f} "
            f"(prefix once: x{cell['ratio_to_floor_shared_prefix']:.2f}); validation {cell['validation_ms']:.0f} ms "
            f"x{cell['validation_ratio_to_floor']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small", help="the built mini-hub whose pool and tasks are used")
    parser.add_argument("--task", default="phrase_sentiment", help="a task of that hub (default: a held-out target)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 30])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=tuple(DTYPES))
    parser.add_argument("--strategy", nargs="+", default=["auto"])
    parser.add_argument("--steps", type=int, default=5, help="timed coefficient steps per cell (after a warm-up)")
    parser.add_argument("--merge-steps", type=int, default=100, help="steps of the end-to-end merge (0: skip)")
    parser.add_argument("--merge-k", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--baseline-ref", default=None, help="git revision whose engine runs the same merge")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = default_cache_dir()
    hub = find_hub(args.profile, cache)
    from lora_recycle.minihub.smollm2 import ensure_smollm2

    model_dir = ensure_smollm2(cache)
    task_dir = hub / "tasks" / args.task
    model, tokenizer = load_base_model(model_dir)
    task = load_task(task_dir)
    real = real_adapters(hub / "pool", model)
    result = {"cpu_kind": cpu_kind(), "threads": torch.get_num_threads(), "hub": hub.name, "task": args.task,
              "real_adapters": len(real), "cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dirs = pool_of(real, max([*args.k, args.merge_k]), work / "derived", "HuggingFaceTB/SmolLM2-135M-Instruct")
        for precision in args.precision:
            base = measure_base(model, tokenizer, task, precision, args.steps)
            result.setdefault("base_alone", []).append(base)
            if not args.json:
                ms = base["ms"]
                print(f"base alone {precision}: step {ms['step']:7.1f} ms (fwd {ms['forward']:.1f}, bwd "
                      f"{ms['backward']:.1f}) floor {base['floor_ms']:.1f} -> x{base['ratio_to_floor']:.2f}",
                      flush=True)
        for k in args.k:
            adapters = [read_adapter(d) for d in dirs[:k]]
            for precision in args.precision:
                for strategy in args.strategy:
                    cell = measure_steps(model, tokenizer, task, adapters, precision, strategy, args.steps)
                    cell["k"] = k
                    result["cells"].append(cell)
                    if not args.json:
                        print(cell_line(cell), flush=True)
        if args.merge_steps:
            del model
            root = Path(__file__).resolve().parents[1]
            request = {"model": str(model_dir), "task": str(task_dir),
                       "adapters": [str(d) for d in dirs[:args.merge_k]], "steps": args.merge_steps,
                       "eval_every": args.eval_every, "strategy": "auto"}
            trees = {"this tree": root / "src"}
            if args.baseline_ref:
                trees[f"baseline {args.baseline_ref}"] = tree_for(args.baseline_ref, root, work) / "src"
            runs = {}
            for precision in args.precision:
                for name, src in trees.items():  # side by side: the same machine load for both
                    runs[f"{name} {precision}"] = e2e_merge(src, {**request, "precision": precision})
            kept = {name: {key: value for key, value in run.items() if key != "coefficients"}
                    for name, run in runs.items()}
            result["merge"] = {"k": args.merge_k, "steps": args.merge_steps, "runs": kept}
            for precision in args.precision:
                if args.baseline_ref:
                    new, old = runs[f"this tree {precision}"], runs[f"baseline {args.baseline_ref} {precision}"]
                    diff = max(abs(a - b) for a, b in zip(new["coefficients"], old["coefficients"], strict=True))
                    result["merge"][f"speedup_{precision}"] = round(old["seconds"] / new["seconds"], 2)
                    result["merge"][f"max_coefficient_difference_{precision}"] = diff
            if not args.json:
                for name, run in result["merge"]["runs"].items():
                    print(f"merge k={args.merge_k} {args.merge_steps} steps, {name}: {run['seconds']:.1f} s "
                          f"(merge {run['merge_seconds']:.1f} s), best step {run['best_step']}, "
                          f"val loss {run['best_val_loss']:.4f}")
                for key, value in result["merge"].items():
                    if key.startswith(("speedup", "max_coefficient")):
                        print(f"  {key}: {value}")
        if args.baseline_ref:
            subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "worktree", "prune"], check=False)
    print(f"CPU kind: {result['cpu_kind']}, {result['threads']} threads")
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Export size and accuracy against the error budget (``--max-error``) and the storage dtype, on a demo task.

Merges once as the demo does (``ours`` over the k adapters selected by evaluation, and the same with the
target-task LoRA added), then exports each merge exactly and at every budget, in float32 and bfloat16,
reads every file back from disk and scores it on the test split. Prints a Markdown table (docs/reference.md's) and
writes it with the raw numbers as JSON.
Example: .venv/bin/python bench/export_budget.py --profile small --task phrase_sentiment
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.adapters.export import export_merge
from lora_recycle.merging.rank_budget import fit_export_rank
from lora_recycle.minihub.hub import build_hub
from lora_recycle.models.fold import folded
from lora_recycle.models.loading import load_base_model
from lora_recycle.recipe import TARGET_ADAPTER_ID
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.pool import PoolRequest, finish_pool, selected_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.recipe.target import cached_target_lora, target_lora_dir
from lora_recycle.tasks import load_task
from lora_recycle.tasks.scoring import evaluate_task
from lora_recycle.tuning.target_lora import TargetLoraConfig

BUDGETS = (None, 0.01, 0.05, 0.1)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def demo_target_lora(hub, task, name: str, seed: int, model, tokenizer):
    """The demo's cached target-task LoRA (the same folder ``lora-recycle demo`` uses; trained once if missing)."""
    config = TargetLoraConfig(steps=hub.profile.target_lora_steps, seed=seed, precision=hub.precision)
    where = target_lora_dir(hub.root, name, task, config, f"minihub:{hub.profile.name}:seed{seed}")
    target_dir, _ = cached_target_lora(model, tokenizer, task, config, where, base_model_id=hub.base_model_id)
    return read_peft_adapter(target_dir, adapter_id=TARGET_ADAPTER_ID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--task", default="phrase_sentiment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    args = parser.parse_args()

    hub = build_hub(args.profile, seed=args.seed)
    task = load_task(hub.tasks[args.task])
    model, tokenizer = load_base_model(hub.base_model)
    limit = hub.profile.test_limit
    steps = hub.profile.merge_steps
    settings = preset("ours").with_overrides(steps=steps, eval_every=max(1, steps // 5), seed=args.seed,
                                             k=hub.profile.demo_k)
    pool = selected_adapters(PoolRequest(db=hub.catalog), settings, model, tokenizer, task).adapters
    selected = [a.adapter_id for a in pool]
    target = demo_target_lora(hub, task, args.task, args.seed, model, tokenizer)
    base = evaluate_task(model, tokenizer, task, "test", limit=limit)
    print(f"{args.profile} hub, task {args.task}, base {hub.base_model_id}, {base.n} test examples; "
          f"prompting accuracy {base.accuracy:.3f}; selected {', '.join(selected)}", flush=True)

    rows = []
    for label, with_target in ((f"ours (k={len(pool)})", False), (f"ours + target LoRA (k={len(pool) + 1})", True)):
        adapters = finish_pool(pool, target if with_target else None, False, args.seed)
        outcome = merge_adapters(model, tokenizer, task, adapters, settings)
        for budget in BUDGETS:
            adapter, report = fit_export_rank(outcome.adapter, max_error=budget)
            record = {**outcome.record(), "compression": report.record()}
            for dtype_name, dtype in DTYPES.items():
                with tempfile.TemporaryDirectory() as tmp:
                    out = export_merge(adapter, Path(tmp) / "merged", hub.base_model_id, "ours", [], record, dtype)
                    size = (out / "adapter_model.safetensors").stat().st_size
                    reread = read_peft_adapter(out)
                with folded(model, reread):
                    result = evaluate_task(model, tokenizer, task, "test", limit=limit)
                rows.append({"merge": label, "max_error": budget, "dtype": dtype_name, "rank": report.rank,
                             "max_relative_error": report.record()["max_relative_error"], "mb": size / 1e6,
                             "accuracy": result.accuracy, "n": result.n})
                print(f"  {label}, E={budget}, {dtype_name}: rank {report.rank}, {size / 1e6:.1f} MB, "
                      f"accuracy {result.accuracy:.3f}", flush=True)

    print("\n| merge | --max-error | rank | worst module error | fp32 MB | acc fp32 | bf16 MB | acc bf16 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for i in range(0, len(rows), 2):
        fp32, bf16 = rows[i], rows[i + 1]
        budget = "exact" if fp32["max_error"] is None else f"{fp32['max_error']:g}"
        print(f"| {fp32['merge']} | {budget} | {fp32['rank']} | {fp32['max_relative_error']:.4f} | {fp32['mb']:.1f} "
              f"| {fp32['accuracy']:.3f} | {bf16['mb']:.1f} | {bf16['accuracy']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"prompting": base.accuracy, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

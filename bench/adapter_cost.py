"""Where a pool adapter's build time goes, per source task: training steps, validations, own-task scoring.

One process and one thread, as each build worker runs (``minihub/trainer.py``), bf16 where native. Per
task it times a batch-16 training step (rank 16, all projections, the shared prompt prefix run once), one
validation (loss and, for multiple choice, accuracy on the 20 validation rows), and scoring 100 test rows
(multiple choice: each prompt once, with and without the shared prefix; generation: the base model, so
every row is decoded, the worst case of the teacher-forced shortcut).
It prints the implied seconds of one adapter (24 steps, 5 validations, the own-task score and, for
multiple choice, the 100-row retry gate) and each part's share, so budget decisions rest on numbers.

  .venv/bin/python bench/adapter_cost.py --tasks word_polarity,country_name_fr --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lora_recycle.minihub.base_model import default_cache_dir
from lora_recycle.minihub.smollm2 import ensure_smollm2
from lora_recycle.minihub.specialists import task_accuracy
from lora_recycle.models.loading import load_base_model
from lora_recycle.models.precision import attention_for, autocast, resolve_precision
from lora_recycle.tasks import load_task, shared_prefix
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.loss import batch_loss, dataset_loss
from lora_recycle.tasks.prompting import collate, pad_token_id
from lora_recycle.tasks.scoring import evaluate_task

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed(fn, repeats: int = 1) -> float:
    """Best wall seconds of ``repeats`` calls (the first call is a warm-up when repeats > 1)."""
    best = float("inf")
    for i in range(repeats + (repeats > 1)):
        start = time.perf_counter()
        fn()
        if i or repeats == 1:
            best = min(best, time.perf_counter() - start)
    return best


def task_costs(model, tokenizer, task, precision: str, steps: int) -> dict:
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=ALL))
    params = [p for p in peft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    train, val = encode_task(tokenizer, task).fit_splits()
    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device

    counter = iter(range(10**6))

    def step():
        start = next(counter) * 16
        rows = [train[(start + j) % len(train)] for j in range(16)]
        peft.train()
        with autocast(precision, device):
            loss = batch_loss(peft, collate(rows, pad, device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def validate():
        peft.eval()
        with torch.no_grad(), autocast(precision, device):  # as train_target_lora validates a pool adapter
            if task.type == "multiple_choice":
                evaluate_task(peft, tokenizer, task, "validation", device=device)
            else:
                dataset_loss(peft, tokenizer, val, device=device)

    with attention_for(model, precision):
        step_s = timed(step, steps)
        validate_s = timed(validate)
    peft.unload()
    out = {"type": task.type, "step_s": round(step_s, 3), "validate_s": round(validate_s, 3)}
    if task.type == "multiple_choice":
        out["score100_s"] = round(timed(lambda: task_accuracy(model, tokenizer, task, 100, precision)), 2)
        saved = shared_prefix.MIN_SHARED_BATCH
        shared_prefix.MIN_SHARED_BATCH = 10**9
        out["score100_left_pad_s"] = round(timed(lambda: task_accuracy(model, tokenizer, task, 100, precision)), 2)
        shared_prefix.MIN_SHARED_BATCH = saved
        scoring = 2 * out["score100_s"]  # own-task score and the retry gate
    else:
        out["score100_s"] = round(timed(lambda: task_accuracy(model, tokenizer, task, 100, precision)), 2)
        scoring = out["score100_s"]
    parts = {"steps": 24 * step_s, "validations": 5 * validate_s, "scoring": scoring}
    total = sum(parts.values())
    out["adapter_s"] = round(total, 1)
    out["shares"] = {k: round(v / total, 2) for k, v in parts.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="word_polarity,breast_cancer_diagnosis,country_name_fr,number_words_fr")
    parser.add_argument("--tasks-dir", type=Path, default=None, help="a built hub's tasks/ (default: build them)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per task (best of)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = default_cache_dir()
    model, tokenizer = load_base_model(ensure_smollm2(cache))
    precision = resolve_precision("auto", "cpu")
    tasks_dir = args.tasks_dir
    if tasks_dir is None:
        import tempfile

        from lora_recycle.minihub.tasks import build_task

        tasks_dir = Path(tempfile.mkdtemp())
        for name in args.tasks.split(","):
            build_task(name, tasks_dir)
    results = {name: task_costs(model, tokenizer, load_task(tasks_dir / name), precision, args.steps)
               for name in args.tasks.split(",")}
    if args.json:
        print(json.dumps({"precision": precision, "threads": args.threads, "tasks": results}, indent=2))
    else:
        for name, r in results.items():
            print(f"{name:<26} {r['type']:<15} step {r['step_s']:.2f}s  validate {r['validate_s']:.2f}s  "
                  f"score100 {r['score100_s']:.1f}s  adapter ~{r['adapter_s']:.0f}s  {r['shares']}")


if __name__ == "__main__":
    main()

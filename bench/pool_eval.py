"""Evaluation-based selection throughput: scoring a pool of adapters on ~100 task examples.

Side by side in one run, each as examples scored per second and as a ratio to the base model alone:
- base model alone (the ceiling);
- folding each adapter into a scratch copy of the weights (what lora-recycle does);
- PEFT's loop: every adapter loaded into one PeftModel, ``set_adapter`` before each scoring pass.
Example: .venv/bin/python bench/pool_eval.py --adapters 8 --hidden 256 --layers 4
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.minihub.base_model import build_tiny_model
from lora_recycle.models.fold import folded
from lora_recycle.models.loading import load_base_model
from lora_recycle.tasks import load_task
from lora_recycle.tasks.format import Example, TaskSpec, write_task
from lora_recycle.tasks.scoring import evaluate_task

WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "ocean", "lemon", "forest", "candle", "silver"]


def make_task(root: Path, n: int) -> Path:
    rng = random.Random(0)
    choices = ("alpha", "beta", "gamma", "delta")
    rows = [Example(" ".join(rng.choices(WORDS, k=6)), rng.choice(choices), choices) for _ in range(n)]
    spec = TaskSpec(name="bench", type="multiple_choice", template="Which label fits: {input}?")
    return write_task(root / "task", spec, rows, rows[:10])


def make_adapters(model_dir: Path, root: Path, n: int) -> list[Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        base = AutoModelForCausalLM.from_pretrained(str(model_dir))
        config = LoraConfig(r=[8, 16, 32][i % 3], lora_alpha=16, init_lora_weights=False,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"])
        torch.manual_seed(i)
        get_peft_model(base, config).save_pretrained(str(root / f"a{i}"))
        paths.append(root / f"a{i}")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_model(root / "model", hidden=args.hidden, layers=args.layers)
        task = load_task(make_task(root, args.examples))
        paths = make_adapters(model_dir, root, args.adapters)
        model, tokenizer = load_base_model(model_dir)
        n = len(task.split("train"))

        from peft import PeftModel

        adapters = [read_peft_adapter(path) for path in paths]
        plain, _ = load_base_model(model_dir)  # PEFT wraps ``model`` in place; base and folding use this copy
        peft_model = PeftModel.from_pretrained(model, str(paths[0]), adapter_name="a0")
        for i, path in enumerate(paths[1:], start=1):
            peft_model.load_adapter(str(path), adapter_name=f"a{i}")

        def run_base(i: int) -> None:
            evaluate_task(plain, tokenizer, task, "train")

        def run_fold(i: int) -> None:
            with folded(plain, adapters[i]):
                evaluate_task(plain, tokenizer, task, "train")

        def run_peft(i: int) -> None:
            peft_model.set_adapter(f"a{i}")
            evaluate_task(peft_model, tokenizer, task, "train")

        seconds = {"base": 0.0, "fold": 0.0, "peft": 0.0}
        runs = {"base": run_base, "fold": run_fold, "peft": run_peft}
        run_base(0)  # warm-up
        for i in range(len(paths)):  # round-robin: machine load hits every method alike
            for name, fn in runs.items():
                start = time.perf_counter()
                fn(i)
                seconds[name] += time.perf_counter() - start
        base, fold, peft = seconds["base"], seconds["fold"], seconds["peft"]

    total = n * args.adapters
    print(f"{args.adapters} adapters x {n} multiple-choice examples, hidden {args.hidden}, layers {args.layers}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'method':<34} {'examples/s':>11} {'x base':>7}")
    for name, seconds in (("base model alone", base), ("fold into scratch weights (ours)", fold),
                          ("PEFT set_adapter loop", peft)):
        print(f"{name:<34} {total / seconds:>11.1f} {base / seconds:>7.2f}")


if __name__ == "__main__":
    main()

"""The mini-hub's adapter pool: real PEFT LoRAs trained on source tasks, as heterogeneous as the Hub.

The plan imitates the paper's Figure 6: ranks 4-64 with 8 and 16 most common, most adapters on all
seven projections, some q/v-only or attention-only, several alphas, some rsLoRA, uneven contributors,
several adapters per source task with different seeds. A few deliberately broken adapters test
validation.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lora_recycle.adapters.card import read_card_data, write_card
from lora_recycle.adapters.paths import ATTENTION_TYPES, MODULE_TYPES
from lora_recycle.minihub.specialists import BaseAccuracies, GateRows, task_accuracy

RANKS = (4, 8, 8, 8, 16, 16, 16, 32, 64)
ALPHAS = (8, 16, 16, 32)
CONTRIBUTORS = ("alice-lab", "alice-lab", "alice-lab", "bobnlp", "bobnlp", "cyber-carol", "dmitri", "emma-ai")
LICENSES = ("apache-2.0", "mit", "apache-2.0", "cc-by-4.0", "llama3.1")
TARGET_SETS = {"all": MODULE_TYPES, "qv": ("q_proj", "v_proj"), "attn": ATTENTION_TYPES,
               "mlp": ("gate_proj", "up_proj", "down_proj")}
EVAL_EVERY = 5  # steps between validations (20 rows, ~0.5 s): best snapshot and early stopping see every epoch
MAX_RETRIES = 1  # retrainings of a multiple-choice adapter that does not beat the base on its gate rows
RETRY_SEED = 1000  # seed offset of a retraining
PATIENCE = 3  # validations without a new best before a pool adapter stops (tasks peak anywhere from 1 to 6 epochs)
BATCH_SIZE = 16  # rows per step: with the shared prompt prefix run once, 16 rows cost ~1.5x 8 (bench/train_step.py)
LR_FACTORS = (0.7, 1.0, 1.0, 1.4)  # contributors' learning rates vary around the well-tuned one
MAX_LR_FACTOR = 1.5  # matched_lr's upper clip: rank 64 / alpha 16 learnt nothing at 2.8x 3e-3, +45 points at 1.4x
MAX_LR = 5e-3  # no pool adapter trains faster (the same probe: 8.5e-3 collapsed, 4.2e-3 did not)
BROKEN_KINDS = ("no_license", "pickle_only", "nan", "wrong_shape", "dora", "corrupt")


@dataclass(frozen=True)
class AdapterPlan:
    """How one pool adapter is trained and published."""

    name: str
    task: str
    contributor: str
    license: str
    rank: int
    alpha: int
    targets: str
    use_rslora: bool
    seed: int
    steps: int
    lr: float
    batch_size: int = BATCH_SIZE
    patience: int | None = PATIENCE
    select_by: str = "accuracy"  # multiple-choice adapters keep their best-validation-accuracy snapshot


def _deck(rng: random.Random, n: int, counts: dict) -> list:
    """``n`` values with the given counts (the first key fills the rest), shuffled: exact shares at any n."""
    first = next(iter(counts))
    values = [value for value, count in counts.items() if value != first for _ in range(count)]
    values += [first] * (n - len(values))
    rng.shuffle(values)
    return values[:n]


def plan_pool(source_tasks: list[str], size: int, steps: int, seed: int = 0, base_lr: float = 2e-3,
              batch_size: int = BATCH_SIZE) -> list[AdapterPlan]:
    """A deterministic pool of ``size`` adapters over the source tasks (round-robin, varied settings).

    Shares follow the paper's Figure 6 at every pool size: ~80% on all seven projections, ~10% q/v
    only, the rest attention-only or MLP-only; ~15% rsLoRA (at least one).
    """
    rng = random.Random(seed)
    qv = max(1, round(0.1 * size))
    other = max(1, round(0.1 * size))
    targets = _deck(rng, size, {"all": 0, "qv": qv, "attn": (other + 1) // 2, "mlp": other // 2})
    rslora = _deck(rng, size, {False: 0, True: max(1, round(0.15 * size))})
    plans = []
    for i in range(size):
        task = source_tasks[i % len(source_tasks)]
        rank = rng.choice(RANKS)
        plans.append(AdapterPlan(
            name=f"{task}-r{rank}-s{i}", task=task, contributor=rng.choice(CONTRIBUTORS),
            license=rng.choice(LICENSES), rank=rank, alpha=rng.choice(ALPHAS), targets=targets[i],
            use_rslora=rslora[i], seed=i, steps=steps, lr=base_lr * rng.choice(LR_FACTORS), batch_size=batch_size,
        ))
    return [_with_lr(p, p.lr) for p in plans]


def _with_lr(plan: AdapterPlan, lr: float) -> AdapterPlan:
    """``plan`` with a learning rate matched to its LoRA scale (see ``matched_lr``)."""
    return replace(plan, lr=float(f"{min(MAX_LR, matched_lr(lr, plan.rank, plan.alpha, plan.use_rslora)):.2g}"))


def matched_lr(lr: float, rank: int, alpha: float, use_rslora: bool) -> float:
    """Scale ``lr`` (tuned for rank 8, alpha 16) so every rank/alpha/rsLoRA mix moves its delta as fast.

    With Adam and B = 0 at the start, the delta grows like ``scale * sqrt(rank) * lr``, where
    ``scale`` is ``alpha / rank`` (``alpha / sqrt(rank)`` with rsLoRA); clipped to [0.25x, 1.5x]: Adam's
    steps at a high lr overshoot whatever the scale (measured, see ``MAX_LR_FACTOR``).
    """
    scale = alpha / math.sqrt(rank) if use_rslora else alpha / rank
    factor = (16 / 8 * math.sqrt(8)) / (scale * math.sqrt(rank))
    return lr * min(MAX_LR_FACTOR, max(0.25, factor))


def train_pool_adapter(plan: AdapterPlan, model, tokenizer, task, out_dir: Path, base_model_id: str,
                       precision: str = "fp32", evaluate: Callable[[Path], dict] | None = None,
                       gate: GateRows | None = None, base_scores: BaseAccuracies | None = None) -> Path:
    """Train the planned adapter with PEFT and publish it with a Hub-style model card.

    ``evaluate(adapter_dir)`` returns extra card fields (the adapter's own-task evaluation results);
    ``gate`` the rows a multiple-choice adapter must beat the base on, or be retrained once.
    No dropout: it only costs time on ~100 examples, and the saved adapter is the same format.
    """
    from lora_recycle.tuning.target_lora import TargetLoraConfig

    def config_for(retries: int) -> TargetLoraConfig:
        return TargetLoraConfig(rank=plan.rank, alpha=plan.alpha, dropout=0.0, steps=plan.steps,
                                lr=plan.lr / 2**retries, batch_size=plan.batch_size, patience=plan.patience,
                                seed=plan.seed + RETRY_SEED * retries, eval_every=min(EVAL_EVERY, plan.steps),
                                target_modules=TARGET_SETS[plan.targets], use_rslora=plan.use_rslora,
                                keep_initial=False, precision=precision, select_by=plan.select_by)

    tmp = out_dir.with_name(out_dir.name + ".partial")
    results = {**train_specialist(model, tokenizer, task, config_for, tmp, base_model_id, gate, base_scores),
               **(evaluate(tmp) if evaluate else {})}
    write_card(tmp, {"base_model": base_model_id, "license": plan.license, "library_name": "peft",
                     "contributor": plan.contributor, "task": plan.task, "tags": ["lora", plan.task],
                     "training_precision": precision, **results},
               f"# {plan.name}\n\nA LoRA for `{plan.task}` by {plan.contributor}.\n\n"
               f"```json\n{json.dumps(asdict(plan), indent=2)}\n```\n")
    tmp.rename(out_dir)
    return out_dir


def train_specialist(model, tokenizer, task, config_for: Callable[[int], object], out_dir: Path, base_model_id: str,
                     gate: GateRows | None = None, base_scores: BaseAccuracies | None = None) -> dict:
    """Train ``config_for(0)`` into ``out_dir``; on a multiple-choice task where it does not beat the base
    model on the ``gate`` rows, retrain with ``config_for(1)`` (another seed, half the lr), as an author who
    checks before publishing would. Returns card fields: steps trained, best step, retries, gate accuracies.

    The gate never looks at the rows the adapter's ``source_accuracy`` reports (see ``gate_rows``).
    """
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.tuning.target_lora import train_target_lora

    first = config_for(0)
    gated = gate is not None and task.type == "multiple_choice"
    base_gate = None
    if gated:
        base_gate = (base_scores.get(model, tokenizer, task, gate) if base_scores is not None else
                     task_accuracy(model, tokenizer, task, gate.limit, first.precision, split=gate.split,
                                   start=gate.start))
    retries, history = 0, []
    while True:
        config = config_for(retries)
        _, loop, _ = train_target_lora(model, tokenizer, task, config, out_dir, base_model_id=base_model_id)
        if not gated:
            break
        accuracy = task_accuracy(model, tokenizer, task, gate.limit, config.precision, read_peft_adapter(out_dir),
                                 split=gate.split, start=gate.start)
        history.append(round(accuracy, 4))
        if accuracy > base_gate or retries >= MAX_RETRIES:
            break
        retries += 1
    return {"trained_steps": loop.stopped_at or config.steps, "best_step": loop.best_step, "retries": retries,
            **({"gate_rows": gate.label(), "gate_accuracy": history[-1], "gate_accuracies": history,
                "base_gate_accuracy": round(base_gate, 4)} if gated else {})}


def make_broken_adapters(good: Path, root: Path) -> list[Path]:
    """Write one broken adapter per kind in ``BROKEN_KINDS`` under ``root``, derived from a good one."""
    return [break_adapter(good, root / f"broken-{kind}", kind) for kind in BROKEN_KINDS]


def break_adapter(good: Path, target: Path, kind: str, contributor: str = "mallory") -> Path:
    """Write a broken copy of the good PEFT adapter ``good`` to ``target`` (may be ``good`` itself): ``kind``
    is one of ``BROKEN_KINDS``, each a way a Hub upload fails validation; the card names ``contributor``."""
    config = json.loads((good / "adapter_config.json").read_text())
    tensors = load_file(good / "adapter_model.safetensors")
    card = read_card_data(good)
    if kind == "no_license":
        card.pop("license", None)
    elif kind == "nan":
        key = next(k for k in tensors if "lora_B" in k)
        tensors[key] = tensors[key].clone()
        tensors[key][0, 0] = float("nan")
    elif kind == "wrong_shape":
        key = next(k for k in tensors if "lora_A" in k)
        tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 3)
    elif kind == "dora":
        config["use_dora"] = True
        key = next(k for k in tensors if "lora_B" in k)
        magnitude = key.replace("lora_B.weight", "lora_magnitude_vector")
        tensors[magnitude] = torch.ones(tensors[key].shape[0])
    card["contributor"] = contributor
    target.mkdir(parents=True, exist_ok=True)
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2))
    write_card(target, card, f"# broken adapter ({kind})\n")
    if kind == "pickle_only":
        (target / "adapter_model.safetensors").unlink(missing_ok=True)
        torch.save(tensors, target / "adapter_model.bin")
    elif kind == "corrupt":
        (target / "adapter_model.safetensors").write_bytes(b"\xff\x00\x00\x00\x00\x00\x00\x00{truncated")
    else:
        save_file(tensors, target / "adapter_model.safetensors")
    return target

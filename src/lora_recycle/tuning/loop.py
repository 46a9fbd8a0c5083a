"""One training loop for everything we fit on ~100 examples: coefficients, joint factors, target LoRAs.

AdamW with a cosine schedule and linear warm-up, effective batch via gradient accumulation,
validation every ``eval_every`` steps (and before the first step, for reference), keeping the best
snapshot among the evaluations made during training; the untrained start is a candidate only with
``keep_initial`` (the paper's runs never return it). With ``patience``, training stops once that many
validations in a row found no new best (early stopping; the cosine schedule keeps its full length).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lora_recycle.progress import loss_postfix, progress_bar
from lora_recycle.tasks.prompting import TrainingSequence, collate
from lora_recycle.tuning.batching import bucketed_batch_order


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings; defaults are the paper's coefficient-tuning settings (appendix C.1)."""

    steps: int = 100
    lr: float = 5e-2
    batch_size: int = 8
    micro_batch_size: int = 8
    eval_every: int = 10
    warmup_ratio: float = 0.1
    schedule: str = "cosine"
    weight_decay: float = 0.0
    seed: int = 0
    bucket_by_length: bool = False  # batches of similar-length sequences (less padding)
    eval_initial: bool = True  # validate before the first step (not needed when the start is never kept)
    patience: int | None = None  # stop after this many validations without a new best (None: run every step)


@dataclass(frozen=True)
class TuneConfig:
    """What a tuner reads of a merge's settings (``recipe/merge.py:tune_config`` makes it): the loop's budget,
    and whether the untrained start may win the best snapshot."""

    loop: LoopConfig
    keep_start: bool = False


@dataclass
class LoopResult:
    """Best snapshot (lowest validation loss) and the loss history."""

    best_state: Any
    best_step: int
    best_val_loss: float
    initial_val_loss: float
    history: list[dict] = field(default_factory=list)
    stopped_at: int | None = None  # the step early stopping ended the run at (None: it ran every step)


@dataclass
class CoefficientFit:
    """The kept coefficients (activated ``[groups, k]``) and how the tuning went (either tuner)."""

    values: torch.Tensor
    raw: torch.Tensor
    loop: LoopResult


def lr_factor(step: int, total: int, warmup_ratio: float, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warm-up then cosine or constant."""
    warmup = max(1, int(round(warmup_ratio * total))) if warmup_ratio > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Indices of each step's examples: reshuffled epochs drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    batches = []
    for _ in range(steps):
        batch = []
        while len(batch) < min(batch_size, n):
            if not order:
                order = torch.randperm(n, generator=generator).tolist()
            batch.append(order.pop())
        batches.append(batch)
    return batches


def run_training(
    loss_fn: Callable[[dict], torch.Tensor],
    params: list[torch.nn.Parameter],
    train: list[TrainingSequence],
    validate: Callable[[], float],
    snapshot: Callable[[], Any],
    config: LoopConfig,
    pad_id: int,
    device: torch.device | str = "cpu",
    description: str = "tuning",
    on_train: Callable[[bool], None] | None = None,
    keep_initial: bool = False,
) -> LoopResult:
    """Minimise ``loss_fn`` over ``params``; return the snapshot with the lowest validation loss.

    By default the starting point is not a candidate: the best evaluated trained state wins even if
    none beats it (``best_step >= 1``). ``keep_initial=True`` restores "never worse than the start".
    """
    if not train:
        raise ValueError("no training examples")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.steps, config.warmup_ratio, config.schedule)
    )
    initial_val = validate() if config.eval_initial or keep_initial else float("nan")
    result = LoopResult(snapshot() if keep_initial else None, 0, initial_val if keep_initial else float("inf"),
                        initial_val, [{"step": 0, "val_loss": initial_val}] if initial_val == initial_val else [])
    micro = max(1, min(config.micro_batch_size, config.batch_size))
    if config.bucket_by_length:
        order = bucketed_batch_order([len(s.input_ids) for s in train], config.batch_size, config.steps, config.seed)
    else:
        order = batch_order(len(train), config.batch_size, config.steps, config.seed)
    bar = progress_bar(order, desc=description, unit="step", leave=False)
    stale = 0  # validations since the last new best (early stopping)
    for step, indices in enumerate(bar, start=1):
        if on_train:
            on_train(True)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, len(indices), micro):
            chunk = indices[start : start + micro]
            batch = collate([train[i] for i in chunk], pad_id, device)
            loss = loss_fn(batch) * (len(chunk) / len(indices))
            loss.backward()
            total += loss.item()
        optimizer.step()
        scheduler.step()
        record = {"step": step, "train_loss": total}
        if step % config.eval_every == 0 or step == config.steps:
            if on_train:
                on_train(False)
            val = validate()
            record["val_loss"] = val
            if val < result.best_val_loss:
                result.best_state, result.best_step, result.best_val_loss = snapshot(), step, val
                stale = 0
            else:
                stale += 1
        result.history.append(record)
        bar.set_postfix(loss_postfix(result.history, result.best_val_loss), refresh=False)
        if config.patience is not None and stale >= config.patience and step < config.steps:
            result.stopped_at = step
            break
    bar.close()
    if on_train:
        on_train(False)
    if result.best_state is None:  # every evaluation was NaN: keep the final state, honestly labelled
        result.best_state, result.best_step, result.best_val_loss = snapshot(), config.steps, float("nan")
    return result

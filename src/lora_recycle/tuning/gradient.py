"""Gradient-based tuning of merging coefficients on a task's training examples (the ``ours`` recipe)."""

from __future__ import annotations

import torch

from lora_recycle.models.inject import MergedModel
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.format import Task
from lora_recycle.tasks.loss import batch_loss, dataset_loss
from lora_recycle.tasks.prompting import collate, pad_token_id
from lora_recycle.tuning.loop import CoefficientFit, LoopConfig, TuneConfig, run_training


def merged_loss(merged: MergedModel, batch: dict) -> torch.Tensor:
    """Answer-token loss of the merged network at the current (differentiable) coefficients."""
    merged.apply_coefficients()
    return batch_loss(merged.model, batch)


def tune_coefficients(
    merged: MergedModel, tokenizer, task: Task, config: LoopConfig, device: torch.device | str = "cpu",
    joint: bool = False, keep_start: bool = False,
) -> CoefficientFit:
    """Learn ``merged.raw`` by AdamW on the answer-token loss; keep the lowest-validation-loss values.

    The base weights stay frozen. With ``joint`` (pi-Tuning), every attached adapter's A and B train
    too and the best snapshot restores them as well. Without validation examples, the training loss
    selects instead. The untrained start can win only with ``keep_start``.
    """
    train, val = encode_task(tokenizer, task).fit_splits()
    pad = pad_token_id(tokenizer)
    merged.model.eval()

    def validate() -> float:
        with torch.no_grad():
            merged.apply_coefficients()
            return dataset_loss(merged.model, tokenizer, val, device=device)

    params = [merged.raw]
    if joint:
        for layer in merged.layers.values():
            layer.A_cat.requires_grad_(True)
            layer.B_cat.requires_grad_(True)
            params += [layer.A_cat, layer.B_cat]

    def snapshot():
        return [p.detach().clone() for p in params]

    calibration_batch = collate(train[: config.micro_batch_size], pad, device)

    def calibration_step() -> None:
        merged_loss(merged, calibration_batch).backward()
        for p in params:
            p.grad = None

    # `calibrate` everywhere, `auto` on an accelerator: timed once per device and shapes, then cached
    merged.calibrate(calibration_step, repeats=1 if torch.device(device).type == "cpu" else 3,
                     tokens=int(calibration_batch["input_ids"].numel()))

    loop = run_training(
        loss_fn=lambda batch: merged_loss(merged, batch),
        params=params,
        train=train,
        validate=validate,
        snapshot=snapshot,
        config=config,
        pad_id=pad,
        device=device,
        description=f"tuning coefficients on {task.name}",
        keep_initial=keep_start,
    )
    with torch.no_grad():
        for p, best in zip(params, loop.best_state, strict=True):
            p.copy_(best)
            p.requires_grad_(p is merged.raw)
        values = merged.activated().detach().clone()
    merged.apply_coefficients(values)
    loop.best_state = loop.best_state[0]
    return CoefficientFit(values, merged.raw.detach().clone(), loop)


def tune_gradient(merged: MergedModel, tokenizer, task: Task, config: TuneConfig,
                  device: torch.device | str = "cpu") -> CoefficientFit:
    """The ``gradient`` tuner: coefficients only."""
    return tune_coefficients(merged, tokenizer, task, config.loop, device, keep_start=config.keep_start)


def tune_joint(merged: MergedModel, tokenizer, task: Task, config: TuneConfig,
               device: torch.device | str = "cpu") -> CoefficientFit:
    """The ``joint`` tuner (pi-Tuning): coefficients and every attached adapter's factors."""
    return tune_coefficients(merged, tokenizer, task, config.loop, device, joint=True, keep_start=config.keep_start)

"""Gradient-free coefficient search with nevergrad (LoraHub's recipe), keeping the best evaluation."""

from __future__ import annotations

import numpy as np
import torch

from lora_recycle.models.inject import MergedModel
from lora_recycle.progress import progress_bar
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.format import Task
from lora_recycle.tasks.loss import dataset_loss
from lora_recycle.tuning.loop import CoefficientFit, LoopResult, TuneConfig


def tune_gradient_free(
    merged: MergedModel, tokenizer, task: Task, budget: int = 100, bound: float = 1.5, l1: float = 0.05,
    seed: int = 0, device: torch.device | str = "cpu",
) -> CoefficientFit:
    """Minimise ``loss on all examples + l1 * mean|w|`` over raw coefficients in ``[-bound, bound]``.

    nevergrad's ``NGOpt`` starts from the current ``merged.raw`` (LoraHub: zeros) and gets exactly
    ``budget`` evaluations; the evaluated point with the lowest objective is kept. Each evaluation's
    raw values and objective are in the returned history.
    """
    import nevergrad as ng

    examples = task.split("train") + task.split("validation")
    encoded = encode_task(tokenizer, task)
    sequences = [encoded.training(ex) for ex in examples]
    shape = tuple(merged.raw.shape)
    start = merged.raw.detach().cpu().numpy().astype(np.float64).ravel()
    parametrization = ng.p.Array(init=np.clip(start, -bound, bound)).set_bounds(-bound, bound)
    parametrization.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=budget, num_workers=1)

    def objective(flat: np.ndarray) -> float:
        with torch.no_grad():
            merged.raw.copy_(torch.tensor(flat, dtype=torch.float32).reshape(shape))
            merged.apply_coefficients()
            loss = dataset_loss(merged.model, tokenizer, sequences, device=device)
        return loss + l1 * float(np.abs(flat).mean())

    merged.model.eval()
    history: list[dict] = []
    best_value, best_flat = float("inf"), start
    bar = progress_bar(range(budget), desc="LoraHub search", unit="eval", leave=False)
    for evaluation in bar:
        candidate = optimizer.ask()
        flat = np.asarray(candidate.value, dtype=np.float64)
        value = objective(flat)
        optimizer.tell(candidate, value)
        history.append({"evaluation": evaluation, "objective": value, "raw": flat.tolist()})
        if value < best_value:
            best_value, best_flat = value, flat
        bar.set_postfix(objective=f"{value:.3f}", best=f"{best_value:.3f}", refresh=False)
    best_raw = torch.tensor(best_flat, dtype=torch.float32).reshape(shape)
    with torch.no_grad():
        merged.raw.copy_(best_raw.to(merged.raw.device))
        values = merged.activated().detach().clone()
    merged.apply_coefficients(values)
    best_index = min(range(len(history)), key=lambda i: history[i]["objective"])
    loop = LoopResult(best_raw, best_index, best_value, history[0]["objective"], history)
    return CoefficientFit(values, best_raw, loop)


def tune(merged: MergedModel, tokenizer, task: Task, config: TuneConfig, device: torch.device | str = "cpu"
         ) -> CoefficientFit:
    """The ``gradient_free`` tuner: ``config.loop.steps`` evaluations, seeded by ``config.loop.seed``."""
    return tune_gradient_free(merged, tokenizer, task, budget=config.loop.steps, seed=config.loop.seed, device=device)

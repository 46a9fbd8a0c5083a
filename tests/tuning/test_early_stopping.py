"""Early stopping: a run stops once ``patience`` validations in a row found no new best, keeping the best."""

import torch

from lora_recycle.tasks.prompting import TrainingSequence
from lora_recycle.tuning.loop import LoopConfig, run_training


def _run(val_losses: list[float], patience: int | None, steps: int = 40):
    """A one-parameter loop whose validations return ``val_losses`` in turn; counts the steps taken."""
    weight = torch.nn.Parameter(torch.zeros(()))
    losses = iter(val_losses)
    steps_taken = []

    def loss_fn(batch):
        steps_taken.append(1)
        return (weight - 1.0) ** 2

    train = [TrainingSequence([1, 2], [-100, 2])] * 4
    config = LoopConfig(steps=steps, lr=0.1, batch_size=2, micro_batch_size=2, eval_every=5, eval_initial=False,
                        patience=patience)
    result = run_training(loss_fn, [weight], train, lambda: next(losses), lambda: weight.detach().clone(), config,
                          pad_id=0)
    return result, len(steps_taken)


def test_stops_after_patience_validations_without_a_new_best():
    result, taken = _run([3.0, 2.0, 2.5, 2.1, 1.0, 0.5, 0.4, 0.3], patience=2)
    assert result.best_step == 10 and result.best_val_loss == 2.0
    assert result.stopped_at == 20 and taken == 20
    assert [h["step"] for h in result.history if "val_loss" in h] == [5, 10, 15, 20]


def test_without_patience_every_step_runs():
    result, taken = _run([3.0, 2.0, 2.5, 2.1, 1.0, 0.5, 0.4, 0.3], patience=None)
    assert result.stopped_at is None and taken == 40
    assert result.best_step == 40 and result.best_val_loss == 0.3


def test_a_new_best_resets_the_count():
    result, taken = _run([3.0, 3.5, 2.0, 2.5, 1.0, 1.5, 1.6, 0.1], patience=2)
    assert result.best_step == 25 and result.stopped_at == 35 and taken == 35

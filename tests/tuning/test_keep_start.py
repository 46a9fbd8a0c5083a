"""The best snapshot is never the untrained start unless ``keep_start`` asks for it (paper appendix C.1)."""

import pytest

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.tasks import load_task


def _run(tiny_model, adapter_dirs, colour_task_dir, **overrides):
    model, tokenizer = tiny_model
    pool = [read_peft_adapter(adapter_dirs[n]) for n in ("all_r4", "patterns")]
    # a learning rate far too large: every trained state is worse than the start (the base model)
    settings = preset("ours").with_overrides(steps=4, eval_every=2, lr=200.0, **overrides)
    return merge_adapters(model, tokenizer, load_task(colour_task_dir), pool, settings)


@pytest.mark.parametrize("method", ["ours", "adamerging"])
def test_start_never_wins_by_default(tiny_model, adapter_dirs, colour_task_dir, method):
    outcome = _run(tiny_model, adapter_dirs, colour_task_dir, method=method,
                   init="uniform" if method == "adamerging" else None)
    loop = outcome.fit.loop
    assert loop.best_step >= 1
    if method == "ours":
        assert loop.best_val_loss > loop.initial_val_loss  # the start (the base model) would have won
    evaluated = {h["step"]: h["val_loss"] for h in loop.history if "val_loss" in h and h["step"] > 0}
    assert loop.best_val_loss == min(evaluated.values()) and loop.best_step in evaluated
    assert outcome.adapter.modules  # a real merge, not the base model
    assert outcome.record()["best_step"] == loop.best_step


def test_keep_start_restores_the_start(tiny_model, adapter_dirs, colour_task_dir):
    outcome = _run(tiny_model, adapter_dirs, colour_task_dir, keep_start=True)
    loop = outcome.fit.loop
    assert loop.best_step == 0 and loop.best_val_loss == loop.initial_val_loss
    assert not outcome.adapter.modules  # zero init: the kept start is the base model itself

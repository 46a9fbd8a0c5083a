"""pi-Tuning as the authors' code runs it: no fresh LoRA when the target-task LoRA is in the pool, one without it.

Through the library (``assemble_pool`` then ``merge_adapters``), the installed console script (``merge
--method pi_tuning --target-lora DIR``) and the merge card.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lora_recycle import load_task, preset
from lora_recycle.adapters import read_peft_adapter
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.pool import PoolRequest, assemble_pool

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from test_console_script import console  # noqa: E402

PI = {"steps": 2, "eval_every": 1}


def _pool(adapter_dirs, with_target: bool):
    recycled = [read_peft_adapter(adapter_dirs[n], adapter_id=n) for n in ("qv_r8", "rslora_r2")]
    target = read_peft_adapter(adapter_dirs["all_r4"], adapter_id="target:all_r4")
    request = PoolRequest(adapters=recycled, target=target, include_target=with_target)
    return assemble_pool(request, preset("pi_tuning"))


@pytest.mark.parametrize("with_target", [True, False])
def test_fresh_lora_only_without_the_target_lora(tiny_model, adapter_dirs, colour_task_dir, with_target):
    model, tokenizer = tiny_model
    pool = _pool(adapter_dirs, with_target)
    assert pool.target_id == ("target:all_r4" if with_target else None)
    settings = preset("pi_tuning").with_overrides(**PI)
    outcome = merge_adapters(model, tokenizer, load_task(colour_task_dir), pool.adapters, settings,
                             target_id=pool.target_id)
    tuned = list(next(iter(outcome.coefficients.values())))
    fresh = outcome.record()["fresh_lora"]
    if with_target:  # k = 3 tuned adapters: the target LoRA and the two recycled ones, nothing else
        assert tuned == ["target:all_r4", "qv_r8", "rslora_r2"]
        reason = "the target-task LoRA (target:all_r4) is in the pool"
        assert fresh == {"added": False, "rule": "auto", "reason": reason}
    else:
        assert tuned == ["qv_r8", "rslora_r2", "fresh-lora"]
        assert fresh["added"] is True and fresh["rank"] == 16 and fresh["modules"] == 14


@pytest.mark.parametrize("rule,added", [("target", True), ("modal", True), ("none", False)])
def test_explicit_fresh_lora_rules_ignore_the_pool(tiny_model, adapter_dirs, colour_task_dir, rule, added):
    model, tokenizer = tiny_model
    pool = _pool(adapter_dirs, with_target=True)
    settings = preset("pi_tuning").with_overrides(fresh_lora=rule, **PI)
    outcome = merge_adapters(model, tokenizer, load_task(colour_task_dir), pool.adapters, settings,
                             target_id=pool.target_id)
    assert ("fresh-lora" in next(iter(outcome.coefficients.values()))) is added
    assert outcome.record()["fresh_lora"]["added"] is added


def test_a_target_id_outside_the_pool_is_refused(tiny_model, adapter_dirs, colour_task_dir):
    model, tokenizer = tiny_model
    pool = _pool(adapter_dirs, with_target=False)
    with pytest.raises(ValueError, match="not one of the adapters"):
        merge_adapters(model, tokenizer, load_task(colour_task_dir), pool.adapters, preset("pi_tuning"),
                       target_id="target:all_r4")


def test_only_pi_tuning_changes_its_settings_record():
    """Every other preset keeps ``fresh_lora: target`` in its settings, so their run hashes stay as recorded."""
    from lora_recycle.recipe.presets import METHODS

    assert preset("pi_tuning").to_dict()["fresh_lora"] == "auto"
    assert {m.settings.to_dict()["fresh_lora"] for n, m in METHODS.items() if n != "pi_tuning"} == {"target"}


@pytest.mark.parametrize("with_target", [True, False])
def test_cli_merge_pi_tuning_with_and_without_the_target_lora(tmp_path, tiny_model_dir, adapter_dirs,
                                                              colour_task_dir, with_target):
    out = tmp_path / "merged"
    args = ["merge", "--model", tiny_model_dir, "--task", colour_task_dir, "--method", "pi_tuning", "--adapters",
            adapter_dirs["qv_r8"], "--adapters", adapter_dirs["rslora_r2"], "--steps", "2", "--eval-every", "1",
            "--out", out, "--json", "--quiet"]
    if with_target:
        args += ["--target-lora", adapter_dirs["all_r4"]]
    done = console(*args)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    tuned = list(next(iter(summary["coefficients"].values())))
    record = json.loads((out / "merge_result.json").read_text())
    card = (out / "README.md").read_text()
    assert record["fresh_lora"] == summary["fresh_lora"]
    if with_target:
        assert tuned == ["target:all_r4", "qv_r8", "rslora_r2"] and summary["fresh_lora"]["added"] is False
        assert "no fresh LoRA was added: the target-task LoRA (target:all_r4) is in the pool" in card
    else:
        assert tuned == ["qv_r8", "rslora_r2", "fresh-lora"] and summary["fresh_lora"]["added"] is True
        assert "| fresh-lora (fresh LoRA) |" in card and "beside one fresh LoRA (rank 16" in card

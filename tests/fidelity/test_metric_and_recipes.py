"""Exact-match scoring, pi-Tuning's fresh LoRA, keep-start and LoraHub-finds-nothing through the library and CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.cli import main
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.tasks import load_task
from lora_recycle.tasks.format import Example, TaskSpec, write_task
from lora_recycle.tasks.prompting import encode_prompt
from lora_recycle.tasks.scoring import evaluate_task, normalize_answer

CLI = Path(sys.executable).with_name("lora-recycle")


def _reference_generation(model, tokenizer, spec, examples) -> list[str]:
    """Greedy continuations one prompt at a time, unpadded, straight from transformers' generate."""
    out = []
    for ex in examples:
        ids = torch.tensor([encode_prompt(tokenizer, spec, ex)])
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=spec.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id)
        out.append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def test_exact_match_metric_on_a_multiple_choice_fixture(tiny_model, tiny_model_dir, tmp_path, capsys):
    model, tokenizer = tiny_model
    spec = TaskSpec(name="mc", type="multiple_choice", template="Name a colour: {input}", max_new_tokens=3)
    inputs = ["apple", "sky", "grass", "coal", "snow", "sun"]
    probe = [Example(i, "x", ("x", "y")) for i in inputs]
    generated = _reference_generation(model, tokenizer, spec, probe)
    assert all(normalize_answer(g) for g in generated), generated  # fixture needs non-empty continuations
    # by hand: examples 0, 2, 4 have the model's own continuation as target, 1, 3, 5 a wrong choice -> 3/6
    test = [Example(i, g if n % 2 == 0 else "zzz unlikely", (g, "zzz unlikely"), id=str(n))
            for n, (i, g) in enumerate(zip(inputs, generated, strict=True))]
    directory = write_task(tmp_path / "mc", spec, test, test)
    task = load_task(directory)
    result = evaluate_task(model, tokenizer, task, "test", metric="exact_match")
    assert result.metric == "exact_match" and result.predictions == generated
    assert result.accuracy == pytest.approx(3 / 6)
    assert evaluate_task(model, tokenizer, task, "test").metric == "loglik"  # the default stays log-likelihood
    assert main(["evaluate", "--model", str(tiny_model_dir), "--task", str(directory), "--metric", "exact_match",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metric"] == "exact_match" and data["accuracy"] == pytest.approx(0.5)
    assert main(["evaluate", "--model", str(tiny_model_dir), "--task", str(directory), "--metric", "exact_match"]) == 0
    assert "greedy-generation exact match" in capsys.readouterr().out
    labelled = evaluate_task(model, tokenizer, task, "labelled", metric="exact_match")
    assert labelled.n == len(task.split("train")) + len(task.split("validation"))


def test_metric_user_errors_exit_2(tiny_model_dir, echo_task_dir, colour_task_dir):
    for task, metric, word in ((colour_task_dir, "bleu", "bleu"), (echo_task_dir, "loglik", "generation")):
        done = subprocess.run([str(CLI), "evaluate", "--model", str(tiny_model_dir), "--task", str(task),
                               "--metric", metric], capture_output=True, text=True, env={**os.environ})
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().startswith("error:") and word in done.stderr


def test_pi_tuning_fresh_lora_has_the_target_loras_shape(tiny_model, adapter_dirs, colour_task_dir, tmp_path):
    from lora_recycle.tuning.target_lora import TargetLoraConfig, train_target_lora

    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    target_dir, _, _ = train_target_lora(model, tokenizer, task, TargetLoraConfig(steps=1), tmp_path / "target")
    target = read_peft_adapter(target_dir)
    pool = [read_peft_adapter(adapter_dirs[n], adapter_id=n) for n in ("qv_r8", "rslora_r2")]
    settings = preset("pi_tuning").with_overrides(steps=2, eval_every=1)
    outcome = merge_adapters(model, tokenizer, task, pool, settings)
    fresh = outcome.record()["fresh_lora"]
    ranks, scales = {m.rank for m in target.modules.values()}, {m.scale for m in target.modules.values()}
    assert ranks == {16} and fresh["rank"] == 16  # rank 64 capped like the target LoRA's on the tiny model
    assert len(scales) == 1 and scales.pop() == pytest.approx(fresh["scale"]) and fresh["scale"] == pytest.approx(1.0)
    assert fresh["modules"] == len(target.modules) == 7 * 2  # all seven projections of both layers
    assert set(next(iter(outcome.coefficients.values()))) == {"qv_r8", "rslora_r2", "fresh-lora"}
    # the fresh LoRA's scaling is alpha / rank, not 1: with rank 8 and alpha 16 it is 2
    from lora_recycle.adapters.paths import MODULE_TYPES
    from lora_recycle.models.fresh_lora import fresh_lora

    small = fresh_lora(model, "base", 0, rank=8, alpha=16.0, target_modules=MODULE_TYPES)
    assert {m.scale for m in small.modules.values()} == {2.0} and {m.rank for m in small.modules.values()} == {8}
    assert all(not m.B.any() and abs(m.A.std().item() - 0.01) < 0.002 for m in small.modules.values())
    old = merge_adapters(model, tokenizer, task, pool, settings.with_overrides(fresh_lora="modal"))
    assert old.record()["fresh_lora"]["scale"] == 1.0 and old.record()["fresh_lora"]["rank"] in (8, 2)


def test_keep_start_through_the_cli(capsys, tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    base = ["merge", "--model", str(tiny_model_dir), "--task", str(colour_task_dir), "--adapters",
            str(adapter_dirs["all_r4"]), "--adapters", str(adapter_dirs["patterns"]), "--steps", "4", "--lr", "200",
            "--json"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["best_step"] >= 1 and trained["best_validation_loss"] > trained["initial_validation_loss"]
    assert main([*base, "--out", str(tmp_path / "b"), "--keep-start"]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert kept["best_step"] == 0 and kept["best_validation_loss"] == kept["initial_validation_loss"]
    assert kept["verdict"] == "base_model" and not (tmp_path / "b").exists()


def _faint(adapter_dir: Path, out: Path, factor: float) -> Path:
    """The same adapter with B scaled by ``factor``: near 0, no weight can beat the L1 penalty."""
    from dataclasses import replace

    from lora_recycle.adapters.lora import LoraModule
    from lora_recycle.adapters.peft_io import write_peft_adapter

    adapter = read_peft_adapter(adapter_dir)
    modules = {p: LoraModule(m.A, m.B * factor, m.scale) for p, m in adapter.modules.items()}
    write_peft_adapter(replace(adapter, modules=modules), out, "tiny", servable=False)
    return out


def test_lorahub_that_finds_nothing_exits_0(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    out = tmp_path / "hub"
    args = [str(CLI), "merge", "--model", str(tiny_model_dir), "--task", str(colour_task_dir), "--method", "lorahub",
            "--steps", "3", "--out", str(out)]
    for name in ("all_r4", "qv_r8", "patterns"):
        args += ["--adapters", str(_faint(adapter_dirs[name], tmp_path / "pool" / name, 1e-6))]
    done = subprocess.run([*args, "--json"], capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "no combination" in done.stderr, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["verdict"] == "base_model" and summary["out"] is None
    assert all(v == 0 for group in summary["coefficients"].values() for v in group.values())
    assert summary["best_validation_loss"] == pytest.approx(summary["initial_validation_loss"])
    assert not out.exists()  # nothing misleading written

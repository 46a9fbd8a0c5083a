"""The core commands end to end through ``lora_recycle.cli.main`` (the console script's entry point)."""

import json

import pytest

from lora_recycle.cli import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_json(capsys, tiny_model_dir, colour_task_dir, adapter_dirs):
    code, out, _ = run(capsys, "evaluate", "--model", tiny_model_dir, "--task", colour_task_dir, "--json")
    assert code == 0
    base = json.loads(out)
    assert base["n"] == 30 and 0 <= base["accuracy"] <= 1
    code, out, _ = run(capsys, "evaluate", "--model", tiny_model_dir, "--task", colour_task_dir,
                       "--adapter", adapter_dirs["all_r4"], "--split", "val", "--json")
    assert code == 0 and json.loads(out)["n"] == 8 and json.loads(out)["split"] == "val"


def test_merge_and_reload(capsys, tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    out_dir = tmp_path / "merged"
    code, out, _ = run(capsys, "merge", "--model", tiny_model_dir, "--task", colour_task_dir,
                       "--adapters", adapter_dirs["all_r4"], "--adapters", adapter_dirs["qv_r8"],
                       "--target-lora", adapter_dirs["rslora_r2"], "--method", "ours", "--steps", "4",
                       "--seed", "1", "--out", out_dir, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["selected"] == ["target:rslora_r2", "all_r4", "qv_r8"]  # the target-task LoRA first
    assert summary["best_step"] >= 1 and "initial_validation_loss" in summary  # never the untrained start
    assert "0.q_proj" in summary["coefficients"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "merge_result.json"):
        assert (out_dir / name).is_file()
    code, out, _ = run(capsys, "evaluate", "--model", tiny_model_dir, "--task", colour_task_dir,
                       "--adapter", out_dir, "--json")
    assert code == 0


def test_merge_refine_steps(capsys, tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    """--refine-steps fine-tunes the merge; the result records it, and the exported adapter is the refined one."""
    code, out, _ = run(capsys, "merge", "--model", tiny_model_dir, "--task", colour_task_dir,
                       "--adapters", adapter_dirs["all_r4"], "--adapters", adapter_dirs["qv_r8"], "--method", "ours",
                       "--steps", "3", "--refine-steps", "4", "--refine-lr", "0.005", "--out", tmp_path / "r", "--json")
    assert code == 0
    refinement = json.loads((tmp_path / "r" / "merge_result.json").read_text())["refinement"]
    assert refinement["best_validation_loss"] <= refinement["initial_validation_loss"]
    assert json.loads((tmp_path / "r" / "merge_result.json").read_text())["settings"]["refine_steps"] == 4
    code, _, err = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                       "--method", "ties", "--refine-steps", "4", "--out", tmp_path / "t")
    assert code == 2 and "--refine-steps does not apply to method ties" in err


def test_average_needs_no_task(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    code, out, _ = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                       "--adapters", adapter_dirs["patterns"], "--method", "average", "--out", tmp_path / "avg",
                       "--json")
    assert code == 0
    coefficients = json.loads(out)["coefficients"]["model"]
    assert coefficients == {"all_r4": 0.5, "patterns": 0.5}


def test_train_lora_cli(capsys, tmp_path, tiny_model_dir, echo_task_dir):
    code, out, _ = run(capsys, "train-lora", "--model", tiny_model_dir, "--task", echo_task_dir, "--out",
                       tmp_path / "lora", "--steps", "3", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["rank"] == 16  # 64 capped to half the tiny model's smallest projection (32)
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("args,message", [
    (["evaluate", "--model", "{tmp}/nope", "--task", "{task}"], "not a transformers model directory"),
    (["evaluate", "--model", "{model}", "--task", "{tmp}/nope"], "task directory not found"),
    (["evaluate", "--model", "{model}", "--task", "{task}", "--adapter", "{tmp}/nope"], "adapter directory not found"),
    (["evaluate", "--model", "{model}", "--task", "{task}", "--split", "dev"], "unknown split 'dev'"),
    (["merge", "--model", "{model}", "--out", "{tmp}/o", "--method", "magic", "--adapters", "{tmp}"],
     "unknown merge method 'magic'"),
    (["merge", "--model", "{model}", "--out", "{tmp}/o", "--adapters", "{tmp}"], "needs|give --task"),
    (["merge", "--model", "{model}", "--out", "{tmp}/o", "--task", "{task}"], "no adapters given"),
    (["merge", "--model", "{model}", "--out", "{tmp}/o", "--task", "{task}", "--adapters", "{tmp}",
      "--granularity", "token"], "--granularity 'token'"),
])
def test_user_mistakes_give_one_line_and_exit_2(capsys, tmp_path, tiny_model_dir, colour_task_dir, args, message):
    filled = [a.format(tmp=tmp_path, model=tiny_model_dir, task=colour_task_dir) for a in args]
    code, out, err = run(capsys, *filled)
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err)


def test_merge_into_base_and_random_init(capsys, tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    import torch
    from transformers import AutoModelForCausalLM

    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.models.fold import folded
    from lora_recycle.models.loading import load_base_model

    out = tmp_path / "full"
    code, _, _ = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"], "--adapters",
                     adapter_dirs["qv_r8"], "--method", "average", "--merge-into-base", "--out", out)
    assert code == 0 and (out / "config.json").is_file()
    lora_out = tmp_path / "lora"
    assert run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"], "--adapters",
               adapter_dirs["qv_r8"], "--method", "average", "--out", lora_out)[0] == 0
    ids = torch.tensor([[1, 2, 3, 400, 5000]])
    model, _ = load_base_model(tiny_model_dir)
    with folded(model, read_peft_adapter(lora_out)), torch.no_grad():
        expected = model(input_ids=ids).logits
    with torch.no_grad():
        full = AutoModelForCausalLM.from_pretrained(str(out))(input_ids=ids).logits
    torch.testing.assert_close(full, expected, atol=1e-4, rtol=1e-4)
    code, out_json, _ = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                            "--target-lora", adapter_dirs["qv_r8"], "--method", "average", "--random-init",
                            "--out", tmp_path / "noise", "--json")
    assert code == 0
    assert json.loads(out_json)["selected"] == ["target:qv_r8", "random-init:all_r4"]


@pytest.mark.parametrize("noise_std", ["pooled", "per_adapter"])
def test_random_init_keeps_the_target_lora_intact(capsys, tmp_path, tiny_model_dir, adapter_dirs, noise_std):
    """The exported average equals the average of (noise of each recycled adapter, the untouched target)."""
    import torch

    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.merging.controls import pooled_stds, random_init_like

    out = tmp_path / "control"
    code, _, _ = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                     "--adapters", adapter_dirs["patterns"], "--target-lora", adapter_dirs["qv_r8"],
                     "--method", "average", "--random-init", "--seed", "5", "--noise-std", noise_std, "--out", out)
    assert code == 0
    merged = read_peft_adapter(out)
    recycled = [read_peft_adapter(adapter_dirs[n]) for n in ("all_r4", "patterns")]
    stds = pooled_stds(recycled) if noise_std == "pooled" else None  # over the recycled adapters, never the target
    noise = [random_init_like(a, 5 + i, stds) for i, a in enumerate(recycled)]
    target = read_peft_adapter(adapter_dirs["qv_r8"])
    for path, module in merged.modules.items():
        expected = sum(a.modules[path].delta() for a in [*noise, target] if path in a.modules) / 3
        torch.testing.assert_close(module.delta(), expected, atol=1e-5, rtol=1e-4)


def test_an_empty_merge_is_one_line_not_a_traceback(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    code, _, err = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                       "--adapters", adapter_dirs["qv_r8"], "--method", "ties", "--coef", "0", "--out", tmp_path / "e")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: the ties merge is empty")
    assert "Traceback" not in err and not (tmp_path / "e").exists()


def test_merge_exact_export_is_recorded_and_checked(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    """--exact-export reaches the settings (and the record); a routed method refuses it by name."""
    code, _, _ = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                     "--adapters", adapter_dirs["qv_r8"], "--method", "ties", "--exact-export", "--out", tmp_path / "x")
    assert code == 0
    record = json.loads((tmp_path / "x" / "merge_result.json").read_text())
    assert record["settings"]["exact_export"] is True and not record["compression"].get("compressed")
    code, _, err = run(capsys, "merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                       "--method", "arrow", "--exact-export", "--out", tmp_path / "a")
    assert code == 2 and "--exact-export does not apply to arrow" in err


def test_merge_and_train_lora_in_bf16(capsys, tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    """--precision bf16 tunes and trains under autocast with the frozen weights held in bf16: it runs, records
    its precision, leaves fp32 factors, and a bad value is a usage error."""
    code, out, _ = run(capsys, "merge", "--model", tiny_model_dir, "--task", colour_task_dir,
                       "--adapters", adapter_dirs["all_r4"], "--adapters", adapter_dirs["qv_r8"], "--method", "ours",
                       "--steps", "3", "--precision", "bf16", "--out", tmp_path / "m", "--json")
    assert code == 0 and json.loads(out)["best_step"] >= 1
    code, out, _ = run(capsys, "train-lora", "--model", tiny_model_dir, "--task", colour_task_dir, "--steps", "4",
                       "--rank", "4", "--precision", "bf16", "--out", tmp_path / "t", "--json")
    assert code == 0
    assert "training_precision: bf16" in (tmp_path / "t" / "README.md").read_text()
    code, _, err = run(capsys, "evaluate", "--model", tiny_model_dir, "--task", colour_task_dir,
                       "--precision", "half")
    assert code == 2 and "unknown precision 'half'" in err and "Traceback" not in err

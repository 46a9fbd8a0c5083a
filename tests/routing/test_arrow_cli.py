"""``merge --method arrow`` and ``evaluate`` on an Arrow library, through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "lora-recycle")


def cli(*args, cache_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if cache_dir is not None:
        env["LORA_RECYCLE_CACHE"] = str(cache_dir)
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def test_merge_arrow_on_the_tiny_hub_then_evaluate(tiny_hub, tmp_path):
    out = tmp_path / "arrow"
    task = tiny_hub.tasks["phrase_sentiment"]
    done = cli("merge", "--model", tiny_hub.base_model, "--method", "arrow", "--db", tiny_hub.catalog, "--k", 5,
               "--task", task, "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["method"] == "arrow" and len(summary["selected"]) == 5
    assert summary["arrow"] == {"top_k": 3, "router_temperature": 1.0, "use_gks": False, "rng_seed": 0}
    spec = json.loads((out / "arrow_config.json").read_text())
    assert spec["task_adapters"] == [f"experts/{i:02d}" for i in range(5)]
    assert "not one adapter" in (out / "README.md").read_text()
    scored = cli("evaluate", "--model", tiny_hub.base_model, "--task", task, "--adapter", out, "--limit", 40,
                 "--json")
    assert scored.returncode == 0, scored.stderr
    evaluation = json.loads(scored.stdout)
    assert evaluation["n"] == 40 and 0.0 <= evaluation["accuracy"] <= 1.0 and evaluation["adapter"] == str(out)


def test_arrow_with_target_lora_is_one_of_k(tiny_hub, tmp_path, adapter_dirs):
    """The target LoRA comes first and k counts it; ``intersect`` keeps every selected adapter."""
    done = cli("merge", "--model", tiny_hub.base_model, "--method", "arrow", "--db", tiny_hub.catalog, "--k", 3,
               "--target-lora", adapter_dirs["all_r4"], "--arrow-modules", "intersect", "--top-k", 2,
               "--task", tiny_hub.tasks["phrase_sentiment"], "--out", tmp_path / "t", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["selected"][0] == "target:all_r4" and len(summary["selected"]) == 3
    assert summary["arrow"]["top_k"] == 2 and summary["dropped"] == {}


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "arrow", "--general-adapters", "x"], "--general-adapters applies to --method arrow_gks only"),
    (["--method", "arrow_gks"], "arrow_gks subtracts general knowledge"),
    (["--method", "arrow", "--steps", "3"], "--steps does not apply to arrow"),
    (["--method", "arrow", "--merge-into-base"], "--merge-into-base does not apply to arrow"),
    (["--method", "arrow", "--strategy", "factored"], "--strategy does not apply to arrow"),
    (["--method", "arrow", "--top-k", "0"], "'--top-k': Input should be greater than or equal to 1"),
    (["--method", "arrow", "--arrow-modules", "union"], "--arrow-modules 'union'"),
    (["--method", "ours", "--top-k", "2"], "--top-k applies to --method arrow or arrow_gks only"),
])
def test_bad_arrow_flags_are_one_line_errors(tiny_model_dir, adapter_dirs, tmp_path, args, message):
    done = cli("merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"], "--out", tmp_path / "o",
               *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    # issue 9's contract: one error line, at most a usage hint after it (parse-time range checks add one)
    assert lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("usage: ")), done.stderr


def test_disjoint_pool_is_refused_not_crashed(tiny_model_dir, tmp_path, peft_adapter_factory):
    qv = peft_adapter_factory(tiny_model_dir, tmp_path / "qv", 1, targets=["q_proj", "v_proj"])
    mlp = peft_adapter_factory(tiny_model_dir, tmp_path / "mlp", 2, targets=["down_proj"])
    done = cli("merge", "--model", tiny_model_dir, "--method", "arrow", "--adapters", qv, "--adapters", mlp,
               "--arrow-modules", "intersect", "--out", tmp_path / "o")
    assert done.returncode == 2 and "share no module" in done.stderr and "Traceback" not in done.stderr


def test_arrow_gks_with_general_adapter_dirs(tiny_model_dir, adapter_dirs, colour_task_dir, tmp_path):
    out = tmp_path / "gks"
    done = cli("merge", "--model", tiny_model_dir, "--method", "arrow_gks", "--adapters", adapter_dirs["all_r4"],
               "--adapters", adapter_dirs["patterns"], "--general-adapters", adapter_dirs["qv_r8"],
               "--task", colour_task_dir, "--evaluate", "test", "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["general"] == ["general:qv_r8"] and summary["arrow"]["use_gks"] is True
    assert summary["routing"]["module_types"] == ["q_proj", "v_proj"]  # inside the general adapter's modules
    assert (out / "general" / "00" / "adapter_config.json").is_file()
    scored = cli("evaluate", "--model", tiny_model_dir, "--task", colour_task_dir, "--adapter", out, "--json")
    assert scored.returncode == 0 and json.loads(scored.stdout)["accuracy"] == summary["evaluation"]["accuracy"]

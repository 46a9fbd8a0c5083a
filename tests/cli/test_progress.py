"""Long commands draw a progress bar on stderr, even piped, with the latest losses; --quiet draws none; stdout
keeps one JSON document; the model libraries' loading bar and deprecation warnings stay out."""

from __future__ import annotations

import json

import pytest
from test_console_script import console


@pytest.mark.parametrize("quiet", [False, True])
def test_train_lora_bar_on_stderr_and_json_on_stdout(tmp_path, tiny_model_dir, colour_task_dir, quiet):
    done = console("train-lora", "--model", tiny_model_dir, "--task", colour_task_dir, "--out", tmp_path / "lora",
                   "--steps", "3", "--rank", "2", "--json", *(["--quiet"] if quiet else []))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["out"] == str(tmp_path / "lora")  # stdout is the JSON document alone
    assert "Loading weights" not in done.stderr and "FutureWarning" not in done.stderr, done.stderr
    if quiet:
        assert done.stderr == ""
    else:  # the bar's last state: every step, the latest training and validation loss
        last = done.stderr.replace("\r", "\n").strip().splitlines()
        assert any("training target LoRA on colour" in line and "3/3" in line and "train=" in line
                   and "val=" in line for line in last), done.stderr


def test_merge_shows_the_tuning_bar(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    adapters = [adapter_dirs[name] for name in sorted(adapter_dirs)[:2]]
    done = console("merge", "--model", tiny_model_dir, "--task", colour_task_dir, "--adapters", *adapters,
                   "--method", "ours", "--steps", "2", "--out", tmp_path / "merged", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "merged"
    assert "tuning coefficients on colour" in done.stderr and "2/2" in done.stderr and "train=" in done.stderr
    assert "Loading weights" not in done.stderr and "FutureWarning" not in done.stderr, done.stderr

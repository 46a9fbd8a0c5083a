"""The installed console script on bad command lines: exit 2, at most three lines, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "lora-recycle"


def console(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``.venv/bin/lora-recycle ARGS`` in a subprocess, as a user would."""
    assert SCRIPT.is_file(), f"{SCRIPT} missing: install the package (make install) before running the tests"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def assert_usage_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, ``error: ...`` first, at most three lines on stderr, nothing on stdout, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 3 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args,needles", [
    (["merge", "--bogus"], ["--bogus"]),  # unknown option
    (["evaluate"], ["missing option", "--model"]),  # missing required option
    (["nosuchcmd"], ["nosuchcmd"]),  # unknown command
    (["pool", "nosuchcmd"], ["nosuchcmd"]),  # unknown subcommand
    (["merge", "--model", "m", "--out", "o", "extra"], ["extra"]),  # extra argument
    (["merge", "--model", "m", "--out", "o", "--k", "-3"], ["--k"]),
    (["merge", "--model", "m", "--out", "o", "--k", "0"], ["--k"]),
    (["merge", "--model", "m", "--out", "o", "--k", "many"], ["--k"]),
    (["merge", "--model", "m", "--out", "o", "--lr", "-1"], ["--lr", "greater than 0"]),
    (["merge", "--model", "m", "--out", "o", "--lr", "0"], ["--lr", "greater than 0"]),
    (["merge", "--model", "m", "--out", "o", "--steps", "0"], ["--steps"]),
    (["merge", "--model", "m", "--out", "o", "--prune", "1"], ["--prune", "[0, 1)"]),
    (["merge", "--model", "m", "--out", "o", "--prune", "-0.1"], ["--prune", "[0, 1)"]),
    (["train-lora", "--model", "m", "--task", "t", "--out", "o", "--lr", "0"], ["--lr"]),
    (["train-lora", "--model", "m", "--task", "t", "--out", "o", "--alpha", "-2"], ["--alpha"]),
    (["train-lora", "--model", "m", "--task", "t", "--out", "o", "--steps", "0"], ["--steps"]),
    (["evaluate", "--model", "m", "--task", "t", "--limit", "0"], ["--limit"]),
    (["select", "--model", "m", "--db", "d", "--task", "t", "--k", "0"], ["--k"]),
])
def test_usage_errors(args, needles):
    result = console(*args)
    assert_usage_error(result, *needles)
    lines = result.stderr.strip().splitlines()
    if len(lines) > 1:
        assert lines[1].startswith("usage: lora-recycle")


def test_no_arguments_prints_help():
    result = console()
    assert result.returncode == 0 and "merge" in result.stdout and "Traceback" not in result.stderr


def test_space_separated_adapters(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    """The form users type: ``--adapters A B C``; each gets 1/3 under ``average``."""
    out = tmp_path / "X"
    result = console("merge", "--model", tiny_model_dir, "--task", colour_task_dir,
                     "--adapters", adapter_dirs["all_r4"], adapter_dirs["qv_r8"], adapter_dirs["patterns"],
                     "--method", "average", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["selected"] == ["all_r4", "qv_r8", "patterns"]
    assert summary["coefficients"]["model"] == pytest.approx({"all_r4": 1 / 3, "qv_r8": 1 / 3, "patterns": 1 / 3})
    assert (out / "adapter_model.safetensors").is_file()

"""The installed console script on bad command lines: exit 2, at most three lines, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "lora-recycle"


def console(*args, timeout: float = 300, prefix: tuple[str, ...] = (), **popen) -> subprocess.CompletedProcess:
    """Run ``.venv/bin/lora-recycle ARGS`` in a subprocess, as a user would (``prefix``: a wrapper command such
    as ``setpriv ...``; ``popen``: e.g. ``cwd`` or ``preexec_fn``)."""
    assert SCRIPT.is_file(), f"{SCRIPT} missing: install the package (make install) before running the tests"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*prefix, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, **popen)


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


def assert_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 with one ``error:`` line last on stderr (after any progress bars), no traceback, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, result.stderr
    assert result.stdout == ""
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


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
    (["merge", "--model", "m", "--out", "o", "--method", "pi_tuning", "--init", "first"], ["init first", "softmax"]),
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


def average_merge_args(model_dir, adapter_dirs, out) -> list:
    return ["merge", "--model", model_dir, "--adapters", adapter_dirs["all_r4"], adapter_dirs["qv_r8"],
            "--method", "average", "--out", out]


def test_existing_out_is_refused_unless_overwrite(tmp_path, tiny_model_dir, adapter_dirs):
    out = tmp_path / "X"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_usage_error(console(*average_merge_args(tiny_model_dir, adapter_dirs, out)), "--out", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    result = console(*average_merge_args(tiny_model_dir, adapter_dirs, out), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "merge_result.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["X"]  # no partial or old copy left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert console(*average_merge_args(tiny_model_dir, adapter_dirs, empty)).returncode == 0
    assert (empty / "adapter_config.json").is_file()


def test_out_naming_a_file_is_one_line(tmp_path, tiny_model_dir, adapter_dirs):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert_usage_error(console(*average_merge_args(tiny_model_dir, adapter_dirs, target)), "is a file")
    assert_usage_error(console(*average_merge_args(tiny_model_dir, adapter_dirs, target / "sub")), "is a file")
    assert_usage_error(console("train-lora", "--model", tiny_model_dir, "--task", "t", "--out", target), "is a file")
    assert target.read_text() == "x"


KILL_HOOK = '''
"""Test hook: SIGKILL this process in the middle of writing an output (imported by site at start-up)."""
import os
import signal
import pathlib

WHEN = os.environ.get("LORA_RECYCLE_TEST_KILL")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


if WHEN == "weights":  # right after the first safetensors file is complete
    import safetensors.torch as st

    _save = st.save_file

    def save_file(*args, **kwargs):
        _save(*args, **kwargs)
        _die()

    st.save_file = save_file
elif WHEN == "rename":  # everything written, just before the rename into place
    for _name in ("rename", "replace"):
        _orig = getattr(pathlib.Path, _name)

        def _wrapped(self, target, _orig=_orig):
            if ".partial-" in self.name:
                _die()
            return _orig(self, target)

        setattr(pathlib.Path, _name, _wrapped)
'''


@pytest.mark.parametrize("command,when", [("merge", "weights"), ("merge", "rename"), ("merge-into-base", "weights"),
                                          ("train-lora", "weights")])
def test_killed_export_leaves_nothing_evaluate_accepts(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs,
                                                       command, when, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "X"
    if command == "train-lora":
        args = ["train-lora", "--model", tiny_model_dir, "--task", colour_task_dir, "--steps", "2", "--out", out]
    else:
        args = average_merge_args(tiny_model_dir, adapter_dirs, out)
        args += ["--merge-into-base"] if command == "merge-into-base" else []
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("LORA_RECYCLE_TEST_KILL", when)
    killed = console(*args)
    assert killed.returncode == -9, killed.stderr  # really killed mid-write, not finished
    monkeypatch.delenv("PYTHONPATH")
    monkeypatch.delenv("LORA_RECYCLE_TEST_KILL")
    assert not out.exists()
    leftovers = list(work.iterdir())
    assert leftovers and all(p.name.startswith(".X.partial-") for p in leftovers)
    flag = "--model" if command == "merge-into-base" else "--adapter"
    for candidate in [out, *leftovers]:
        evaluate = ["evaluate", "--task", colour_task_dir, "--model", tiny_model_dir]
        evaluate = evaluate[:-2] + ["--model", candidate] if flag == "--model" else evaluate + ["--adapter", candidate]
        assert_usage_error(console(*evaluate), str(candidate))
    rerun = console(*args)  # the next run writes X and removes the dead writer's partial directory
    assert rerun.returncode == 0, rerun.stderr
    assert [p.name for p in work.iterdir()] == ["X"]


def test_empty_split_is_an_error_naming_split_and_file(tmp_path, tiny_model_dir):
    task = tmp_path / "t"
    task.mkdir()
    (task / "task.yaml").write_text("name: t\ntype: generation\ntemplate: 'Q: {input}'\n")
    (task / "train.jsonl").write_text('{"input": "a", "target": "b"}\n')
    (task / "test.jsonl").write_text("\n")
    assert_usage_error(console("evaluate", "--model", tiny_model_dir, "--task", task), "no test rows",
                       str(task / "test.jsonl"))
    assert_usage_error(console("evaluate", "--model", tiny_model_dir, "--task", task, "--split", "val"),
                       "no val rows", str(task / "train.jsonl"))

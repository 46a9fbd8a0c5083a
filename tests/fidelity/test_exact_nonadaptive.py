"""TIES, DARE and task arithmetic are evaluated and exported exactly unless ``--max-rank`` is given."""

import json

import pytest
import torch
from peft.utils import merge_utils

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.adapters.lora import union_paths
from lora_recycle.cli import main

NAMES = ("all_r4", "qv_r8", "rslora_r2", "patterns")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _peft_reference(pool, method: str, coef: float, prune: float, seed: int) -> dict[str, torch.Tensor]:
    """Each module's merge by PEFT's merge_utils on the dense deltas (DARE draws from the global seed)."""
    torch.manual_seed(seed)  # our DARE draws module by module, in this path order, from Generator(seed)
    out = {}
    for path in union_paths(pool):
        deltas = [a.modules[path].delta(torch.float32) for a in pool if path in a.modules]
        weights = torch.full((len(deltas),), coef)
        if method == "ties":
            out[path] = merge_utils.ties(deltas, weights, density=1 - prune)
        elif method == "dare_linear":
            out[path] = merge_utils.dare_linear(deltas, weights, density=1 - prune)
        else:
            out[path] = merge_utils.task_arithmetic(deltas, weights)
    return out


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(("method", "coef", "prune"), [("ties", 0.3, 0.6), ("ties", 1.0, 0.2),
                                                        ("dare_linear", 0.3, 0.4), ("task_arithmetic", 0.5, 0.0)])
def test_export_without_max_rank_equals_the_dense_reference(capsys, tmp_path, tiny_model_dir, adapter_dirs,
                                                            method, coef, prune):
    out = tmp_path / method
    args = ["merge", "--model", str(tiny_model_dir), "--method", method, "--coef", str(coef), "--seed", "3",
            "--out", str(out), "--json"]
    if method != "task_arithmetic":
        args += ["--prune", str(prune)]
    for name in NAMES:
        args += ["--adapters", str(adapter_dirs[name])]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert not summary["compression"]["compressed"] and summary["compression"]["max_relative_error"] == 0.0
    pool = [read_peft_adapter(adapter_dirs[n], adapter_id=n) for n in NAMES]
    expected = _peft_reference(pool, method, coef, prune, seed=3)
    exported = read_peft_adapter(out)
    assert set(exported.modules) == set(expected)
    for path, reference in expected.items():
        assert _relative(exported.modules[path].delta(torch.float32), reference) < 1e-4, path
    ranks = {m.rank for m in exported.modules.values()}
    if method == "task_arithmetic":  # low-rank where the update is: at most the summed ranks (4+8+2+6 = 20)
        assert max(ranks) <= 32
    else:  # pruned updates are full-rank: a full-rank PEFT adapter (the tiny model's widest rank is 64)
        assert max(ranks) == 64
    assert not json.loads((out / "merge_result.json").read_text())["compression"]["compressed"]


def test_max_rank_compresses_and_reports_the_error(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    out = tmp_path / "ties2"
    args = ["merge", "--model", str(tiny_model_dir), "--method", "ties", "--max-rank", "2", "--out", str(out)]
    for name in NAMES:
        args += ["--adapters", str(adapter_dirs[name])]
    assert main(args) == 0
    err = capsys.readouterr().err
    record = json.loads((out / "merge_result.json").read_text())
    error = record["compression"]["max_relative_error"]
    assert 0 < error < 1 and f"{error:.4f}" in err and "--max-rank 2" in err

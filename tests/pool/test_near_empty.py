"""``near_empty``: adapters whose whole update ||s B A||_F is at most ``--min-norm`` (off by default)."""

from __future__ import annotations

import json

import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.cli import main


def _dense_norm(directory) -> float:
    adapter = read_peft_adapter(directory)
    return float(torch.sqrt(sum(m.delta(torch.float64).square().sum() for m in adapter.modules.values())))


def _scan(capsys, *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_min_norm_rejects_near_empty_only_when_asked(factory, base_dir, tmp_path, capsys):
    root = tmp_path / "adapters"
    small = factory.peft(root / "alice" / "tiny-update", 1, b_std=1e-5)
    big = factory.peft(root / "bob" / "real-update", 2)
    small_norm, big_norm = _dense_norm(small), _dense_norm(big)
    assert small_norm < 1e-2 < big_norm
    scan = ["pool", "scan", str(root), "--base-model", str(base_dir)]

    off = tmp_path / "off.db"
    assert _scan(capsys, *scan, "--db", str(off))["catalog"] == {"accepted": 2, "rejected": 0}
    stats = _scan(capsys, "pool", "stats", "--db", str(off))
    norms = stats["adapter_norms"]
    assert norms["adapters"] == 2
    assert abs(norms["min"] - small_norm) <= 1e-3 * small_norm and abs(norms["max"] - big_norm) <= 1e-3 * big_norm

    on = tmp_path / "on.db"
    threshold = (small_norm * big_norm) ** 0.5
    data = _scan(capsys, *scan, "--db", str(on), "--min-norm", str(threshold))
    assert data["catalog"] == {"accepted": 1, "rejected": 1} and data["reasons"] == {"near_empty": 1}
    rows = _scan(capsys, "pool", "list", "--db", str(on))
    assert {r["id"]: r["reasons"] for r in rows} == {"alice/tiny-update": ["near_empty"], "bob/real-update": []}
    shown = _scan(capsys, "pool", "show", "alice/tiny-update", "--db", str(on))
    assert abs(shown["delta_norm"] - small_norm) <= 1e-6 * small_norm + 1e-12
    assert "--min-norm" in shown["details"]["near_empty"]
    # the same catalog re-scanned without the threshold accepts it again (the policy is part of the key)
    assert _scan(capsys, *scan, "--db", str(on))["catalog"] == {"accepted": 2, "rejected": 0}
    assert main(["pool", "stats", "--db", str(on)]) == 0
    assert "choose `pool scan --min-norm`" in capsys.readouterr().out

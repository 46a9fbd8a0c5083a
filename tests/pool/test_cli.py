"""``lora-recycle pool ...`` through ``lora_recycle.cli.main``: exit codes and JSON on stdout."""

from __future__ import annotations

import json

import pytest
from pool_corpus import BASE_NAME, EXPECTED

from lora_recycle.cli import main
from lora_recycle.pool import hub as hub_module


def run(capsys, *args: str) -> tuple[int, object, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in args and code == 0 else out), err


@pytest.fixture()
def cli_db(corpus, base_dir, tmp_path, capsys):
    db = tmp_path / "pool.db"
    code, data, _ = run(capsys, "pool", "scan", str(corpus), "--base-model", str(base_dir), "--db", str(db), "--json")
    assert code == 0
    assert data["validated"] == data["seen"] == len(EXPECTED)
    assert data["catalog"] == {"accepted": 8, "rejected": 17}
    return db


def test_scan_list_show_stats(cli_db, capsys):
    code, rows, _ = run(capsys, "pool", "list", "--db", str(cli_db), "--json")
    assert code == 0
    assert {row["id"]: row["reasons"] for row in rows} == EXPECTED
    row = next(r for r in rows if r["id"] == "alice/qv-only")
    assert row["status"] == "accepted" and row["rank"] == 8 and row["target_modules"] == ["q_proj", "v_proj"]
    assert row["license"] == "mit"

    code, rejected, _ = run(capsys, "pool", "list", "--db", str(cli_db), "--status", "rejected", "--json")
    assert code == 0 and len(rejected) == 17 and all(r["status"] == "rejected" for r in rejected)

    code, stats, _ = run(capsys, "pool", "stats", "--db", str(cli_db), "--json")
    assert code == 0 and stats["accepted"] == 8 and stats["reasons"]["corrupt"] == 3
    assert stats["ranks"]["4"] == 6 and stats["target_module_sets"]["q_proj+v_proj"] == 2

    code, shown, _ = run(capsys, "pool", "show", "broken/outlier", "--db", str(cli_db), "--json")
    assert code == 0 and shown["reasons"] == ["outlier"] and len(shown["modules"]) == 14
    code, text, _ = run(capsys, "pool", "stats", "--db", str(cli_db))
    assert code == 0 and "rejections by reason" in text


def test_rescan_via_cli_is_incremental(cli_db, corpus, base_dir, capsys):
    code, data, _ = run(
        capsys, "pool", "scan", str(corpus), "--base-model", str(base_dir), "--db", str(cli_db), "--json"
    )
    assert code == 0 and data["validated"] == 0 and data["unchanged"] == len(EXPECTED)


def test_scan_options(corpus, base_dir, tmp_path, capsys):
    db = tmp_path / "pool.db"
    args = ["pool", "scan", str(corpus), "--base-model", str(base_dir), "--db", str(db), "--json"]
    options = ["--no-require-license", "--allow-pickle", "--alias", "Qwen/Qwen2.5-7B", "--max-outlier-ratio", "1e6"]
    code, data, _ = run(capsys, *args, *options)
    assert code == 0
    code, rows, _ = run(capsys, "pool", "list", "--db", str(db), "--json")
    status = {row["id"]: row["status"] for row in rows}
    for adapter_id in ("broken/no-license", "broken/pickle-plain", "broken/outlier", "broken/two-reasons"):
        assert status[adapter_id] == "accepted", adapter_id


def test_user_errors_are_one_line_exit_2(cli_db, tmp_path, capsys):
    code, _, err = run(capsys, "pool", "show", "nope", "--db", str(cli_db))
    assert code == 2 and "unknown adapter id nope" in err and err.count("\n") == 1
    code, _, err = run(capsys, "pool", "list", "--db", str(tmp_path / "missing.db"))
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "pool", "list", "--db", str(cli_db), "--status", "maybe")
    assert code == 2 and "--status" in err
    code, _, err = run(capsys, "pool", "scan", str(tmp_path), "--base-model", "org/name", "--db", str(cli_db))
    assert code == 2 and "local model directory" in err


def test_fetch_with_an_injected_client(corpus, base_dir, tmp_path, capsys, monkeypatch):
    from test_hub import FakeHub

    fake = FakeHub(BASE_NAME, {"alice/good": corpus / "alice/all-seven"}, {})
    monkeypatch.setattr(hub_module, "default_client", lambda: fake)
    db, cache = tmp_path / "pool.db", tmp_path / "cache"
    args = ["--db", str(db), "--cache-dir", str(cache), "--model-dir", str(base_dir), "--json"]
    code, data, _ = run(capsys, "pool", "fetch", "--base-model", BASE_NAME, *args)
    assert code == 0 and data["fetched"] == 1 and data["catalog"] == {"accepted": 1, "rejected": 0}
    code, shown, _ = run(capsys, "pool", "show", "alice/good", "--db", str(db), "--json")
    assert shown["source_kind"] == "hub" and shown["contributor"] == "alice"


def test_scan_bounds_are_options(corpus, base_dir, tmp_path, capsys):
    db = tmp_path / "pool.db"
    args = ["pool", "scan", str(corpus / "alice"), "--base-model", str(base_dir), "--db", str(db), "--json"]
    code, data, _ = run(capsys, *args, "--rank-cap", "4")
    assert code == 0 and data["reasons"] == {"rank_too_large": 1}  # qv-only has rank 8
    code, data, _ = run(capsys, *args, "--time-limit", "0")
    assert code == 0 and data["reasons"] == {"timeout": 2}

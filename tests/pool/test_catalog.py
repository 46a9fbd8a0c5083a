"""The catalog: incremental, idempotent re-scans, versioned format, cached scores, loading for merges."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest
import torch

from lora_recycle.adapters import read_adapter
from lora_recycle.errors import UserError
from lora_recycle.pool import FORMAT_VERSION, Catalog, ValidationPolicy, load_pool_adapters, scan_pool
from lora_recycle.pool import scan as scan_module


def _snapshot(db) -> list[dict]:
    with Catalog(db, create=False) as catalog:
        rows = catalog.rows()
        modules = {row["id"]: catalog.modules(row["id"]) for row in rows}
    return [{**{k: v for k, v in row.items() if k != "scanned_at"}, "modules": modules[row["id"]]} for row in rows]


@pytest.fixture()
def corpus_copy(corpus, tmp_path):
    """A private copy of the corpus that a test may modify."""
    return shutil.copytree(corpus, tmp_path / "pool", symlinks=True)


def test_rescan_reads_nothing_and_changes_nothing(corpus_copy, base_spec, tmp_path, monkeypatch):
    db = tmp_path / "pool.db"
    with Catalog(db) as catalog:
        first = scan_pool([corpus_copy], base_spec, catalog)
    before = _snapshot(db)

    def must_not_run(*args, **kwargs):
        raise AssertionError("an unchanged adapter was re-read")

    monkeypatch.setattr(scan_module, "validate_adapter", must_not_run)
    with Catalog(db) as catalog:
        second = scan_pool([corpus_copy], base_spec, catalog)
    assert first.validated == first.seen == second.seen == second.unchanged
    assert second.validated == 0
    assert _snapshot(db) == before


def test_rescan_rereads_only_what_changed(corpus_copy, base_spec, tmp_path, monkeypatch):
    db = tmp_path / "pool.db"
    with Catalog(db) as catalog:
        scan_pool([corpus_copy], base_spec, catalog)
    readme = corpus_copy / "broken/no-license/README.md"
    readme.write_text("---\nlicense: apache-2.0\n---\n# now licensed\n")
    os.utime(readme, ns=(1, 1))  # a different mtime even on coarse file systems
    seen = []
    original = scan_module.validate_adapter
    monkeypatch.setattr(
        scan_module, "validate_adapter", lambda path, *a, **k: seen.append(path) or original(path, *a, **k)
    )
    with Catalog(db) as catalog:
        summary = scan_pool([corpus_copy], base_spec, catalog)
        row = catalog.get("broken/no-license")
    assert seen == [corpus_copy / "broken/no-license"]
    assert summary.validated == 1 and row["status"] == "accepted" and row["license"] == "apache-2.0"


def test_a_policy_change_revalidates(corpus, base_spec, tmp_path):
    db = tmp_path / "pool.db"
    with Catalog(db) as catalog:
        scan_pool([corpus], base_spec, catalog)
        summary = scan_pool([corpus], base_spec, catalog, ValidationPolicy(require_license=False))
        assert summary.validated == summary.seen
        assert catalog.get("broken/no-license")["status"] == "accepted"


def test_catalog_is_wal_and_versioned(scanned_db, tmp_path):
    with Catalog(scanned_db, create=False) as catalog:
        assert catalog.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert catalog.meta()["format_version"] == str(FORMAT_VERSION)
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('format_version', '999')")
    with pytest.raises(UserError, match="format_version 999"):
        Catalog(old)
    with pytest.raises(UserError, match="not found"):
        Catalog(tmp_path / "missing.db", create=False)


def test_catalog_records_what_it_learned(scanned_db):
    with Catalog(scanned_db, create=False) as catalog:
        patterns = catalog.get("bob/patterns")
        rslora = catalog.get("bob/rslora")
        modules = {m["path"]: m for m in catalog.modules("bob/patterns")}
        truncated = catalog.get("broken/truncated")
    assert patterns["ranks"] == [4, 6] and patterns["rank"] == 4 and patterns["alpha"] == 8
    assert patterns["layer_targets"] == {
        0: sorted(patterns["target_modules"]),
        1: sorted(patterns["target_modules"]),
    }
    assert len(patterns["target_modules"]) == 7
    assert modules["model.layers.1.mlp.up_proj"]["scale"] == pytest.approx(2 / 4)
    assert modules["model.layers.0.self_attn.v_proj"]["rank"] == 6
    assert rslora["use_rslora"] and rslora["rank"] == 16
    assert len(patterns["sha256"]) == 64 and patterns["size"] > 0
    assert patterns["contributor"] == "bob" and patterns["license"] == "mit"
    assert truncated["size"] > 0 and truncated["status"] == "rejected"  # rejected adapters are catalogued too
    assert truncated["sha256"] is None  # but a file its header refuses is never hashed (a sparse 50 GB one, say)


def test_scores_round_trip(tmp_path):
    with Catalog(tmp_path / "pool.db") as catalog:
        catalog.put_scores("task-1", "evaluation", {"a": 0.5, "b": 0.75})
        catalog.put_scores("task-1", "evaluation", {"a": 0.6})
        catalog.put_scores("task-1", "cosine", {"a": -0.1})
        assert catalog.get_scores("task-1", "evaluation") == {"a": 0.6, "b": 0.75}
        assert catalog.get_scores("task-1", "evaluation", ids=["b", "c"]) == {"b": 0.75}
        assert catalog.get_scores("task-2", "evaluation") == {}


def test_load_pool_adapters(scanned_db, corpus):
    ids = ["carol/mlx", "alice/qv-only"]
    adapters = load_pool_adapters(scanned_db, ids)
    assert [a.adapter_id for a in adapters] == ids
    direct = read_adapter(corpus / "carol/mlx")
    for path, module in direct.modules.items():
        torch.testing.assert_close(adapters[0].modules[path].delta(), module.delta())
    assert adapters[1].metadata["license"] == "mit"
    with pytest.raises(UserError, match="rejected.*outlier"):
        load_pool_adapters(scanned_db, ["alice/all-seven", "broken/outlier"])
    with pytest.raises(UserError, match="unknown adapter id.*nope"):
        load_pool_adapters(scanned_db, ["nope"])


def test_load_refuses_files_changed_since_the_scan(corpus_copy, base_spec, tmp_path):
    db = tmp_path / "pool.db"
    with Catalog(db) as catalog:
        scan_pool([corpus_copy], base_spec, catalog)
    os.utime(corpus_copy / "alice/all-seven/adapter_model.safetensors", ns=(1, 1))
    with pytest.raises(UserError, match="changed since the scan"):
        load_pool_adapters(db, ["alice/all-seven"])

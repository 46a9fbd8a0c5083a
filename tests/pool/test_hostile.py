"""Hostile pools (issue 16): every attack is one catalogued rejection with its reason; nothing aborts a scan."""

from __future__ import annotations

import shutil
import tracemalloc

import pytest
from hostile_corpus import GOOD_IDS, HOSTILE_EXPECTED, build_hostile_cache, build_hostile_tree

from lora_recycle.pool import Catalog, ValidationPolicy, scan_pool, validate_adapter


@pytest.fixture(scope="session")
def hostile(factory, tmp_path_factory):
    """``(tree, cache)``: the two sources of the hostile pool (read-only)."""
    tree = build_hostile_tree(factory, tmp_path_factory.mktemp("hostile") / "tree")
    outside = tmp_path_factory.mktemp("outside")
    cache = build_hostile_cache(factory, tmp_path_factory.mktemp("hostile-cache") / "hub", outside)
    return tree, cache


@pytest.fixture(scope="session")
def hostile_db(hostile, base_spec, tmp_path_factory):
    tree, cache = hostile
    db = tmp_path_factory.mktemp("hostile-db") / "pool.db"
    with Catalog(db) as catalog:
        summary = scan_pool([tree, cache], base_spec, catalog)
    return db, summary


def test_every_hostile_adapter_is_catalogued_with_its_reason(hostile_db):
    db, summary = hostile_db
    with Catalog(db, create=False) as catalog:
        rows = {row["id"]: row for row in catalog.rows()}
    assert {i: rows[i]["reasons"] for i in rows} == HOSTILE_EXPECTED
    for adapter_id in GOOD_IDS:
        assert rows[adapter_id]["status"] == "accepted"
    assert summary.seen == summary.validated == len(HOSTILE_EXPECTED)
    assert summary.accepted == len(GOOD_IDS)
    assert summary.rejected == len(HOSTILE_EXPECTED) - len(GOOD_IDS)
    assert sum(summary.reasons.values()) == sum(len(r) for r in HOSTILE_EXPECTED.values())


def test_a_bad_adapter_between_two_good_ones(hostile, base_spec, tmp_path):
    pool = tmp_path / "pool"
    for name in ("a-good", "b-r-nan", "c-good"):
        shutil.copytree(hostile[0] / name, pool / name)
    with Catalog(tmp_path / "pool.db") as catalog:
        summary = scan_pool([pool], base_spec, catalog)
        status = {row["id"]: row["status"] for row in catalog.rows()}
    assert status == {"a-good": "accepted", "b-r-nan": "rejected", "c-good": "accepted"}
    assert summary.to_dict()["reasons"] == {"bad_config": 1} and summary.accepted == 2


def test_an_unexpected_exception_is_a_corrupt_rejection(hostile, base_spec, tmp_path, monkeypatch):
    # Fault injection: whatever raises inside validation of one adapter, the scan records it and goes on.
    from lora_recycle.pool import validate

    real = validate.read_safetensors_header

    def flaky(path, *args):
        if "b-r-nan" in str(path) or "c-good" in str(path):
            raise RuntimeError("injected failure")
        return real(path, *args)

    monkeypatch.setattr(validate, "read_safetensors_header", flaky)
    pool = tmp_path / "pool"
    for name in ("a-good", "c-good", "z-good"):
        shutil.copytree(hostile[0] / name, pool / name)
    with Catalog(tmp_path / "pool.db") as catalog:
        scan_pool([pool], base_spec, catalog)
        rows = {row["id"]: row for row in catalog.rows()}
    assert [rows[i]["status"] for i in ("a-good", "c-good", "z-good")] == ["accepted", "rejected", "accepted"]
    assert rows["c-good"]["reasons"] == ["corrupt"]
    assert "RuntimeError: injected failure" in rows["c-good"]["details"]["corrupt"]


def test_time_limit_has_its_own_reason(hostile, base_spec):
    result = validate_adapter(hostile[0] / "a-good", base_spec, ValidationPolicy(time_limit=0.0))
    assert list(result.reasons) == ["timeout"] and "longer than 0 s" in result.reasons["timeout"]
    assert validate_adapter(hostile[0] / "a-good", base_spec, ValidationPolicy()).accepted


def test_deadline_stops_between_steps():
    from lora_recycle.pool.deadline import Deadline, ValidationTimeout

    ticks = iter(range(100))
    deadline = Deadline(3, clock=lambda: next(ticks))  # created at t=0, expires at t=3
    deadline.check("step 1")
    deadline.check("step 2")
    with pytest.raises(ValidationTimeout, match="step 3"):
        deadline.check("step 3")


def test_rank_cap_is_a_policy(hostile, base_spec):
    lax = validate_adapter(hostile[0] / "hostile/rank-8000", base_spec, ValidationPolicy(max_rank=8192))
    assert "rank_too_large" not in lax.reasons and lax.rank == 8000


def test_validation_memory_does_not_grow_with_rank_squared(hostile, base_spec):
    # rank 8000 once peaked at 1.26 GB (two 8000 x 8000 float64 Gram matrices); it is now refused up front
    tracemalloc.start()
    result = validate_adapter(hostile[0] / "hostile/rank-8000-tensors", base_spec, ValidationPolicy())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert list(result.reasons) == ["rank_too_large"]
    assert peak < 8 << 20


def test_hub_hints_cannot_point_outside_the_cache(hostile, base_spec, tmp_path):
    with Catalog(tmp_path / "pool.db") as catalog:
        scan_pool([hostile[1]], base_spec, catalog, hub_hints={"dave/cached-good": {"sha": "../../../etc"}})
        row = catalog.get("dave/cached-good")
    assert row["reasons"] == ["outside_source"] and "fetched revision" in row["details"]["outside_source"]


@pytest.mark.parametrize("name", ["offsets-overlap", "offsets-gap", "trailing-bytes"])
def test_strict_layout_is_the_format_rule(hostile, name):
    # safetensors itself refuses what our header check refuses (and both accept the good files)
    from safetensors import SafetensorError, safe_open

    from lora_recycle.pool import HeaderError, read_safetensors_header

    path = hostile[0] / "hostile" / name / "adapter_model.safetensors"
    with pytest.raises(HeaderError):
        read_safetensors_header(path)
    with pytest.raises(SafetensorError), safe_open(path, framework="pt") as handle:
        [handle.get_tensor(k) for k in handle.keys()]  # noqa: SIM118
    good = hostile[0] / "a-good" / "adapter_model.safetensors"
    assert read_safetensors_header(good)

"""Hostile inputs of issue 30 (items 7-12), through the installed console script: every output guarded and
atomic, catalog ids unique across sources, control characters escaped, experiment names checked before they
become paths, read-only and full disks, and a scan that reads a weights file's header before hashing it.

Each test bounds its subprocess with a timeout; a hang or a slow path fails it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_console_script import KILL_HOOK, assert_error_line, assert_usage_error, average_merge_args, console

# root ignores file modes: without these two capabilities a read-only folder is read-only for it too
AS_USER = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()


@contextmanager
def read_only(directory: Path):
    """``directory`` without write permission for the block."""
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(0o755)


def _kill_hook(tmp_path: Path, monkeypatch, when: str) -> None:
    """Make the next console runs SIGKILL themselves at ``when`` (see ``KILL_HOOK``)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("LORA_RECYCLE_TEST_KILL", when)


def _empty_results(path: Path) -> Path:
    from lora_recycle.experiments.results import ResultsStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with ResultsStore(path):
        pass
    return path


def _experiment(path: Path, model: Path, db: Path, tasks: dict[str, Path]) -> Path:
    config = {"model": str(model), "db": str(db), "tasks": {name: str(p) for name, p in tasks.items()},
              "methods": [{"preset": "average"}], "k": [1], "seeds": [0], "include_target_lora": False,
              "baselines": False}
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _catalog_rows(db: Path) -> list[dict]:
    result = console("pool", "list", "--db", db, "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- 7. every --out guarded and atomic ---------------------------------------------------------------------------


def test_report_out_is_guarded(tmp_path):
    results = _empty_results(tmp_path / "r" / "results.db")
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_usage_error(console("report", results, "--out", out, timeout=120), "--out", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    done = console("report", results, "--out", out, "--overwrite", timeout=120)
    assert done.returncode == 0, done.stderr
    assert {"report.md", "tables.json"} <= {p.name for p in out.iterdir()} and not (out / "notes.txt").exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_usage_error(console("report", results, "--out", a_file, timeout=120), "is a file")
    assert a_file.read_text() == "x"
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        line = assert_usage_error(console("report", results, "--out", locked / "rep", prefix=AS_USER, timeout=120))
    assert str(locked) in line and "permission denied" in line.lower()
    assert list(locked.iterdir()) == []


def test_report_into_the_results_folder_keeps_the_results(tmp_path):
    """`report docs/study/results.db --out docs/study` (how the published study regenerates) replaces only the
    report's own files: the database, its artifacts and a previous report's stale figure are handled, nothing
    else is deleted, with or without --overwrite."""
    study = tmp_path / "study"
    results = _empty_results(study / "results.db")
    (study / "results-artifacts").mkdir()
    (study / "results-artifacts" / "keep.txt").write_text("artifact")
    (study / "discussion.md").write_text("mine")
    (study / "fig9_gone.png").write_bytes(b"stale figure of an earlier report")
    for extra in ((), ("--overwrite",)):
        done = console("report", results, "--out", study, *extra, timeout=120)
        assert done.returncode == 0, done.stderr
        names = {p.name for p in study.iterdir()}
        assert {"results.db", "results-artifacts", "discussion.md", "report.md", "tables.json"} <= names
        assert "fig9_gone.png" not in names and not [n for n in names if n.startswith(".")]
        assert (study / "results-artifacts" / "keep.txt").read_text() == "artifact"
        assert json.loads((study / "tables.json").read_text())["tasks"] == []


def test_killed_report_leaves_no_report(tmp_path, monkeypatch):
    results = _empty_results(tmp_path / "r" / "results.db")
    work = tmp_path / "work"
    work.mkdir()
    _kill_hook(tmp_path, monkeypatch, "rename")  # everything written, killed just before the rename
    assert console("report", results, "--out", work / "rep", timeout=120).returncode == -9
    monkeypatch.delenv("PYTHONPATH")
    assert not (work / "rep").exists()
    assert all(p.name.startswith(".rep.partial-") for p in work.iterdir())
    rerun = console("report", results, "--out", work / "rep", timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert [p.name for p in work.iterdir()] == ["rep"]


def test_demo_out_is_guarded_before_any_work(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cache = tmp_path / "cache"
    assert_usage_error(console("demo", "--profile", "tiny", "--cache-dir", cache, "--out", out, timeout=60),
                       "--out", "--overwrite")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_usage_error(console("demo", "--profile", "tiny", "--cache-dir", cache, "--out", a_file, timeout=60),
                       "is a file")
    assert not cache.exists()  # refused before the mini-hub was built
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def _arrow_args(model: Path, adapter_dirs: dict, out: Path) -> list:
    return ["merge", "--model", model, "--method", "arrow", "--adapters", adapter_dirs["all_r4"],
            adapter_dirs["patterns"], "--out", out]


def test_arrow_out_is_guarded(tmp_path, tiny_model_dir, adapter_dirs):
    out = tmp_path / "arrow"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_usage_error(console(*_arrow_args(tiny_model_dir, adapter_dirs, out), timeout=120), "--out", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    done = console(*_arrow_args(tiny_model_dir, adapter_dirs, out), "--overwrite", timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "arrow_config.json").is_file() and not (out / "notes.txt").exists()


def test_killed_arrow_library_is_never_loaded(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "lib"
    _kill_hook(tmp_path, monkeypatch, "weights")  # killed right after experts/00 is written
    assert console(*_arrow_args(tiny_model_dir, adapter_dirs, out), timeout=120).returncode == -9
    monkeypatch.delenv("PYTHONPATH")
    assert not out.exists()
    leftovers = list(work.iterdir())
    assert leftovers and all(p.name.startswith(".lib.partial-") for p in leftovers)
    for candidate in [out, leftovers[0], leftovers[0] / "experts" / "00"]:
        assert_usage_error(console("evaluate", "--model", tiny_model_dir, "--task", colour_task_dir, "--adapter",
                                   candidate, timeout=120), str(candidate))
    rerun = console(*_arrow_args(tiny_model_dir, adapter_dirs, out), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert [p.name for p in work.iterdir()] == ["lib"]


# -- 8. catalog identity -----------------------------------------------------------------------------------------


def test_same_folder_name_in_two_sources_is_a_reported_conflict(tmp_path, tiny_model_dir, adapter_dirs):
    shutil.copytree(adapter_dirs["all_r4"], tmp_path / "one" / "same")
    shutil.copytree(adapter_dirs["qv_r8"], tmp_path / "two" / "same")
    db = tmp_path / "pool.db"
    scan = console("pool", "scan", tmp_path / "one", tmp_path / "two", "--base-model", tiny_model_dir, "--db", db,
                   "--no-require-license", "--json", timeout=120)
    assert scan.returncode == 0, scan.stderr
    summary = json.loads(scan.stdout)
    assert (summary["seen"], summary["accepted"], summary["catalog"]["accepted"]) == (2, 1, 1)
    assert summary["reasons"] == {"id_conflict": 1}
    warning = [line for line in scan.stderr.splitlines() if "same" in line]
    assert len(warning) == 1 and str(tmp_path / "one" / "same") in warning[0] and str(tmp_path / "two") in warning[0]
    (row,) = _catalog_rows(db)
    shown = json.loads(console("pool", "show", "same", "--db", db, "--json", timeout=60).stdout)
    assert row["id"] == "same" and shown["path"] == str(tmp_path / "one" / "same")  # the first one is kept
    again = console("pool", "scan", tmp_path / "two", "--base-model", tiny_model_dir, "--db", db,
                    "--no-require-license", "--json", timeout=120)  # nor does a later scan replace it
    assert json.loads(again.stdout)["reasons"] == {"id_conflict": 1}
    shown = json.loads(console("pool", "show", "same", "--db", db, "--json", timeout=60).stdout)
    assert shown["path"] == str(tmp_path / "one" / "same")


def test_relative_scan_then_merge_from_elsewhere(tmp_path, tiny_model_dir, adapter_dirs):
    scan_dir, other = tmp_path / "here", tmp_path / "elsewhere"
    for name in ("all_r4", "qv_r8"):
        shutil.copytree(adapter_dirs[name], scan_dir / "pool" / name)
    other.mkdir()
    scan = console("pool", "scan", "pool", "--base-model", tiny_model_dir, "--db", "pool.db", "--no-require-license",
                   cwd=scan_dir, timeout=120)
    assert scan.returncode == 0, scan.stderr
    assert {row["id"] for row in _catalog_rows(scan_dir / "pool.db")} == {"all_r4", "qv_r8"}
    merged = console("merge", "--model", tiny_model_dir, "--db", "../here/pool.db", "--ids", "all_r4", "qv_r8",
                     "--method", "average", "--out", "merged", cwd=other, timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert (other / "merged" / "adapter_model.safetensors").is_file()


# -- 9. terminal and file injection ------------------------------------------------------------------------------

EVIL = "evil\x1b[31mred\nfake accepted row"


def test_control_characters_are_escaped_in_listings_errors_and_cards(tmp_path, tiny_model_dir, adapter_dirs):
    source = tmp_path / "pool"
    shutil.copytree(adapter_dirs["all_r4"], source / EVIL)
    shutil.copytree(adapter_dirs["qv_r8"], source / "plain")
    (source / EVIL / "README.md").write_text('---\nlicense: "mit\\u001b[2J|x"\nauthor: "me\\u001b]0;pwned\\u0007"\n'
                                             "---\n")
    db = tmp_path / "pool.db"
    scan = console("pool", "scan", source, "--base-model", tiny_model_dir, "--db", db, "--no-require-license",
                   timeout=120)
    assert scan.returncode == 0, scan.stderr
    listing = console("pool", "list", "--db", db, timeout=60)
    assert "\x1b" not in listing.stdout and len(listing.stdout.splitlines()) == 2, listing.stdout
    assert "\\x1b[31m" in listing.stdout and "\\n" in listing.stdout
    shown = console("pool", "show", EVIL, "--db", db, timeout=60)
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert not any(line.startswith("fake") for line in shown.stdout.splitlines())
    stats = console("pool", "stats", "--db", db, timeout=60)
    assert stats.returncode == 0 and "\x1b" not in stats.stdout
    line = assert_usage_error(console("pool", "show", "nope\x1b[2J", "--db", db, timeout=60), "nope")
    assert "\x1b" not in line
    out = tmp_path / "merged"
    merged = console("merge", "--model", tiny_model_dir, "--db", db, "--ids", EVIL, "plain", "--method", "average",
                     "--out", out, timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert "\x1b" not in merged.stderr
    card = (out / "README.md").read_text()
    assert "\x1b" not in card and "\x07" not in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and "coefficient" not in line][1:]
    assert len(rows) == 2 and all(line.count("|") - line.count("\\|") == 4 for line in rows), rows


# -- 10. experiment names become paths only after validation -----------------------------------------------------


@pytest.mark.parametrize("name", ["../../../ESCAPED", "a/b", "..", ".hidden", "x\ny"])
def test_task_names_that_are_not_plain_names_are_refused(tmp_path, tiny_model_dir, colour_task_dir, pool_db, name):
    config = _experiment(tmp_path / "exp.yaml", tiny_model_dir, pool_db, {name: colour_task_dir})
    line = assert_usage_error(console("experiment", "run", config, "--results", tmp_path / "r" / "results.db",
                                      timeout=120), str(config), "field tasks")
    assert "\n" not in line
    assert not (tmp_path / "r").exists()
    assert not any("ESCAPED" in p.name for p in tmp_path.parent.parent.rglob("*ESCAPED*"))


# -- 11. read-only and full disks --------------------------------------------------------------------------------


def test_results_in_a_read_only_folder_are_read_not_written(tmp_path, tiny_model_dir, colour_task_dir, pool_db):
    folder = tmp_path / "ro"
    results = _empty_results(folder / "results.db")
    config = _experiment(tmp_path / "exp.yaml", tiny_model_dir, pool_db, {"colour": colour_task_dir})
    with read_only(folder):
        report = console("report", results, "--out", tmp_path / "report", prefix=AS_USER, timeout=120)
        status = console("experiment", "status", config, "--results", results, prefix=AS_USER, timeout=120)
        run = console("experiment", "run", config, "--results", results, prefix=AS_USER, timeout=120)
        assert sorted(p.name for p in folder.iterdir()) == ["results.db"]
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "report.md").is_file()
    assert status.returncode == 0, status.stderr
    assert "1 runs, 0 recorded" in status.stdout and "1 to do" in status.stdout, status.stdout
    line = assert_usage_error(run, str(results))
    assert "read-only" in line or "permission denied" in line.lower()


def _file_size_limit(limit: int):
    """A ``preexec_fn``: writes beyond ``limit`` bytes per file fail (EFBIG), as on a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_merge_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_model_dir, adapter_dirs):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "X"
    line = assert_error_line(console(*average_merge_args(tiny_model_dir, adapter_dirs, out), timeout=120,
                               preexec_fn=_file_size_limit(2048)), str(out))
    assert "space" in line and "needs more than" in line, line
    assert list(work.iterdir()) == []


def test_scan_onto_a_full_disk_is_one_line_and_keeps_the_catalog(tmp_path, tiny_model_dir, adapter_dirs):
    source = tmp_path / "pool"
    shutil.copytree(adapter_dirs["all_r4"], source / "all_r4")
    db = tmp_path / "pool.db"
    first = console("pool", "scan", source, "--base-model", tiny_model_dir, "--db", db, "--no-require-license",
                    timeout=120)
    assert first.returncode == 0, first.stderr
    for name in ("qv_r8", "rslora_r2", "patterns"):
        shutil.copytree(adapter_dirs[name], source / name)
    line = assert_error_line(console("pool", "scan", source, "--base-model", tiny_model_dir, "--db", db,
                               "--no-require-license", preexec_fn=_file_size_limit(db.stat().st_size), timeout=120),
                       str(db))
    assert "space" in line, line
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "all_r4" in {row["id"] for row in _catalog_rows(db)}


# -- 12. scan cost -----------------------------------------------------------------------------------------------


def test_sparse_huge_weights_are_refused_from_the_header(tmp_path, tiny_model_dir, adapter_dirs):
    source = tmp_path / "pool"
    shutil.copytree(adapter_dirs["all_r4"], source / "huge")
    weights = source / "huge" / "adapter_model.safetensors"
    os.truncate(weights, 50 * 1024**3)  # sparse: 50 GB long, no blocks written
    db = tmp_path / "pool.db"
    # hashing 50 GB takes far longer than 2 s: a timeout reason would mean the file was read before the header
    scan = console("pool", "scan", source, "--base-model", tiny_model_dir, "--db", db, "--no-require-license",
                   "--time-limit", "2", "--json", timeout=60)
    assert scan.returncode == 0, scan.stderr
    (row,) = _catalog_rows(db)
    assert row["status"] == "rejected" and list(row["reasons"]) == ["corrupt"], row
    shown = json.loads(console("pool", "show", "huge", "--db", db, "--json", timeout=60).stdout)
    assert "unused bytes after the last tensor" in shown["details"]["corrupt"] and shown["sha256"] is None

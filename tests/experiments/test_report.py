"""The report: files exist, and its tables equal an independent SQL aggregation of the results."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from lora_recycle.cli import main

MAIN = "kind = 'merge' AND pool = 'recycled' AND random_init = 0 AND exclude_top = 0"


def _per_seed(conn, where: str, params=()) -> dict[tuple, dict[int, float]]:
    """{(method, k, with_target): {seed: mean accuracy over tasks}} straight from SQL."""
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    query = (f"SELECT method, k, with_target, seed, AVG(accuracy) FROM runs WHERE {where} "
             "GROUP BY method, k, with_target, seed")
    for method, k, with_target, seed, mean in conn.execute(query, params):
        out[(method, k, bool(with_target))][seed] = mean
    return out


def _mean_std(by_seed: dict[int, float]) -> tuple[float, float]:
    values = list(by_seed.values())
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@pytest.fixture(scope="module")
def written_report(smoke_results, tmp_path_factory) -> tuple[Path, Path, dict]:
    """``report --json`` on the smoke results, written once per module by the fixture itself (a test reading the
    report must not depend on another test having written it: xdist may run them on different workers)."""
    out = tmp_path_factory.mktemp("report")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(smoke_results["results"]), "--out", str(out), "--json"]) == 0
    return out, smoke_results["results"], json.loads(printed.getvalue())


@pytest.fixture(scope="module")
def report(written_report) -> tuple[Path, Path]:
    return written_report[:2]


def test_report_files_and_table2(written_report):
    out, results, printed = written_report
    for name in ("report.md", "tables.json", "fig2_improvement.png", "fig3_accuracy_vs_k.png",
                 "fig4_coefficients.png", "fig5_in_house.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "fig2_improvement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert printed["skipped"] == {}
    conn = sqlite3.connect(results)
    expected = _per_seed(conn, MAIN)
    table = {(e["name"], e["k"]): e for e in printed["table2"]}
    assert {(m, k) for m, k, _ in expected} | {("prompting", None), ("target_lora", None)} == set(table)
    for (method, k, with_target), by_seed in expected.items():
        cell = table[(method, k)]["with_target" if with_target else "without_target"]
        mean, std = _mean_std(by_seed)
        assert cell["mean"] == pytest.approx(mean) and cell["std"] == pytest.approx(std)
        assert cell["seeds"] == 2 and cell["tasks"] == 2
    for kind in ("prompting", "target_lora"):
        by_seed = {s: m for s, m in conn.execute(
            "SELECT seed, AVG(accuracy) FROM runs WHERE kind = ? GROUP BY seed", (kind,))}
        assert table[(kind, None)]["without_target"]["mean"] == pytest.approx(_mean_std(by_seed)[0])
    markdown = (out / "report.md").read_text()
    assert "| ours (2) |" in markdown and "| prompting |" in markdown and "![Figure 3" in markdown
    # every table and accuracy figure names its metric (the smoke tasks are multiple choice, scored by log-likelihood)
    assert printed["metrics"] == ["choice log-likelihood accuracy"]
    assert markdown.count("Metric: choice log-likelihood accuracy.") >= 2 + 3
    # the paper's own Table 2 numbers stand beside ours, once per method it ran
    assert table[("ours", 2)]["paper"] == {"row": "Ours (30)", "without_target": 0.652, "with_target": 0.675}
    assert table[("target_lora", None)]["paper"]["without_target"] == 0.657
    assert "| paper's row | paper w/o | paper w/ |" in markdown and "| Ours (30) | 0.652 | 0.675 |" in markdown


def test_improvement_and_curves_match_sql(report):
    out, results = report
    tables = json.loads((out / "tables.json").read_text())
    conn = sqlite3.connect(results)
    prompting = {s: m for s, m in conn.execute("SELECT seed, AVG(accuracy) FROM runs WHERE kind = 'prompting' "
                                               "GROUP BY seed")}
    target = {s: m for s, m in conn.execute("SELECT seed, AVG(accuracy) FROM runs WHERE kind = 'target_lora' "
                                            "GROUP BY seed")}
    rows = {(e["method"], e["with_target"]): e for e in tables["improvement"]}
    for (method, k, with_target), by_seed in _per_seed(conn, MAIN).items():
        entry = rows[(f"{method} ({k if k is not None else 'all'})", with_target)]
        for base, key in ((prompting, "vs_prompting"), (target, "vs_target_lora")):
            gains = {s: 100 * (v - base[s]) / base[s] for s, v in by_seed.items() if base[s]}
            if gains:
                assert entry[key]["mean"] == pytest.approx(_mean_std(gains)[0])
    # Figure 3: every (series, with target, k) point equals the SQL mean over seeds of task means
    curve = {(p["series"], p["with_target"], p["k"]): p for p in tables["k_curve"]}
    where = "kind = 'merge' AND pool = 'recycled' AND k IS NOT NULL AND random_init = ?"
    for flag, suffix in ((0, ""), (1, " random-init")):
        for (method, k, with_target), by_seed in _per_seed(conn, where, (flag,)).items():
            assert curve[(method + suffix, with_target, k)]["mean"] == pytest.approx(_mean_std(by_seed)[0])
    # Figure 5: in-house and exclude-top-m points
    in_house = _per_seed(conn, "pool = 'in_house' AND exclude_top = 0")
    points = {(p["series"], p["k"]): p for p in tables["in_house"]}
    for (_, k, _), by_seed in in_house.items():
        assert points[("in-house", k)]["mean"] == pytest.approx(_mean_std(by_seed)[0])
    skipped = {p["m"]: p for p in tables["exclude_top"] if p["series"] == "in-house"}
    for m, mean in conn.execute("SELECT exclude_top, AVG(accuracy) FROM runs WHERE pool = 'in_house' AND k = 2 "
                                "GROUP BY exclude_top"):
        assert skipped[m]["mean"] == pytest.approx(mean)  # one seed-balanced grid: mean of means = mean
    # Figure 4: each run's coefficients as learned, per role, equal the mean over the run's groups in the database
    points = tables["coefficients"]["points"]
    learned = conn.execute(f"SELECT task, seed, with_target, coefficients FROM runs WHERE {MAIN} AND method = 'ours'")
    for task, seed, with_target, coefficients in learned:
        groups = json.loads(coefficients)
        target = [g["target-lora"] for g in groups.values() if "target-lora" in g]
        mine = {p["role"]: p for p in points if (p["method"], p["task"], p["seed"], p["with_target"])
                == ("ours (2)", task, seed, bool(with_target))}
        assert ("target" in mine) == bool(with_target)
        if target:
            assert mine["target"]["mean"] == pytest.approx(statistics.fmean(target))
            assert mine["target"]["max"] == pytest.approx(max(target))
    summary = {(s["method"], s["with_target"], s["role"]): s for s in tables["coefficients"]["summary"]}
    cell = summary[("ours (2)", True, "target")]
    assert cell["runs"] == 4 and cell["drawn_from"] == "seeds 0-1 x 2 tasks"
    markdown = (out / "report.md").read_text()
    assert "| ours (2) | yes | 4 (seeds 0-1 x 2 tasks) |" in markdown
    from lora_recycle.experiments.coefficients import FRESH_ID
    from lora_recycle.models.fresh_lora import FRESH_LORA_ID

    assert FRESH_ID == FRESH_LORA_ID  # pi-Tuning's fresh LoRA is told apart from the recycled ones


def test_missing_figures_are_skipped_with_a_note(capsys, tmp_path, smoke_results):
    results = tmp_path / "baselines.db"
    shutil.copy(smoke_results["results"], results)
    conn = sqlite3.connect(results)
    conn.execute("DELETE FROM runs WHERE kind = 'merge'")
    conn.commit()
    conn.close()
    capsys.readouterr()
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "skipped fig3_accuracy_vs_k" in err and "skipped fig5_in_house" in err
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "_Skipped:" in markdown and "| target_lora |" in markdown
    assert not (tmp_path / "out" / "fig3_accuracy_vs_k.png").exists()


def test_report_on_a_missing_file_is_a_user_error(capsys, tmp_path):
    assert main(["report", str(tmp_path / "none.db"), "--out", str(tmp_path / "o")]) == 2
    assert "results database not found" in capsys.readouterr().err


def test_a_k_curve_compares_its_ks_on_the_seeds_every_k_ran():
    """A study sweeps k on seed 0 only: the k = 10 point (run on seeds 0-2) is then its seed-0 value."""
    from lora_recycle.experiments.report import k_curve

    def run(k, seed, accuracy):
        return {"kind": "merge", "pool": "recycled", "method": "ours", "random_init": False, "with_target": True,
                "k": k, "seed": seed, "task": "t", "accuracy": accuracy}

    rows = [run(5, 0, 0.5), run(10, 0, 0.6), run(10, 1, 0.9), run(10, 2, 0.9)]
    assert [(p["k"], p["mean"], p["seeds"]) for p in k_curve(rows)] == [(5, 0.5, 1), (10, 0.6, 1)]


def test_table2_averages_only_the_seeds_that_ran_every_task():
    """Seed 1 under way (one of two tasks): its lone task must not stand for a seed's average."""
    from lora_recycle.experiments.report import table2

    def run(task, seed, accuracy, kind="merge"):
        return {"kind": kind, "pool": "recycled" if kind == "merge" else "none", "method": "ours",
                "random_init": False, "exclude_top": 0, "with_target": False, "k": 10, "seed": seed, "task": task,
                "accuracy": accuracy}

    rows = [run("a", 0, 0.2), run("b", 0, 0.6), run("a", 1, 0.9), run("a", 2, 0.4), run("b", 2, 0.8),
            run("a", 0, 0.1, "prompting"), run("b", 0, 0.3, "prompting"), run("a", 1, 0.5, "prompting")]
    ours, prompting = table2(rows)
    assert ours["without_target"]["per_seed"] == {"0": pytest.approx(0.4), "2": pytest.approx(0.6)}
    assert (ours["without_target"]["seeds"], ours["without_target"]["tasks"]) == (2, 2)
    assert ours["with_target"] is None
    assert prompting["without_target"]["per_seed"] == {"0": pytest.approx(0.2)}


def test_an_untrained_target_lora_is_flagged(capsys, tmp_path, smoke_results):
    """A target LoRA that kept its B = 0 start (best step 0) is the base model: the report and the run log say so."""
    from lora_recycle.experiments.runner import untrained_target_warning

    results = tmp_path / "flagged.db"
    shutil.copy(smoke_results["results"], results)
    conn = sqlite3.connect(results)
    run_id, task, seed, metrics = conn.execute(
        "SELECT id, task, seed, metrics FROM runs WHERE kind = 'target_lora' ORDER BY task, seed LIMIT 1").fetchone()
    metrics = json.loads(metrics)
    assert metrics["target_lora"]["best_step"] > 0  # the smoke grid's LoRAs did train
    assert untrained_target_warning({"task": task, "seed": seed, "metrics": metrics}) is None
    metrics["target_lora"]["best_step"] = 0
    metrics["target_lora"]["best_validation_loss"] = metrics["target_lora"]["initial_validation_loss"]
    conn.execute("UPDATE runs SET metrics = ? WHERE id = ?", (json.dumps(metrics), run_id))
    conn.commit()
    conn.close()
    warning = untrained_target_warning({"task": task, "seed": seed, "metrics": metrics})
    assert f"{task} (seed {seed}) kept its untrained start" in warning
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    tables = json.loads((tmp_path / "out" / "tables.json").read_text())
    flagged = [(r["task"], r["seed"]) for r in tables["target_lora_training"] if r["untrained"]]
    assert flagged == [(task, seed)]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "**Warning:** 1 target-task LoRA(s) kept their untrained start" in markdown
    assert f"{task} (seed {seed})." in markdown

"""Aggregate a results database into the paper's tables and write a Markdown report with PNG figures.

Every number is an average over tasks per seed, then a mean and a sample standard deviation over
seeds (``std`` is 0 with one seed), so the spread shown is the seed-to-seed spread of the study:

- ``table2``: mean accuracy per method (label ``method (k)``, ``(all)`` without selection) without and
  with the target-task LoRA, on the recycled pool without controls; plus ``prompting`` and ``target_lora``;
  each method the paper ran carries the paper's own Table 2 numbers on its best-covered row (``paper``);
- ``improvement`` (Figure 2): per seed, ``100 * (method - baseline) / baseline`` of the task-averaged
  accuracies over the tasks both have, against prompting and against the target-task LoRA;
- ``k_curve`` (Figure 3): accuracy against k per method (and its random-init control);
- ``coefficients`` (Figure 4): every learned merge's coefficient values, per run averaged over its groups,
  for the target-task LoRA, the top recycled adapter (by selection score) and the others
  (``experiments/coefficients.py``);
- ``in_house`` and ``exclude_top`` (Figure 5): in-house pool against recycled pool over k, and the
  exclude-top-m ablation.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lora_recycle.experiments.findings import MEANINGFUL_GAIN, is_main_merge, k_order
from lora_recycle.experiments.paper import PAPER_SETTING
from lora_recycle.experiments.results import ResultsStore
from lora_recycle.serialization import json_safe

Row = dict[str, Any]


def seed_stat(values_by_seed: dict[int, float]) -> dict[str, Any] | None:
    """``{"mean", "std", "seeds", "per_seed"}`` over seeds (sample std, 0 for one seed); None if empty."""
    values = [v for v in values_by_seed.values() if not math.isnan(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "seeds": len(values),
            "per_seed": {str(s): v for s, v in sorted(values_by_seed.items())}}


def task_means(rows: Iterable[Row], tasks: set[str] | None = None) -> dict[int, float]:
    """``{seed: mean accuracy over tasks}`` (only ``tasks`` if given)."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if tasks is None or row["task"] in tasks:
            by_seed[row["seed"]].append(row["accuracy"])
    return {seed: statistics.fmean(v) for seed, v in sorted(by_seed.items())}


def _n_tasks(rows: list[Row]) -> int:
    return len({r["task"] for r in rows})


def complete_seeds(rows: list[Row]) -> list[Row]:
    """The rows of the seeds that ran every task of ``rows``: a seed still under way would average other tasks."""
    tasks = {r["task"] for r in rows}
    by_seed = _group(rows, lambda r: r["seed"])
    return [r for group in by_seed.values() if {g["task"] for g in group} == tasks for r in group]


def method_label(row: Row) -> str:
    """``method (k)``, saying when the row is the mean of learning-rate variants (``ours (10)``,
    ``pi_tuning (10), mean of lr 0.0001, 5e-05``)."""
    return f"{row['method']} ({row['k'] if row['k'] is not None else 'all'})" + lr_note(row)


def lr_note(row: Row) -> str:
    """``, mean of lr a, b`` for a row averaged over learning-rate variants (``experiments/lr_variants.py``)."""
    lrs = row.get("lr_variants")
    return f", mean of lr {', '.join(f'{lr:g}' for lr in lrs)}" if lrs else ""


def _group(rows: Iterable[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    groups: dict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(groups)


def table2(rows: list[Row]) -> list[dict[str, Any]]:
    """Average accuracy per method without / with the target-task LoRA, then the two baselines."""
    out = []
    merges = _group((r for r in rows if is_main_merge(r)), lambda r: (r["method"], r["k"]))
    for (method, k), group in sorted(merges.items(), key=lambda item: (item[0][0], k_order(item[0][1]))):
        entry: dict[str, Any] = {"method": method_label(group[0]), "name": method, "k": k}
        if group[0].get("lr_variants"):  # only then, so reports of one-lr studies keep their tables as published
            entry["lr_variants"] = group[0]["lr_variants"]
        for flag, column in ((False, "without_target"), (True, "with_target")):
            cell = complete_seeds([r for r in group if r["with_target"] == flag])
            stat = seed_stat(task_means(cell))
            entry[column] = None if stat is None else {**stat, "tasks": _n_tasks(cell)}
        out.append(entry)
    for kind in ("prompting", "target_lora"):
        cell = complete_seeds([r for r in rows if r["kind"] == kind])
        stat = seed_stat(task_means(cell))
        if stat is not None:
            out.append({"method": kind, "name": kind, "k": None, "without_target": {**stat, "tasks": _n_tasks(cell)},
                        "with_target": None})
    return _with_paper(out)


def _with_paper(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put the paper's Table 2 row of each method on its best-covered entry (most seeds x tasks, then largest k)."""
    from lora_recycle.experiments.paper import TABLE2

    def coverage(entry: dict[str, Any]) -> tuple:
        cells = [c for c in (entry["without_target"], entry["with_target"]) if c]
        return len(cells), sum(c["seeds"] * c["tasks"] for c in cells), entry["k"] or 0

    best = {}
    for entry in entries:
        name = entry["name"]
        if name in TABLE2 and (name not in best or coverage(entry) > coverage(best[name])):
            best[name] = entry
    for entry in entries:
        row = TABLE2.get(entry["name"]) if best.get(entry["name"]) is entry else None
        entry["paper"] = None if row is None else {"row": row[0], "without_target": row[1], "with_target": row[2]}
    return entries


def relative_improvement(method_rows: list[Row], baseline_rows: list[Row]) -> dict[str, Any] | None:
    """Per seed, % change of the task-averaged accuracy over the baseline's, on the tasks both have."""
    per_seed: dict[int, float] = {}
    base_by_seed = _group(baseline_rows, lambda r: r["seed"])
    for seed, group in _group(method_rows, lambda r: r["seed"]).items():
        base = base_by_seed.get(seed, [])
        shared = {r["task"] for r in group} & {r["task"] for r in base}
        if not shared:
            continue
        m = task_means(group, shared)[seed]
        b = task_means(base, shared)[seed]
        per_seed[seed] = float("nan") if b == 0 else 100.0 * (m - b) / b
    return seed_stat(per_seed)


def improvement(rows: list[Row]) -> list[dict[str, Any]]:
    """Figure 2's numbers: % improvement over prompting and over the target-task LoRA per method."""
    prompting = [r for r in rows if r["kind"] == "prompting"]
    target = [r for r in rows if r["kind"] == "target_lora"]
    out = []
    merges = _group((r for r in rows if is_main_merge(r)), lambda r: (r["method"], r["k"], r["with_target"]))
    for key in sorted(merges, key=lambda key: (key[0], k_order(key[1]), key[2])):
        group = merges[key]
        out.append({"method": method_label(group[0]), "with_target": key[2],
                    "vs_prompting": relative_improvement(group, prompting),
                    "vs_target_lora": relative_improvement(group, target)})
    return out


def k_curve(rows: list[Row]) -> list[dict[str, Any]]:
    """Figure 3's points: accuracy per (method, random-init, with target, k) on the recycled pool."""
    recycled = [r for r in rows if r["kind"] == "merge" and r["pool"] == "recycled" and r["k"] is not None]
    series = _group(recycled, lambda r: (r["method"], r["random_init"], r["with_target"]))
    out = []
    for (method, random_init, with_target), runs in sorted(series.items()):
        by_k = _group(runs, lambda r: r["k"])
        # a curve compares its ks on the seeds every k ran (a study may sweep k on fewer seeds than k = 10)
        seeds = set.intersection(*({r["seed"] for r in group} for group in by_k.values()))
        for k, group in sorted(by_k.items()):
            out.append({"series": method + (" random-init" if random_init else ""), "with_target": with_target,
                        "k": k, **(seed_stat(task_means(r for r in group if r["seed"] in seeds)) or {})})
    return out


def in_house_curve(rows: list[Row]) -> list[dict[str, Any]]:
    """Figure 5a: in-house against recycled pool (and random-init), with the target-task LoRA, over k."""
    in_house = [r for r in rows if r["pool"] == "in_house" and r["exclude_top"] == 0]
    if not in_house:
        return []
    methods = {r["method"] for r in in_house}
    out = []
    series = {
        "in-house": in_house,
        "recycled": [r for r in rows if is_main_merge(r) and r["with_target"] and r["method"] in methods],
        "random-init": [r for r in rows if r["kind"] == "merge" and r["pool"] == "recycled" and r["random_init"]
                        and r["with_target"] and r["method"] in methods],
    }
    for name, group in series.items():
        for k, cell in sorted(_group(group, lambda r: r["k"]).items()):
            out.append({"series": name, "k": k, **(seed_stat(task_means(cell)) or {})})
    return out


def exclude_top_curve(rows: list[Row]) -> list[dict[str, Any]]:
    """Figure 5b: in-house merges at a fixed k with the top m in-house LoRAs left out, per m."""
    skipped = [r for r in rows if r["pool"] == "in_house" and r["exclude_top"] > 0]
    if not skipped:
        return []
    k = skipped[0]["k"]
    cells = _group((r for r in rows if r["pool"] == "in_house" and r["k"] == k), lambda r: r["exclude_top"])
    out = [{"series": "in-house", "k": k, "m": m, **(seed_stat(task_means(cell)) or {})}
           for m, cell in sorted(cells.items())]
    noise = [r for r in rows if r["kind"] == "merge" and r["pool"] == "recycled" and r["random_init"]
             and r["with_target"] and r["k"] == k]
    if noise:
        out.append({"series": "random-init", "k": k, "m": None, **(seed_stat(task_means(noise)) or {})})
    return out


def target_lora_training(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Per target-task LoRA run: its best step and validation losses, ``untrained`` when it kept its B = 0 start
    (best step 0: the base model, which makes every comparison against it on that task and seed meaningless)."""
    from lora_recycle.recipe.target import kept_untrained_start

    out = []
    for row in sorted((r for r in rows if r["kind"] == "target_lora"), key=lambda r: (r["task"], r["seed"])):
        record = (row.get("metrics") or {}).get("target_lora") or {}
        out.append({"task": row["task"], "seed": row["seed"], "accuracy": row["accuracy"],
                    "best_step": record.get("best_step"), "steps": (record.get("config") or {}).get("steps"),
                    "initial_validation_loss": record.get("initial_validation_loss"),
                    "best_validation_loss": record.get("best_validation_loss"),
                    "untrained": kept_untrained_start(record)})
    return out


def metrics_used(rows: Iterable[Row]) -> list[str]:
    """The test metrics the runs were scored with, by label (runs recorded before metrics were stored say so)."""
    from lora_recycle.tasks.metrics import metric_label

    names = {(r.get("metrics") or {}).get("metric") for r in rows}
    return sorted(metric_label(n) if n else "unrecorded (loglik for multiple choice, exact match otherwise)"
                  for n in names)


def build_tables(rows: list[Row]) -> dict[str, Any]:
    """Every table of the report, as plain JSON-ready data.

    A method run at several learning rates is one row throughout: per (task, seed) the mean of its variants,
    a (task, seed) without all of them left out and listed in ``lr_incomplete`` (``experiments/lr_variants.py``);
    the coefficients (Figure 4) are read from every run.
    """
    from lora_recycle.experiments.budget_curve import budget_curve
    from lora_recycle.experiments.coefficients import coefficient_points, coefficient_summary
    from lora_recycle.experiments.findings import findings, per_task_table, recipe_table
    from lora_recycle.experiments.lr_variants import average_lr_variants

    points = coefficient_points(rows)
    runs = len(rows)
    rows, lr_incomplete = average_lr_variants(rows)
    return {
        **({"lr_incomplete": lr_incomplete} if lr_incomplete else {}),
        "findings": findings(rows),
        "recipes": recipe_table(rows),
        "per_task": per_task_table(rows),
        "runs": runs,
        "metrics": metrics_used(rows),
        "tasks": sorted({r["task"] for r in rows}),
        "seeds": sorted({r["seed"] for r in rows}),
        "table2": table2(rows),
        "improvement": improvement(rows),
        "k_curve": k_curve(rows),
        "coefficients": {"summary": coefficient_summary(points), "points": points},
        "in_house": in_house_curve(rows),
        "exclude_top": exclude_top_curve(rows),
        "target_lora": seed_stat(task_means(r for r in rows if r["kind"] == "target_lora")),
        "target_lora_training": target_lora_training(rows),
        "budget": budget_curve(rows),
    }


def _fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None or math.isnan(stat["mean"]):
        return "–"
    spread = f" ± {stat['std']:.{digits}f}" if stat.get("seeds", 1) > 1 else ""
    return f"{stat['mean']:.{digits}f}{spread}"


def render_markdown(tables: dict[str, Any], figures: dict[str, Path | None], notes: dict[str, str],
                    source: str) -> str:
    """The report text: Table 2, Figure 2's numbers, and every figure (or why it was skipped)."""
    metric_line = f"Metric: {', '.join(tables.get('metrics') or ['unrecorded'])}."
    lines = [f"# lora-recycle report: `{Path(source).name}`", "",
             f"{tables['runs']} runs over {len(tables['tasks'])} task(s) ({', '.join(tables['tasks'])}) and "
             f"{len(tables['seeds'])} seed(s). Accuracy on the test split, averaged over tasks per seed "
             "(a cell averages the seeds that ran all of its tasks); ± is the standard deviation over seeds. "
             "With the target LoRA, a merge of k adapters holds it and "
             "the top k-1 selected.", "",
             "## Table 2: average accuracy", "", metric_line, "",
             f"The paper's columns are its own Table 2 ({PAPER_SETTING}; k = 30, pi-Tuning 20) on the row of ours "
             "that runs the same method with the most seeds: compare direction and size, not level (another "
             "model, pool and tasks).", "",
             "| method | w/o target LoRA | w/ target LoRA | seeds x tasks | paper's row | paper w/o | paper w/ |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for entry in tables["table2"]:
        paper = entry.get("paper") or {}
        cells = [_number(paper.get(key)) for key in ("without_target", "with_target")]
        lines.append(f"| {entry['method']} | {_fmt(entry['without_target'])} | {_fmt(entry['with_target'])} | "
                     f"{_coverage(entry)} | {paper.get('row', '')} | {cells[0] if paper else ''} | "
                     f"{cells[1] if paper else ''} |")
    lines += _lr_lines(tables)
    lines += _target_training_lines(tables)
    lines += ["", "## Figure 2: % improvement", "", metric_line, "",
              "| method | target LoRA in pool | vs prompting (%) | vs target LoRA (%) |", "| --- | --- | --- | --- |"]
    for entry in tables["improvement"]:
        lines.append(f"| {entry['method']} | {'yes' if entry['with_target'] else 'no'} | "
                     f"{_fmt(entry['vs_prompting'], 1)} | {_fmt(entry['vs_target_lora'], 1)} |")
    lines += _findings_lines(tables) + _budget_lines(tables, figures) + _recipe_lines(tables) + _per_task_lines(tables)
    titles = {"fig2_improvement": "Figure 2: improvement over the baselines",
              "fig3_accuracy_vs_k": "Figure 3: accuracy against k (selection and random-init control)",
              "fig4_coefficients": "Figure 4: learned coefficients of the target-task LoRA and the others",
              "fig5_in_house": "Figure 5: in-house pool and exclude-top-m ablation"}
    for key, title in titles.items():
        lines += ["", f"## {title}", ""]
        path = figures.get(key)
        lines.append(f"![{title}]({path.name})" if path is not None else f"_Skipped: {notes.get(key, 'no data')}._")
        if key == "fig4_coefficients":
            lines += _coefficient_lines(tables)
        elif path is not None:
            lines += ["", metric_line]
    return "\n".join(lines) + "\n"


def _lr_lines(tables: dict[str, Any]) -> list[str]:
    """How rows of several learning rates were read, and each (task, seed) left out for a missing one."""
    averaged = [e["method"] for e in tables["table2"] if e.get("lr_variants")]
    missing = tables.get("lr_incomplete") or []
    if not averaged and not missing:
        return []
    lines = ["", "A method run at several learning rates (as the paper reports pi-Tuning) is one row: per task and "
             "seed the mean of its learning rates' accuracies (and of their per-example correctness in the "
             "findings' intervals). A task and seed that has not run every one of them is left out, as a missing "
             "run is" + (":" if missing else ".")]
    for cell in missing:
        where = (" + target LoRA" if cell["with_target"] else "") + (" random-init" if cell["random_init"] else "") \
            + (" in-house" if cell["pool"] == "in_house" else "")
        lrs = ", ".join(f"{lr:g}" for lr in cell["missing_lrs"])
        k = cell["k"] if cell["k"] is not None else "all"
        lines.append(f"- {cell['method']} ({k}){where}, {cell['task']} seed {cell['seed']}: lr {lrs} not recorded")
    return lines


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


ROLE_COLUMNS = {"target": "target-task LoRA", "top": "top recycled", "fresh": "fresh LoRA (pi-Tuning)",
                "other": "each other recycled"}


def _coefficient_lines(tables: dict[str, Any]) -> list[str]:
    """Figure 4's table: per method (k) and pool, each role's coefficient over the runs it draws on."""
    summary = (tables.get("coefficients") or {}).get("summary") or []
    if not summary:
        return []
    roles = [r for r in ROLE_COLUMNS if any(s["role"] == r for s in summary)]
    lines = ["", "Coefficient values as learned (after the method's activation; no normalisation): per run the mean "
             "over its coefficient groups (one per module; one per model for LoraHub), then the mean over the runs, "
             "[lowest run, highest run], and the largest single group value. A coefficient of 1 keeps an adapter "
             "at full strength. pi-Tuning's are a softmax over the adapters (they sum to 1).", "",
             "| method (k) | target LoRA in pool | runs | " + " | ".join(ROLE_COLUMNS[r] for r in roles) + " |",
             "| --- | --- | --- |" + " --- |" * len(roles)]
    cells: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for s in summary:
        cells[(s["method"], s["with_target"])][s["role"]] = s
    for (method, with_target), by_role in cells.items():
        first = next(iter(by_role.values()))
        values = [(f"{c['mean']:.3f} [{c['lowest_run']:.3f}, {c['highest_run']:.3f}], max {c['max']:.3f}"
                   if (c := by_role.get(r)) else "–") for r in roles]
        lines.append(f"| {method} | {'yes' if with_target else 'no'} | {first['runs']} ({first['drawn_from']}) | "
                     + " | ".join(values) + " |")
    return lines


def _loss(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _target_training_lines(tables: dict[str, Any]) -> list[str]:
    """How each target-task LoRA trained, with a warning for any that kept its untrained start."""
    runs = tables.get("target_lora_training") or []
    if not runs:
        return []
    untrained = [f"{r['task']} (seed {r['seed']})" for r in runs if r["untrained"]]
    lines = ["", "## Target-task LoRA training", ""]
    if untrained:
        lines += [f"**Warning:** {len(untrained)} target-task LoRA(s) kept their untrained start (best step 0, "
                  f"so they are the base model): {', '.join(untrained)}. Comparisons against the target LoRA on "
                  "those cells are not meaningful.", ""]
    lines += ["| task | seed | best step / steps | validation loss: start → best | accuracy |",
              "| --- | --- | --- | --- | --- |"]
    for r in runs:
        lines.append(f"| {r['task']} | {r['seed']} | {r['best_step'] if r['best_step'] is not None else '–'} / "
                     f"{r['steps'] or '–'} | {_loss(r['initial_validation_loss'])} → {_loss(r['best_validation_loss'])}"
                     f" | {r['accuracy']:.3f} |")
    return lines


def _coverage(entry: dict[str, Any]) -> str:
    """``seeds x tasks`` of a Table 2 row (both columns, when they differ)."""
    cells = [f"{c['seeds']} x {c['tasks']}" for c in (entry["without_target"], entry["with_target"]) if c]
    return " / ".join(dict.fromkeys(cells)) or "–"


def _interval(data: dict[str, Any] | None) -> str:
    if not data:
        return "–"
    return f"{data['estimate']:+.3f} [{data['low']:+.3f}, {data['high']:+.3f}]"


def _findings_lines(tables: dict[str, Any]) -> list[str]:
    if not tables.get("findings"):
        return []
    lines = ["", "## The paper's findings on these runs", "",
             "Paired bootstrap over seeds and test examples (95% interval of the accuracy difference). Each claim is "
             "tested as the paper states it: one-sided (the difference is above 0) or equivalence (it lies within "
             "the margin); the verdict reads the whole interval against the margin (the outcomes are listed "
             f"below). The paper's column is the same difference in its Table 2 ({PAPER_SETTING}, k = 30).", "",
             "| | paper's finding | comparison | paper | ours [95% CI] | test | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in tables["findings"]:
        paper = f"{f['paper']:+.3f} ({f['paper_note']})" if f.get("paper") is not None else f.get("paper_note", "–")
        lines.append(f"| {f['question']} | {f['claim']} | {f['comparison']} | {paper} | {_interval(f['interval'])} | "
                     f"{f['rule']} | {f['verdict']} |")
    lines += ["", "Outcomes:"]
    for f in tables["findings"]:
        outcomes = "; ".join(f"**{name}** when {rule}" for name, rule in f["outcomes"].items())
        lines.append(f"- {f['question']} ({f['rule']}): {outcomes}.")
    return lines


def _budget_lines(tables: dict[str, Any], figures: dict[str, Path | None]) -> list[str]:
    """The budget sweep: accuracy, best step and the target LoRA's coefficient per step budget, with Q2's and
    Q3's comparisons at each budget (only when the results hold a sweep)."""
    entries = tables.get("budget") or []
    if not entries:
        return []
    first = entries[0]
    target = first.get("target_lora")
    left_out = first.get("incomplete_tasks") or []
    scope = (f"on the {first['tasks']} target(s) where every budget and its control ran"
             + (f" ({', '.join(left_out)} still under way, left out)" if left_out else ""))
    lines = ["", "## Accuracy against the merge budget", "",
             "The same merge with the target-task LoRA at each step budget (validation keeps the best "
             f"snapshot), beside its random-init control, {scope}; the target-task LoRA alone scores "
             f"{_fmt(target)} on them. Coefficients start at 0; the target LoRA's is its learned value (mean over "
             "runs of the mean over module groups; max: the largest group value of any run). Intervals are "
             "paired bootstraps; verdicts test equivalence within "
             f"±{MEANINGFUL_GAIN:g} (Q2: vs the target LoRA, Q3: vs the random-init control).", "",
             "| method (k) | steps | accuracy | random-init control | best step (median; last in) | target LoRA "
             "coef. mean / max | vs target LoRA [95% CI] | Q2 verdict | vs random-init [95% CI] | Q3 verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in entries:
        coef = e["target_coefficient"]
        coefs = f"{coef['mean']:.2f} / {coef['max']:.2f}" if coef["mean"] is not None else "–"
        best = f"{e['best_step']:g} ({e['last_step_best']}/{e['runs']})" if e["best_step"] is not None else "–"
        lines.append(f"| {e['method']} ({e['k']}) | {e['steps']} | {_fmt(e['accuracy'])} | {_fmt(e['random_init'])} "
                     f"| {best} | {coefs} | {_interval(e['vs_target_lora'])} | {e['vs_target_lora_verdict']} | "
                     f"{_interval(e['vs_random_init'])} | {e['vs_random_init_verdict']} |")
    path = figures.get("fig_budget")
    if path is not None:
        lines += ["", f"![Accuracy against the merge budget]({path.name})"]
    return lines


def _recipe_lines(tables: dict[str, Any]) -> list[str]:
    if not tables.get("recipes"):
        return []
    lines = ["", "## Every merge with the target-task LoRA against it, with its random-init control where run", "",
             "Paired bootstrap as in the findings, on the seeds each merge ran. The goal (the study's moonshot): "
             "the merge beats the target-task LoRA on at least 4 of 6 tasks by at least 0.02 on average, and "
             "beats its own random-init control (the gain comes from the recycled adapters); a merge run without "
             "a control cannot meet it.", "",
             "| merge (k) | seeds | tasks won | vs target LoRA [95% CI] | its random-init control vs target LoRA | "
             "merge vs control | meets the goal |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in tables["recipes"]:
        goal = "yes" if r["goal"] else ("no" if r.get("controlled", True) else "no (no control)")
        lines.append(f"| {method_label(r)} | {r.get('seeds', '–')} | {r['wins']}/{r['tasks']} | "
                     f"{_interval(r['vs_target_lora'])} | {_interval(r['control_vs_target_lora'])} | "
                     f"{_interval(r['vs_control'])} | {goal} |")
    return lines


def _per_task_lines(tables: dict[str, Any]) -> list[str]:
    per_task = tables.get("per_task") or {}
    if not per_task.get("rows"):
        return []
    tasks = per_task["tasks"]
    lines = ["", "## Per task (mean accuracy over seeds)", "", "| method | " + " | ".join(tasks) + " |",
             "| --- |" + " --- |" * len(tasks)]
    for label, cells in per_task["rows"].items():
        lines.append(f"| {label} | " + " | ".join(f"{cells[t]:.3f}" if t in cells else "–" for t in tasks) + " |")
    return lines


def _holds(folder: str | Path, path: str | Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved, so links and ``..`` cannot hide it)."""
    return Path(path).expanduser().resolve().is_relative_to(Path(folder).expanduser().resolve())


def _replace_report_files(built: Path, out_dir: Path) -> None:
    """Move the report files in ``built`` into ``out_dir`` one atomic rename each, dropping a previous report's
    figures that this one no longer draws; nothing else in ``out_dir`` (the results database) is touched."""
    import os
    import shutil

    fresh = {p.name for p in built.iterdir()}
    for old in out_dir.glob("fig*_*.png"):
        if old.name not in fresh:
            old.unlink()
    for name in sorted(fresh, key=lambda n: n == "report.md"):  # report.md last: it names the figures
        os.replace(built / name, out_dir / name)
    shutil.rmtree(built, ignore_errors=True)


def write_report(results_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write ``report.md``, ``tables.json`` and the PNG figures to ``out_dir``; return the tables and files.

    Written atomically (``outputs.atomic_dir``): a non-empty ``out_dir`` needs ``overwrite``, and a killed
    run leaves no report. When ``out_dir`` holds the results database itself (``report docs/study/results.db
    --out docs/study``), only the report's own files are replaced, each by one rename, and the database and
    its artifacts stay: ``--overwrite`` must never delete the results it reads.
    """
    import json

    from lora_recycle.experiments.figures import draw_figures
    from lora_recycle.extras import require_extra
    from lora_recycle.outputs import atomic_dir, check_out_dir

    require_extra("report", "report")  # before anything is written
    beside_results = _holds(out_dir, results_path)
    out_dir = check_out_dir(out_dir, overwrite or beside_results)
    with ResultsStore(results_path, create=False, read_only=True) as store:
        rows = store.rows()
    tables = build_tables(rows)
    staging = out_dir.parent / f".{out_dir.name}.report"  # ours alone: a leftover of a killed run is replaced
    with atomic_dir(staging if beside_results else out_dir, overwrite or beside_results) as partial:
        drawn, notes = draw_figures(tables, partial)
        (partial / "report.md").write_text(render_markdown(tables, drawn, notes, str(results_path)), encoding="utf-8")
        (partial / "tables.json").write_text(json.dumps(json_safe(tables), indent=2) + "\n", encoding="utf-8")
    if beside_results:
        _replace_report_files(staging, out_dir)
    figures = {k: str(out_dir / v.name) if v else None for k, v in drawn.items()}
    return {"report": str(out_dir / "report.md"), "figures": figures, "skipped": notes, "tables": tables}

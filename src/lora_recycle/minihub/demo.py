"""``lora-recycle demo``: the whole recycling story on the mini-hub, with an honest verdict table.

On one held-out target task: zero-shot prompting, a target-task LoRA, ``average`` of the pool, the
adaptive merge without and with the target-task LoRA, and the same merges over randomly
re-initialised adapters (does the gain come from the adapters' knowledge or from extra capacity?).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lora_recycle import __version__
from lora_recycle.minihub.demo_rows import DemoPlan, DemoRow, RowCache, RowJob, run_rows
from lora_recycle.minihub.hub import DEMO_FIELDS, build_hub, profile_workers
from lora_recycle.models.loading import load_base_model
from lora_recycle.pool.catalog import accepted_ids
from lora_recycle.recipe.pool import PoolRequest, selected_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.recipe.target import target_lora_dir
from lora_recycle.tasks import load_task
from lora_recycle.tasks.metrics import metric_label, resolve_metric
from lora_recycle.tuning.target_lora import TargetLoraConfig

__all__ = ["DemoRow", "RowCache", "budget_note", "demo_budgets", "demo_key", "render_table", "run_demo", "verdict",
           "write_report"]

DEMO_FORMAT = 2  # bump when a row's computation changes: cached rows of older runs are then recomputed
# 2: merges and scoring in the hub's precision (bf16 autocast where native)


BUDGET_READING = "docs/study/budget/report.md"  # the budget figure: how the study's answer depends on the steps


def demo_budgets(profile) -> tuple[int, int, int]:
    """A profile's demo budgets: merge steps, validation interval of the merge, target-task LoRA steps."""
    return profile.merge_steps, max(1, profile.merge_steps // 5), profile.target_lora_steps


def budget_note(profile) -> str:
    """The demo's budgets against the paper's (``ours``' preset steps, the target LoRA's default steps): a verdict
    drawn at fewer merge steps may be the budget's, not recycling's."""
    merge_steps, eval_every, target_steps = demo_budgets(profile)
    paper_merge, paper_target = preset("ours").steps, TargetLoraConfig().steps
    note = (f"Budgets: {merge_steps} merge steps (validation every {eval_every}), a {target_steps}-step "
            f"target-task LoRA; the paper's are {paper_merge} merge steps and a {paper_target}-step target-task LoRA.")
    if merge_steps < paper_merge:
        note += (f" At {merge_steps} merge steps the coefficients, which start at 0, cannot reach full strength: "
                 "the verdict may be the budget's, not recycling's.")
    if merge_steps < paper_merge or target_steps < paper_target:
        note += f" How the study's answer depends on the merge budget: {BUDGET_READING}."
    return note


def demo_key(hub, task, seed: int, pool_ids: list[str]) -> str:
    """What a demo row depends on: the hub, the task's rows (test ones too), the seed, the demo's sizes, the
    selected adapters and the package version."""
    sizes = {k: getattr(hub.profile, k) for k in DEMO_FIELDS}
    test = [[ex.input, ex.target, ex.choices] for ex in task.split("test")[: hub.profile.test_limit]]
    payload = json.dumps({"hub": hub.root.name, "task": task.content_hash(), "test": test, "seed": seed,
                          "sizes": sizes, "pool": pool_ids, "version": __version__, "format": DEMO_FORMAT},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def run_demo(profile: str = "small", cache_dir: Path | None = None, task_name: str | None = None, seed: int = 0,
             out_dir: Path = Path("demo-output"), log=print, workers: int | None = None,
             overwrite: bool = False) -> list[DemoRow]:
    """Build or reuse the mini-hub, run every row of the demo on one target task, write a report.

    ``workers`` processes run the rows side by side (default: as the hub build, one per core and at most 2 on
    a CPU, 1 for the tiny profile). ``out_dir`` is checked first and written atomically at the end; a
    non-empty one is replaced only with ``overwrite``.
    """
    from lora_recycle.errors import UserError
    from lora_recycle.minihub import demo_rows
    from lora_recycle.outputs import atomic_dir, check_out_dir

    check_out_dir(out_dir, overwrite)  # before the hub is built
    hub = build_hub(profile, cache_dir, seed)
    name = task_name or hub.target_tasks[0]
    if name not in hub.tasks:
        raise UserError(f"unknown task {name!r}; targets of this hub: {', '.join(hub.target_tasks)}")
    task = load_task(hub.tasks[name])
    model, tokenizer = load_base_model(hub.base_model)
    accepted = accepted_ids(hub.catalog)
    steps, eval_every, target_steps = demo_budgets(hub.profile)
    ours = preset("ours").with_overrides(steps=steps, eval_every=eval_every, seed=seed, k=hub.profile.demo_k)
    chosen = selected_adapters(PoolRequest(db=hub.catalog), ours, model, tokenizer, task)
    pool, scores = chosen.adapters, chosen.scores
    log(f"target task {name} ({task.type}); base {hub.base_model_id}; catalog {len(accepted)} accepted adapters "
        f"({len(hub.broken)} broken ones rejected); selected by evaluation: "
        + ", ".join(f"{a.adapter_id} ({scores[a.adapter_id]:.2f})" for a in pool))
    # the target-task LoRA is cached next to the hub, so a warm demo reuses it whatever --out is
    config = TargetLoraConfig(steps=target_steps, seed=seed, precision=hub.precision)
    plan = DemoPlan(hub.base_model, hub.base_model_id, hub.catalog, hub.tasks[name], hub.precision,
                    hub.profile.test_limit, seed, tuple(a.adapter_id for a in pool), ours, config,
                    target_lora_dir(hub.root, name, task, config, f"minihub:{hub.profile.name}:seed{seed}"),
                    hub.root / "demo" / f"{name}-{demo_key(hub, task, seed, [a.adapter_id for a in pool])}")
    jobs = [RowJob("prompting (zero-shot base)", "prompting"), RowJob("target-task LoRA", "target"),
            RowJob(f"average of the {len(pool)} selected", "average"), RowJob("ours", "ours"),
            RowJob("ours + target LoRA", "ours", with_target=True),
            RowJob("ours, random-init adapters", "ours", noise=True),
            RowJob("ours, random-init + target LoRA", "ours", with_target=True, noise=True),
            RowJob("arrow (routing, no task data)", "arrow"), RowJob("arrow + target LoRA", "arrow", with_target=True)]
    if workers is None:
        workers = profile_workers(hub.profile)
    demo_rows.share_model(hub.base_model, model, tokenizer)  # rows run here reuse the loaded model
    done = run_rows(plan, jobs, workers, lambda row: log(
        f"  {row.method:<34} test accuracy {row.accuracy:.3f} ({metric_label(row.metric)})"))
    rows = [done[job.label] for job in jobs]
    with atomic_dir(out_dir, overwrite) as partial:
        write_report(rows, name, hub, partial, metric_label(resolve_metric(task)), budget_note(hub.profile))
    return rows


def render_table(rows: list[DemoRow]) -> list[str]:
    """Markdown table rows with the change against prompting and against the target-task LoRA."""
    base = rows[0].accuracy
    target = next((r.accuracy for r in rows if r.method == "target-task LoRA"), float("nan"))
    lines = ["| method | test accuracy | vs prompting | vs target LoRA | note |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.method} | {r.accuracy:.3f} | {r.accuracy - base:+.3f} | {r.accuracy - target:+.3f} "
                     f"| {r.note} |")
    return lines


def verdict(rows: list[DemoRow]) -> str:
    """One honest sentence: did recycling beat a LoRA of your own, and was it transfer or regularisation?

    It ends by naming the metric the comparison used.
    """
    metric = f" (metric: {metric_label(rows[0].metric)})" if rows else ""
    return _verdict(rows) + metric


def _verdict(rows: list[DemoRow]) -> str:
    acc = {r.method: r.accuracy for r in rows}
    target = acc["target-task LoRA"]
    with_target = acc["ours + target LoRA"]
    noise = acc["ours, random-init + target LoRA"]
    if with_target <= target:
        return "Recycling did not beat training a LoRA of your own on this task."
    if noise >= with_target:
        return ("Recycling beat your own LoRA, but random-init adapters do as well: "
                "the gain looks like regularisation, not transfer.")
    return "Recycling beat your own LoRA and beat the random-init control: some knowledge transferred."


def write_report(rows: list[DemoRow], task: str, hub, out_dir: Path, metric: str = "accuracy",
                 budgets: str = "") -> Path:
    """``report.md`` (the table, the verdict and the budgets it was drawn at) and ``results.json``."""
    n = rows[0].n if rows else 0
    lines = [f"# lora-recycle demo: {task}", "",
             f"Profile `{hub.profile.name}`, base `{hub.base_model_id}`, {len(hub.adapters)} pool adapters "
             f"(k = {hub.profile.demo_k} adapters per merge, selected by evaluation; with the target-task LoRA it "
             f"comes first with the top k-1), {n} test examples. Metric: test-split {metric}.",
             "", *render_table(rows), "", verdict(rows), "", *([budgets, ""] if budgets else [])]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return path

"""``lora-recycle demo``: the whole recycling story on the mini-hub, with an honest verdict table.

On one held-out target task: zero-shot prompting, a target-task LoRA, ``average`` of the pool, the
adaptive merge without and with the target-task LoRA, and the same merges over randomly
re-initialised adapters (does the gain come from the adapters' knowledge or from extra capacity?).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lora_recycle import __version__
from lora_recycle.adapters import read_peft_adapter
from lora_recycle.minihub.hub import DEMO_FIELDS, build_hub
from lora_recycle.models.loading import load_base_model
from lora_recycle.recipe import TARGET_ADAPTER_ID
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.pool import PoolRequest, finish_pool, selected_adapters
from lora_recycle.recipe.presets import preset
from lora_recycle.recipe.target import cached_target_lora, target_lora_dir
from lora_recycle.routing.arrow import routed_precision, scoring_model
from lora_recycle.routing.recipe import route_catalog
from lora_recycle.selection.from_catalog import accepted_ids
from lora_recycle.tasks import load_task
from lora_recycle.tasks.scoring import evaluate_task, metric_label, resolve_metric
from lora_recycle.tuning.precision import attention_for, autocast
from lora_recycle.tuning.target_lora import TargetLoraConfig

DEMO_FORMAT = 2  # bump when a row's computation changes: cached rows of older runs are then recomputed
# 2: merges and scoring in the hub's precision (bf16 autocast where native)


@dataclass
class DemoRow:
    method: str
    accuracy: float
    n: int
    note: str = ""
    metric: str = "loglik"


class RowCache:
    """The demo's finished rows, one JSON file each under ``directory``: a warm demo (same hub, task, seed,
    demo sizes, selected adapters and package version) prints them without recomputing, and an interrupted
    one resumes at the first missing row."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, method: str) -> Path:
        return self.directory / (hashlib.sha256(method.encode()).hexdigest()[:12] + ".json")

    def get(self, method: str) -> DemoRow | None:
        path = self._path(method)
        return DemoRow(**json.loads(path.read_text())) if path.is_file() else None

    def put(self, row: DemoRow) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self._path(row.method).with_suffix(".partial")
        partial.write_text(json.dumps(asdict(row)) + "\n")
        partial.replace(self._path(row.method))


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
             out_dir: Path = Path("demo-output"), log=print) -> list[DemoRow]:
    """Build or reuse the mini-hub, run every row of the demo on one target task, write a report."""
    from lora_recycle.errors import UserError

    hub = build_hub(profile, cache_dir, seed)
    name = task_name or hub.target_tasks[0]
    if name not in hub.tasks:
        raise UserError(f"unknown task {name!r}; targets of this hub: {', '.join(hub.target_tasks)}")
    task = load_task(hub.tasks[name])
    model, tokenizer = load_base_model(hub.base_model)
    limit = hub.profile.test_limit
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[DemoRow] = []

    def row(method: str, build: Callable[[], tuple[object, str]] = lambda: (None, ""), routed: bool = False) -> None:
        """Score what ``build()`` returns (an adapter or Arrow library, and a note), or reuse the cached row."""
        cached = cache.get(method)
        if cached is None:
            precision = routed_precision(hub.precision, routed)  # merges as the hub was trained
            with attention_for(model, precision), autocast(precision):
                adapter, note = build()
                with scoring_model(model, adapter) as scored:  # a LoRA folded in, or an Arrow library routed
                    result = evaluate_task(scored, tokenizer, task, "test", limit=limit)
            cached = DemoRow(method, result.accuracy, result.n, note, result.metric)
            cache.put(cached)
        rows.append(cached)
        log(f"  {method:<34} test accuracy {cached.accuracy:.3f} ({metric_label(cached.metric)})")

    accepted = accepted_ids(hub.catalog)
    steps = hub.profile.merge_steps
    ours = preset("ours").with_overrides(steps=steps, eval_every=max(1, steps // 5), seed=seed, k=hub.profile.demo_k)
    chosen = selected_adapters(PoolRequest(db=hub.catalog), ours, model, tokenizer, task)
    pool, scores = chosen.adapters, chosen.scores
    log(f"target task {name} ({task.type}); base {hub.base_model_id}; catalog {len(accepted)} accepted adapters "
        f"({len(hub.broken)} broken ones rejected); selected by evaluation: "
        + ", ".join(f"{a.adapter_id} ({scores[a.adapter_id]:.2f})" for a in pool))
    cache = RowCache(hub.root / "demo" / f"{name}-{demo_key(hub, task, seed, [a.adapter_id for a in pool])}")
    row("prompting (zero-shot base)")
    # cached next to the hub, so a warm demo reuses it whatever --out is
    config = TargetLoraConfig(steps=hub.profile.target_lora_steps, seed=seed, precision=hub.precision)
    where = target_lora_dir(hub.root, name, task, config, f"minihub:{hub.profile.name}:seed{seed}")
    target_dir, _ = cached_target_lora(model, tokenizer, task, config, where, base_model_id=hub.base_model_id)
    target = read_peft_adapter(target_dir, adapter_id=TARGET_ADAPTER_ID)
    row("target-task LoRA", lambda: (target, ""))
    row(f"average of the {len(pool)} selected",
        lambda: (merge_adapters(model, tokenizer, None, pool, preset("average")).adapter, ""))

    def adaptive(with_target: bool, noise: bool) -> Callable[[], tuple[object, str]]:
        # with the target-task LoRA: it first, then the top k - 1 selected (k adapters either way); random-init
        # noise is drawn per module with the std pooled over the recycled adapters of that merge
        def build():
            recycled = pool[: len(pool) - 1] if with_target else pool  # ranked best first
            outcome = merge_adapters(model, tokenizer, task, finish_pool(recycled, target if with_target else None,
                                                                         noise, seed), ours)
            loop = outcome.fit.loop
            return outcome.adapter, f"val loss {loop.initial_val_loss:.3f} -> {loop.best_val_loss:.3f}"
        return build

    for label, with_target, noise in (("ours", False, False), ("ours + target LoRA", True, False),
                                      ("ours, random-init adapters", False, True),
                                      ("ours, random-init + target LoRA", True, True)):
        row(label, adaptive(with_target, noise))
    arrow = preset("arrow").with_overrides(seed=seed)  # data-free: every accepted adapter, no selection

    def routed(with_target: bool) -> Callable[[], tuple[object, str]]:
        def build():
            library = out_dir / ("arrow-target" if with_target else "arrow")
            experts = route_catalog(model, tokenizer, task, hub.catalog, arrow, library,
                                    target if with_target else None, evaluate_split=None).pool["experts"]
            return library, f"{len(experts)} experts, top_k {arrow.top_k}; not one adapter"
        return build

    for label, with_target in (("arrow (routing, no task data)", False), ("arrow + target LoRA", True)):
        row(label, routed(with_target), routed=True)
    write_report(rows, name, hub, out_dir, metric_label(resolve_metric(task)))
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


def write_report(rows: list[DemoRow], task: str, hub, out_dir: Path, metric: str = "accuracy") -> Path:
    n = rows[0].n if rows else 0
    lines = [f"# lora-recycle demo: {task}", "",
             f"Profile `{hub.profile.name}`, base `{hub.base_model_id}`, {len(hub.adapters)} pool adapters "
             f"(k = {hub.profile.demo_k} adapters per merge, selected by evaluation; with the target-task LoRA it "
             f"comes first with the top k-1), {n} test examples. Metric: test-split {metric}.",
             "", *render_table(rows), "", verdict(rows), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return path

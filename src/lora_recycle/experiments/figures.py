"""PNG figures of a report, drawn from the aggregated tables with matplotlib's Agg canvas.

Every figure shows the spread over seeds (error bars of one standard deviation, or one point per
seed). A figure whose data is absent is skipped with a note instead of failing the report.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

PANELS = ((False, "without target-task LoRA"), (True, "with target-task LoRA"))
HIGHLIGHT = "tab:orange"


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)  # a private Agg canvas: no global backend switch, no display needed
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return path


def _points(stat: dict[str, Any]) -> list[float]:
    return [v for v in (stat.get("per_seed") or {}).values() if v is not None]


def figure_improvement(tables: dict[str, Any], path: Path) -> Path | None:
    """Figure 2: bars of % improvement over prompting and over the target LoRA, per method and pool."""
    entries = [e for e in tables["improvement"] if e["vs_prompting"] or e["vs_target_lora"]]
    if not entries:
        return None
    figure, axes = _figure(11, 4.2, 2)
    for ax, key, title in ((axes[0], "vs_prompting", "over prompting"), (axes[1], "vs_target_lora",
                                                                          "over the target-task LoRA")):
        labels = sorted({e["method"] for e in entries})
        width = 0.38
        for offset, (flag, name) in zip((-width / 2, width / 2), PANELS, strict=True):
            for i, label in enumerate(labels):
                stat = next((e[key] for e in entries if e["method"] == label and e["with_target"] == flag), None)
                if not stat:
                    continue
                colour = "tab:blue" if not flag else HIGHLIGHT
                ax.bar(i + offset, stat["mean"], width, yerr=stat["std"], color=colour, capsize=3, label=name)
                ax.scatter([i + offset] * len(_points(stat)), _points(stat), s=8, color="black", zorder=3)
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("% accuracy improvement")
        ax.set_title(f"Improvement {title}")
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=False))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    return _save(figure, path)


def figure_k_curve(tables: dict[str, Any], path: Path) -> Path | None:
    """Figure 3: accuracy against k per series, without and with the target LoRA (gray line: target LoRA)."""
    points = [p for p in tables["k_curve"] if p.get("mean") is not None]
    if not points:
        return None
    figure, axes = _figure(11, 4.2, 2)
    target = tables.get("target_lora")
    for ax, (flag, title) in zip(axes, PANELS, strict=True):
        series: dict[str, list[dict]] = defaultdict(list)
        for p in points:
            if p["with_target"] == flag:
                series[p["series"]].append(p)
        for name, group in sorted(series.items()):
            group.sort(key=lambda p: p["k"])
            ax.errorbar([p["k"] for p in group], [p["mean"] for p in group], yerr=[p["std"] for p in group],
                        marker="o", capsize=3, label=name, linestyle="--" if "random-init" in name else "-")
        if target:
            ax.axhline(target["mean"], color="gray", linewidth=1.2, label="target-task LoRA")
        ax.set_xlabel("k (selected adapters)")
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        if series or target:
            ax.legend(fontsize=8)
    return _save(figure, path)


ROLE_STYLE = {"target": (HIGHLIGHT, "target-task LoRA"), "top": ("tab:blue", "top recycled (by selection score)"),
              "fresh": ("tab:green", "fresh LoRA (pi-Tuning)"), "other": ("tab:gray", "other recycled (mean)")}


def figure_coefficients(tables: dict[str, Any], path: Path) -> Path | None:
    """Figure 4: each run's learned coefficient (mean over its groups) per role, one row per method (k) and pool,
    each row naming the runs it draws on. The dotted line at 1 is an adapter at full strength."""
    summary = tables["coefficients"]["summary"]
    points = tables["coefficients"]["points"]
    if not points:
        return None
    rows = list(dict.fromkeys((s["method"], s["with_target"], f"{s['runs']} runs, {s['drawn_from']}")
                              for s in sorted(summary, key=lambda s: s["with_target"])))
    figure, (ax,) = _figure(10, 1.6 + 0.42 * len(rows))
    for y, (method, flag, _) in enumerate(rows):
        for role, (colour, name) in ROLE_STYLE.items():
            values = [p["mean"] for p in points if p["method"] == method and p["with_target"] == flag
                      and p["role"] == role]
            offset = (list(ROLE_STYLE).index(role) - 1.5) * 0.12
            ax.scatter(values, [y + offset] * len(values), s=12, color=colour, zorder=3,
                       label=name if values else None)
    without = sum(not flag for _, flag, _ in rows)
    if 0 < without < len(rows):
        ax.axhline(without - 0.5, color="black", linewidth=0.6)
    ax.axvline(1.0, color="gray", linewidth=0.8, linestyle=":")
    ax.axvline(0.0, color="gray", linewidth=0.6)
    ax.set_yticks(range(len(rows)), [f"{m} {'+ target LoRA' if flag else '(no target LoRA)'}\n{runs}"
                                     for m, flag, runs in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("learned coefficient (mean over a run's groups; 1 = full strength)")
    ax.set_title("Learned merging coefficients, one point per run", fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    return _save(figure, path)


def figure_in_house(tables: dict[str, Any], path: Path) -> Path | None:
    """Figure 5: (a) in-house vs recycled vs random-init over k; (b) accuracy as the top m are left out."""
    curve = [p for p in tables["in_house"] if p.get("mean") is not None]
    ablation = [p for p in tables["exclude_top"] if p.get("mean") is not None]
    if not curve and not ablation:
        return None
    figure, axes = _figure(11, 4.2, 2)
    target = tables.get("target_lora")
    series: dict[str, list[dict]] = defaultdict(list)
    for p in curve:
        series[p["series"]].append(p)
    for name, group in sorted(series.items()):
        group.sort(key=lambda p: p["k"])
        axes[0].errorbar([p["k"] for p in group], [p["mean"] for p in group], yerr=[p["std"] for p in group],
                         marker="o", capsize=3, label=name)
    if target:
        for ax in axes:
            ax.axhline(target["mean"], color="gray", linewidth=1.2, label="target-task LoRA")
    axes[0].set_xlabel("k (with the target-task LoRA)")
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("(a) in-house vs recycled LoRAs")
    axes[0].legend(fontsize=8)
    skipped = sorted((p for p in ablation if p["m"] is not None), key=lambda p: p["m"])
    if skipped:
        axes[1].errorbar([p["m"] for p in skipped], [p["mean"] for p in skipped], yerr=[p["std"] for p in skipped],
                         marker="o", capsize=3, label=f"in-house, k={skipped[0]['k']}")
    for p in ablation:
        if p["m"] is None:
            axes[1].axhline(p["mean"], color="tab:red", linestyle="--", label=f"random-init, k={p['k']}")
    axes[1].set_xlabel("m (top in-house LoRAs left out)")
    axes[1].set_ylabel("accuracy")
    axes[1].set_title("(b) excluding the top-m LoRAs")
    axes[1].legend(fontsize=8)
    return _save(figure, path)


def figure_budget(tables: dict[str, Any], path: Path) -> Path | None:
    """Accuracy against merge steps: each sweep with the target LoRA, its random-init control (dashed), and the
    target-task LoRA alone (gray line); the paper's budget (100 steps) dotted."""
    entries = [e for e in tables.get("budget") or [] if e["accuracy"]]
    if not entries:
        return None
    figure, axes = _figure(6.5, 4.2)
    ax = axes[0]
    series: dict[tuple, list[dict]] = defaultdict(list)
    for e in entries:
        series[(e["method"], e["k"])].append(e)
    for (method, k), group in sorted(series.items()):
        steps = [e["steps"] for e in group]
        ax.errorbar(steps, [e["accuracy"]["mean"] for e in group], yerr=[e["accuracy"]["std"] for e in group],
                    marker="o", capsize=3, label=f"{method} (k={k}) + target LoRA")
        noise = [e for e in group if e["random_init"]]
        if noise:
            ax.errorbar([e["steps"] for e in noise], [e["random_init"]["mean"] for e in noise],
                        yerr=[e["random_init"]["std"] for e in noise], marker="s", capsize=3, linestyle="--",
                        label=f"random-init control (k={k}) + target LoRA")
    target = entries[0].get("target_lora") or tables.get("target_lora")  # on the sweep's complete cells
    if target:
        ax.axhline(target["mean"], color="gray", linewidth=1.2, label="target-task LoRA alone")
    ax.axvline(PAPER_MERGE_STEPS, color="gray", linestyle=":", linewidth=1, label="the paper's budget")
    ax.set_xscale("log")
    ax.set_xticks(sorted({e["steps"] for e in entries}), [str(s) for s in sorted({e["steps"] for e in entries})])
    ax.set_xlabel("merge steps (coefficient-tuning budget)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against the merge budget")
    ax.legend(fontsize=8)
    return _save(figure, path)


FIGURES = {
    "fig2_improvement": (figure_improvement, "no merge runs with prompting or target-LoRA baselines"),
    "fig3_accuracy_vs_k": (figure_k_curve, "no merge runs with a selected k"),
    "fig4_coefficients": (figure_coefficients, "no merge runs with learned coefficients"),
    "fig5_in_house": (figure_in_house, "no in-house pool runs (controls.in_house)"),
    "fig_budget": (figure_budget, None),  # only a budget sweep's results have it: its absence is no gap
}
PAPER_MERGE_STEPS = 100  # appendix C.1: 100 coefficient steps per adaptive merge


def draw_figures(tables: dict[str, Any], out_dir: Path) -> tuple[dict[str, Path | None], dict[str, str]]:
    """Draw every figure with data into ``out_dir``; returns ``(paths, notes on skipped figures)``."""
    paths: dict[str, Path | None] = {}
    notes: dict[str, str] = {}
    for name, (draw, why) in FIGURES.items():
        paths[name] = draw(tables, out_dir / f"{name}.png")
        if paths[name] is None and why is not None:
            notes[name] = why
    return paths, notes

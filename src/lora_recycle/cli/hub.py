"""``lora-recycle hub build`` and ``lora-recycle demo``: the built-in offline mini-hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lora_recycle.cli.core import OverwriteOpt
from lora_recycle.cli.output import emit_json, info

hub_app = typer.Typer(help="The built-in offline mini-hub (base model, tasks, adapter pool).", no_args_is_help=True)

ProfileOpt = Annotated[str, typer.Option("--profile", help="tiny, small or full.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Cache root (default ~/.cache/lora-recycle).")]


@hub_app.command("build")
def build(profile: ProfileOpt = "small", cache_dir: CacheOpt = None, seed: int = 0,
          workers: Annotated[int | None, typer.Option(
              "--workers", min=1, help="Processes training adapters side by side (default: 1 per core, at most 2, "
                                       "on a CPU).")] = None,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Build (or reuse) the mini-hub of a profile and print where it is."""
    from dataclasses import asdict

    from lora_recycle.minihub.hub import build_hub
    from lora_recycle.minihub.specialists import render_table, summary

    hub = build_hub(profile, cache_dir, seed, workers=workers)
    data = {"root": str(hub.root), "base_model": str(hub.base_model), "tasks": len(hub.tasks),
            "adapters": len(hub.adapters), "broken": len(hub.broken), "target_tasks": hub.target_tasks,
            "precision": hub.precision, "specialists": summary(hub.scores),
            "source_accuracy": [asdict(s) for s in hub.scores]}
    if hub.in_house_scores:
        data["in_house_specialists"] = summary(hub.in_house_scores)
    if as_json:
        emit_json(data)
        return
    print(render_table(hub.scores))
    if hub.in_house_scores:
        print("\nin-house adapters (on their own target task):")
        print(render_table(hub.in_house_scores))
    info(f"mini-hub {profile} at {hub.root}: {len(hub.tasks)} tasks, {len(hub.adapters)} adapters "
         f"(+{len(hub.broken)} broken), trained in {hub.precision}")


@hub_app.command("scale")
def scale(
    adapters: Annotated[int, typer.Option("--adapters", min=1, help="How many adapters to derive.")],
    source: Annotated[Path, typer.Option(
        "--from", help="A scanned pool to derive from: its catalog (.db) or a built hub folder (its pool.db).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the derived pool to (PEFT folders).")],
    seed: int = 0,
    broken: Annotated[float, typer.Option("--broken", help="Share written broken, as Hub uploads are.")] = 0.05,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Derive a Hub-sized pool from real adapters without training, to measure pool-scale costs.

    Random rotations, rescaling, rank changes and target subsets of the source adapters, Hub-like metadata and
    a share of broken uploads; deterministic in --seed. Derived adapters carry no new task knowledge.
    """
    from lora_recycle.minihub.scaled_pool import write_derived_pool
    from lora_recycle.outputs import atomic_dir

    catalog = source / "pool.db" if source.is_dir() else source
    with atomic_dir(out, overwrite) as partial:
        plans = write_derived_pool(catalog, partial, adapters, seed, broken)
    bad = sum(p.broken is not None for p in plans)
    if as_json:
        emit_json({"out": str(out), "adapters": len(plans), "broken": bad, "sources": len({p.source for p in plans})})
        return
    info(f"derived {len(plans)} adapters ({bad} broken) from {catalog} into {out}; scan them with "
         f"`lora-recycle pool scan {out} --base-model MODEL --db POOL.db`")


def demo(profile: ProfileOpt = "small", cache_dir: CacheOpt = None,
         task: Annotated[str | None, typer.Option("--task", help="Target task name (default: the first).")] = None,
         seed: int = 0, out: Annotated[Path, typer.Option("--out")] = Path("demo-output"),
         workers: Annotated[int | None, typer.Option(
             "--workers", min=1, help="Processes running the rows side by side (default: 2 on a CPU, 1 for tiny).")
         ] = None, overwrite: OverwriteOpt = False) -> None:
    """Recycle the mini-hub's adapters for a held-out task and print the verdict table."""
    from lora_recycle.minihub.demo import budget_note, render_table, run_demo, verdict
    from lora_recycle.minihub.hub import get_profile

    rows = run_demo(profile, cache_dir, task, seed, out, log=info, workers=workers, overwrite=overwrite)
    print("\n".join(render_table(rows)))
    print()
    print(verdict(rows))
    print(budget_note(get_profile(profile)))
    info(f"report written to {out / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")
    app.command("demo")(demo)

"""``merge --method arrow|arrow_gks`` for people: what was routed and where it was written."""

from __future__ import annotations

from lora_recycle.cli.output import info


def report_routed(summary: dict, evaluate_split: str | None) -> None:
    """The routing summary (``routing/recipe.py:run_route``) on stderr."""
    dropped = f" ({len(summary['dropped'])} dropped: not on the routed modules)" if summary["dropped"] else ""
    info(f"routed {len(summary['selected'])} adapters with {summary['method']}{dropped}, top_k "
         f"{summary['arrow']['top_k']}; wrote {summary['out']} "
         "(load it with PEFT's create_arrow_model, see its README)")
    if "evaluation" in summary:
        info(f"{evaluate_split} accuracy {summary['evaluation']['accuracy']:.4f}")

"""Pool statistics like the paper's Figure 6: per-contributor counts, ranks, target-module combinations."""

from __future__ import annotations

from collections import Counter

import numpy as np

from lora_recycle.pool.catalog import Catalog

PERCENTILES = (25, 50, 75, 90, 95, 99)


def contributor_summary(counts: list[int]) -> dict:
    """Adapters per contributor: contributors, average, percentiles (linear interpolation) and max."""
    if not counts:
        return {"contributors": 0, "avg": None, "max": None, "percentiles": {}}
    values = np.asarray(counts, dtype=float)
    percentiles = {str(p): round(float(np.percentile(values, p)), 3) for p in PERCENTILES}
    return {"contributors": len(counts), "avg": round(float(values.mean()), 3), "max": int(values.max()),
            "percentiles": percentiles}  # fmt: skip


def target_module_set(layer_targets: dict[int, list[str]], num_layers: int | None) -> str:
    """A label for an adapter's targets: ``k_proj+q_proj+v_proj``, plus the layers when not all are touched
    alike (e.g. ``k_proj+v_proj @ layers 30,31``)."""
    sets = {tuple(types) for types in layer_targets.values()}
    if not sets:
        return "(none)"
    label = "+".join(sorted({t for types in sets for t in types}))
    every_layer = num_layers is None or len(layer_targets) == num_layers
    if len(sets) == 1 and every_layer:
        return label
    return label + " @ layers " + ",".join(str(layer) for layer in sorted(layer_targets))


def pool_stats(catalog: Catalog) -> dict:
    """Accepted/rejected counts, rejections by reason, and Figure-6 statistics over accepted adapters."""
    meta = catalog.meta()
    num_layers = int(meta["num_layers"]) if "num_layers" in meta else None
    rows = catalog.rows(status="accepted")
    reasons = dict(catalog.db.execute("SELECT reason, COUNT(*) FROM rejections GROUP BY reason ORDER BY reason"))
    per_contributor = Counter(row["contributor"] or "(unknown)" for row in rows)
    ranks = Counter(row["rank"] for row in rows if row["rank"] is not None)
    module_sets = Counter(target_module_set(row["layer_targets"], num_layers) for row in rows)
    return {
        **catalog.counts(),
        "base_model": meta.get("base_model"),
        "reasons": reasons,
        "ranks": {str(rank): n for rank, n in sorted(ranks.items(), key=lambda item: (-item[1], item[0]))},
        "target_module_sets": dict(module_sets.most_common()),
        "adapters_per_contributor": contributor_summary(list(per_contributor.values())),
        "top_contributors": dict(per_contributor.most_common(10)),
        "rslora": sum(row["use_rslora"] for row in rows),
        "formats": dict(Counter(row["format"] for row in rows).most_common()),
    }

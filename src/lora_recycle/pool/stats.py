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


def norm_summary(norms: list[float]) -> dict:
    """The distribution of adapter norms ||s B A||_F: min, percentiles, max and counts per power of ten.

    Shown by ``pool stats`` so a user can pick ``pool scan --min-norm`` for their base model.
    """
    if not norms:
        return {"adapters": 0, "min": None, "max": None, "percentiles": {}, "decades": {}}
    values = np.asarray(norms, dtype=float)
    percentiles = {str(p): float(f"{np.percentile(values, p):.4g}") for p in (5, 10, *PERCENTILES)}
    decades = Counter(int(np.floor(np.log10(v))) if v > 0 else None for v in values)
    labels = {("0" if d is None else f"[1e{d}, 1e{d + 1})"): n
              for d, n in sorted(decades.items(), key=lambda item: -1e9 if item[0] is None else item[0])}
    return {"adapters": len(norms), "min": float(f"{values.min():.4g}"), "max": float(f"{values.max():.4g}"),
            "percentiles": percentiles, "decades": labels}


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
    every = catalog.rows()
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
        # every validated adapter with a norm (near_empty ones included), so a threshold can be chosen
        "adapter_norms": norm_summary([row["delta_norm"] for row in every if row.get("delta_norm") is not None]),
    }

"""Pool statistics mirror the paper's Figure 6."""

from __future__ import annotations

from lora_recycle.pool import Catalog, pool_stats
from lora_recycle.pool.stats import contributor_summary, target_module_set


def test_stats_of_the_corpus(scanned_db):
    with Catalog(scanned_db, create=False) as catalog:
        stats = pool_stats(catalog)
    assert (stats["accepted"], stats["rejected"]) == (8, 17)
    assert stats["reasons"] == {
        "base_mismatch": 2, "corrupt": 3, "empty": 2, "no_license": 2, "nonfinite": 1, "not_safetensors": 2,
        "outlier": 1, "shape_mismatch": 2, "unknown_module": 1, "unsupported_type": 2,
    }  # fmt: skip
    assert stats["ranks"] == {"4": 6, "8": 1, "16": 1}
    sets = stats["target_module_sets"]
    assert sets["down_proj+gate_proj+k_proj+o_proj+q_proj+up_proj+v_proj"] == 2
    assert sets["q_proj+v_proj"] == 2 and sum(sets.values()) == 8
    # alice 2, bob 3, carol 2 (mlx, nested), carla 1 (from the card's author field)
    assert stats["top_contributors"] == {"bob": 3, "alice": 2, "carol": 2, "carla": 1}
    assert stats["adapters_per_contributor"]["avg"] == 2.0


def test_contributor_percentiles_interpolate():
    summary = contributor_summary([1, 1, 1, 2, 6, 99])
    assert summary["max"] == 99 and summary["percentiles"]["50"] == 1.5 and summary["contributors"] == 6


def test_partial_layers_are_named():
    assert target_module_set({30: ["k_proj", "v_proj"], 31: ["k_proj", "v_proj"]}, 32) == "k_proj+v_proj @ layers 30,31"
    assert target_module_set({0: ["q_proj"], 1: ["q_proj"]}, 2) == "q_proj"

"""Paper-fidelity pieces that are pure functions: exact match, pooled random-init noise, adapter norms."""

import pytest
import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.merging.controls import pooled_stds, random_init_pool
from lora_recycle.pool.stats import norm_summary
from lora_recycle.tasks.scoring import exact_match, normalize_answer


def test_exact_match_equals_a_hand_computed_result():
    predictions = ["The Red.", "yellow!", "green leaf", "  BLUE ", "an apple", "White"]
    targets = ["red", "Yellow", "green", "blue", "apple", "black"]
    # by hand: 'the red' -> 'red' (article and punctuation drop) yes; 'yellow' yes; 'green leaf' no;
    # 'blue' yes; 'an apple' -> 'apple' yes; 'white' vs 'black' no -> 4 of 6
    assert exact_match(predictions, targets) == [True, True, False, True, True, False]
    assert normalize_answer("  The  Quick, brown fox ") == "quick brown fox"


def _adapter(seed: int, rank: int, scale_a: float, scale_b: float, paths=("m.q", "m.v")) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = {p: LoraModule(torch.randn(rank, 32, generator=g) * scale_a, torch.randn(24, rank, generator=g) * scale_b,
                             2.0) for p in paths}
    return LoraAdapter(modules, f"a{seed}", "base", {})


def test_random_init_noise_has_the_pooled_standard_deviation():
    # three adapters whose own stds differ by 10x: the pooled std is that of all their entries together
    pool = [_adapter(0, 4, 0.01, 0.1), _adapter(1, 8, 0.1, 1.0), _adapter(2, 16, 0.05, 0.5, paths=("m.q",))]
    stds = pooled_stds(pool)
    expected_a = torch.cat([a.modules["m.q"].A.double().flatten() for a in pool]).std().item()
    expected_b_v = torch.cat([a.modules["m.v"].B.double().flatten() for a in pool[:2]]).std().item()
    assert stds["m.q"][0] == pytest.approx(expected_a, rel=1e-12)
    assert stds["m.v"][1] == pytest.approx(expected_b_v, rel=1e-12)
    noise = random_init_pool(pool, seed=0)
    drawn = torch.cat([n.modules["m.q"].A.flatten() for n in noise]).std().item()
    assert drawn == pytest.approx(expected_a, rel=0.05)
    # every adapter draws with the pooled std, not its own: the small one gets far larger noise
    assert noise[0].modules["m.q"].A.std().item() == pytest.approx(expected_a, rel=0.15)
    assert noise[0].modules["m.q"].A.std().item() > 3 * pool[0].modules["m.q"].A.std().item()
    for original, fake in zip(pool, noise, strict=True):
        assert {p: (m.A.shape, m.B.shape, m.scale) for p, m in original.modules.items()} == \
            {p: (m.A.shape, m.B.shape, m.scale) for p, m in fake.modules.items()}
    own = random_init_pool(pool, seed=0, noise_std="per_adapter")
    assert own[0].modules["m.q"].A.std().item() == pytest.approx(pool[0].modules["m.q"].A.std().item(), rel=0.15)
    again = random_init_pool(pool, seed=0)
    assert torch.equal(again[1].modules["m.v"].B, noise[1].modules["m.v"].B)
    with pytest.raises(ValueError):
        random_init_pool(pool, 0, noise_std="global")


def test_norm_summary_counts_per_decade():
    summary = norm_summary([0.002, 0.05, 0.07, 3.0, 12.0])
    assert summary["adapters"] == 5 and summary["min"] == 0.002 and summary["max"] == 12.0
    assert summary["decades"] == {"[1e-3, 1e-2)": 1, "[1e-2, 1e-1)": 2, "[1e0, 1e1)": 1, "[1e1, 1e2)": 1}
    assert summary["percentiles"]["50"] == 0.07
    assert norm_summary([])["adapters"] == 0

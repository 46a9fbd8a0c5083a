"""`hub scale`: derived adapters keep each module's delta spectrum, are deterministic by seed, and scan like a pool."""

from __future__ import annotations

import pytest
import torch

from lora_recycle.minihub.derive import RandomOrthogonal, resize_rank, rotate
from lora_recycle.minihub.scaled_pool import plan_derived


def _factors(out: int = 48, inner: int = 40, r: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, inner, generator=g, dtype=torch.float64)
    return A, torch.randn(out, r, generator=g, dtype=torch.float64)


def test_structured_rotation_is_orthogonal():
    Q = RandomOrthogonal.draw(17, torch.Generator().manual_seed(1)).apply(torch.eye(17, dtype=torch.float64))
    assert torch.allclose(Q @ Q.T, torch.eye(17, dtype=torch.float64), atol=1e-12)


def test_rotation_keeps_the_spectrum_and_changes_the_directions():
    A, B = _factors()
    A2, B2 = rotate(A, B, torch.Generator().manual_seed(2))
    before, after = B @ A, B2 @ A2
    assert torch.allclose(torch.linalg.svdvals(before), torch.linalg.svdvals(after), rtol=1e-10)
    cosine = (before * after).sum() / (before.norm() * after.norm())
    assert abs(float(cosine)) < 0.2


def test_resize_rank_pads_exactly_and_truncates_to_the_best_approximation():
    A, B = _factors()
    A8, B8 = resize_rank(A, B, 8)
    assert A8.shape == (8, 40) and B8.shape == (48, 8) and torch.allclose(B8 @ A8, B @ A)
    A3, B3 = resize_rank(A, B, 3)
    U, S, Vh = torch.linalg.svd(B @ A)
    best = (U[:, :3] * S[:3]) @ Vh[:3]
    assert A3.shape == (3, 40) and torch.allclose(B3 @ A3, best, atol=1e-10)


def test_plans_are_deterministic_and_hub_like():
    plans = plan_derived(["a", "b", "c"], 200, seed=5, broken=0.05)
    assert plans == plan_derived(["a", "b", "c"], 200, seed=5, broken=0.05)
    assert plans != plan_derived(["a", "b", "c"], 200, seed=6, broken=0.05)
    assert sum(p.broken is not None for p in plans) == 10
    assert {p.source for p in plans} == {"a", "b", "c"}
    by_contributor = sorted((sum(p.contributor == c for p in plans) for c in {p.contributor for p in plans}),
                            reverse=True)
    assert by_contributor[0] >= 4 * by_contributor[-1]  # a few contributors publish most adapters
    assert 0.6 < sum(p.targets == "all" for p in plans) / 200 < 0.95


def test_hub_scale_writes_a_scannable_deterministic_pool(tmp_path, tiny_model_dir, adapter_dirs,
                                                           derived_pool_factory):
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.adapters.card import read_card_data
    from lora_recycle.pool import Catalog

    out, db = derived_pool_factory(tmp_path / "one", tiny_model_dir, adapter_dirs, 24, seed=3, broken=0.25)
    with Catalog(db) as catalog:
        assert catalog.counts() == {"accepted": 18, "rejected": 6}  # one of each broken kind
    again, _ = derived_pool_factory(tmp_path / "two", tiny_model_dir, adapter_dirs, 24, seed=3, broken=0.25)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file()) and len(files) >= 48
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    folder = next(p.parent for p in sorted(out.rglob("adapter_config.json"))
                  if read_card_data(p.parent)["derivation"]["broken"] is None)
    card = read_card_data(folder)
    assert card["derived_from"] in adapter_dirs and card["license"] and card["contributor"].startswith("user-")
    derived, source = read_peft_adapter(folder), read_peft_adapter(adapter_dirs[card["derived_from"]])
    plan = card["derivation"]
    assert set(derived.ranks.values()) == {plan["rank"]}
    path = next(iter(derived.modules))
    kept = min(plan["rank"], source.modules[path].rank)
    top = torch.linalg.svdvals(source.modules[path].delta())[:kept] * plan["rescale"]
    assert torch.linalg.svdvals(derived.modules[path].delta())[:kept] == pytest.approx(top.tolist(), rel=1e-4)

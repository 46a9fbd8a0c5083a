"""Error-budget ranks against a dense SVD reference: the chosen rank is the smallest within the budget."""

from __future__ import annotations

import pytest
import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.peft_io import SERVABLE_RANKS
from lora_recycle.merging.rank_budget import DEFAULT_MAX_ERROR, fit_export_rank, rank_for_error, tail_errors


def module(seed: int, rank: int, out_features: int = 40, in_features: int = 36, scale: float = 0.5) -> LoraModule:
    g = torch.Generator().manual_seed(seed)
    decay = torch.logspace(0, -2.5, rank)  # a spread of singular values, like a merge of several adapters
    return LoraModule(torch.randn(rank, in_features, generator=g),
                      torch.randn(out_features, rank, generator=g) * decay, scale)


def dense_minimal_rank(delta: torch.Tensor, max_error: float) -> int:
    """Reference: form every truncation densely and return the first rank whose error is within the budget."""
    U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
    norm = delta.double().norm()
    for q in range(S.numel() + 1):
        approx = (U[:, :q] * S[:q]) @ Vh[:q]
        if float((delta.double() - approx).norm() / norm) <= max_error:
            return q
    raise AssertionError("unreachable: the full rank is exact")


def dense_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    return float((reference.double() - approx.double()).norm() / reference.double().norm())


@pytest.mark.parametrize("max_error", [0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 0.9])
@pytest.mark.parametrize(("seed", "rank"), [(0, 24), (1, 36), (2, 60)])  # 60 > 36 = in_features
def test_rank_for_error_is_the_dense_minimum(seed, rank, max_error):
    m = module(seed, rank)
    from lora_recycle.merging.compress import factored_svd

    S = factored_svd(m.A, m.B, m.scale)[1]
    chosen = rank_for_error(S, max_error)
    if max_error == 0.0:  # the numerical rank's trailing noise means "keep everything"
        assert chosen == S.numel()
        return
    assert chosen == dense_minimal_rank(m.delta(torch.float64), max_error)


def test_tail_errors_of_a_zero_matrix():
    assert tail_errors(torch.zeros(3)).tolist() == [0.0] * 4
    assert rank_for_error(torch.zeros(3), 0.1) == 0
    with pytest.raises(ValueError):
        rank_for_error(torch.ones(2), -0.1)


def adapter_of(*modules: LoraModule) -> LoraAdapter:
    paths = [f"model.layers.{i // 2}.self_attn.{'qv'[i % 2]}_proj" for i in range(len(modules))]
    return LoraAdapter(dict(zip(paths, modules, strict=True)), "merged", "org/base", {"use_rslora": False})


@pytest.mark.parametrize("max_error", [0.01, 0.05, 0.1])
def test_budget_picks_one_servable_rank_and_meets_it(max_error):
    adapter = adapter_of(module(3, 30), module(4, 12, scale=2.0), module(5, 36), module(6, 5))
    compressed, report = fit_export_rank(adapter, max_error=max_error)
    needed = {p: dense_minimal_rank(m.delta(torch.float64), max_error) for p, m in adapter.modules.items()}
    assert {p: r.needed_rank for p, r in report.modules.items()} == needed
    assert report.rank == min(r for r in SERVABLE_RANKS if r >= max(needed.values()))
    assert report.compressed and report.max_error == max_error and report.note is None
    for path, original in adapter.modules.items():
        out = compressed.modules[path]
        assert out.rank == min(report.rank, original.rank)
        error = dense_error(original.delta(torch.float64), out.delta(torch.float64))
        assert error <= max_error + 1e-9
        assert report.modules[path].error == pytest.approx(error, rel=1e-6, abs=1e-9)
    record = report.record()
    assert record["max_relative_error"] == max(r.error for r in report.modules.values())
    assert set(record["modules"]) == set(adapter.modules)


def test_exact_export_is_untouched_when_servable():
    adapter = adapter_of(module(7, 20), module(8, 40))
    same, report = fit_export_rank(adapter)
    assert same is adapter and report.rank == 64 and not report.compressed
    assert all(r.error == 0.0 for r in report.modules.values())


def test_rank_cap_alone_is_a_truncated_svd():
    adapter = adapter_of(module(9, 30), module(10, 6))
    compressed, report = fit_export_rank(adapter, max_rank=8)
    assert report.rank == 8 and [m.rank for m in compressed.modules.values()] == [8, 6]
    big = next(iter(adapter.modules))
    U, S, Vh = torch.linalg.svd(adapter.modules[big].delta(torch.float64), full_matrices=False)
    best = (U[:, :8] * S[:8]) @ Vh[:8]
    assert dense_error(best, compressed.modules[big].delta(torch.float64)) < 1e-5


def test_budget_composes_with_a_rank_cap():
    adapter = adapter_of(module(11, 36))
    _, free = fit_export_rank(adapter, max_error=0.01)
    _, capped = fit_export_rank(adapter, max_rank=4, max_error=0.01)
    assert free.modules[next(iter(adapter.modules))].needed_rank > 4
    assert capped.rank == 8 and all(r.rank == 4 and r.needed_rank == 4 for r in capped.modules.values())


def test_exact_rank_above_the_ceiling_falls_back_to_the_default_budget():
    # ceiling lowered to 16 so a fixture of modest size is "too big to serve"
    adapter = adapter_of(module(12, 30), module(13, 36))
    compressed, report = fit_export_rank(adapter, ceiling=16)
    assert report.max_error == DEFAULT_MAX_ERROR and report.rank <= 16
    assert "above 16" in report.note and "--max-error" in report.note
    reference = fit_export_rank(adapter, max_error=DEFAULT_MAX_ERROR)[1]
    assert {p: r.needed_rank for p, r in report.modules.items()} == {
        p: r.needed_rank for p, r in reference.modules.items()}
    assert report.rank == min(reference.rank, 16)
    if reference.rank <= 16:
        assert report.modules == reference.modules and report.record()["max_relative_error"] <= DEFAULT_MAX_ERROR


def test_budget_above_the_ceiling_is_capped_and_says_so():
    adapter = adapter_of(module(14, 36), module(15, 36))
    compressed, report = fit_export_rank(adapter, max_error=0.001, ceiling=16)
    assert report.rank == 16 and "capped at 16" in report.note
    assert all(m.rank == 16 for m in compressed.modules.values())
    assert report.record()["max_relative_error"] > 0.001  # the budget could not be met, and the record shows it


def test_invalid_arguments():
    adapter = adapter_of(module(16, 4))
    with pytest.raises(ValueError):
        fit_export_rank(adapter, max_error=1.0)
    with pytest.raises(ValueError):
        fit_export_rank(adapter, max_rank=0)


@pytest.mark.parametrize("kwargs", [{"max_error": 0.01}, {"max_error": 0.001, "ceiling": 16},
                                    {"max_error": 0.05, "max_rank": 6}])
def test_each_module_is_decomposed_once(monkeypatch, kwargs):
    """The budget's SVD also gives the truncation (one decomposition per module, the same factors as a second)."""
    from lora_recycle.merging import rank_budget

    adapter = adapter_of(module(16, 36), module(17, 30), module(18, 4))
    calls: list[int] = []
    real = rank_budget.factored_svd

    def counted(A, B, scale=1.0):
        calls.append(A.shape[0])
        return real(A, B, scale)

    expected = {p: m for p, m in adapter.modules.items()}
    compressed, report = fit_export_rank(adapter, **kwargs)
    monkeypatch.setattr(rank_budget, "factored_svd", counted)
    again, _ = fit_export_rank(adapter, **kwargs)
    assert sorted(calls) == sorted(m.rank for m in expected.values())
    for path, m in compressed.modules.items():
        U, S, V = real(expected[path].A, expected[path].B * expected[path].scale)
        q = report.modules[path].rank
        if q < expected[path].rank:  # a fresh SVD's truncation, factor for factor
            root = S[:q].sqrt()
            assert torch.equal(m.A, (root[:, None] * V[:, :q].T).to(m.A.dtype))
            assert torch.equal(m.B, (U[:, :q] * root).to(m.B.dtype))
        assert torch.equal(again.modules[path].A, m.A) and torch.equal(again.modules[path].B, m.B)

"""Non-adaptive merges through the pipeline: per-module results equal PEFT's maths; exports compress honestly."""

import pytest
import torch
from peft.utils import merge_utils

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.recipe.merge import merge_adapters
from lora_recycle.recipe.presets import preset


@pytest.fixture()
def pool(adapter_dirs):
    return [read_peft_adapter(p, adapter_id=n) for n, p in adapter_dirs.items()]


def test_ties_pipeline_equals_peft_per_module(tiny_model, pool):
    model, tokenizer = tiny_model
    outcome = merge_adapters(model, tokenizer, None, pool, preset("ties").with_overrides(max_rank=128))
    assert outcome.compression["max_relative_error"] < 1e-6  # rank 128 >= tiny dims: exact
    path = "model.layers.0.self_attn.q_proj"
    deltas = [a.modules[path].delta() for a in pool if path in a.modules]
    expected = merge_utils.ties(deltas, torch.full((len(deltas),), 0.3), density=0.4)
    torch.testing.assert_close(outcome.adapter.modules[path].delta(), expected, atol=1e-5, rtol=1e-4)


def test_max_rank_reports_the_error(tiny_model, pool):
    model, tokenizer = tiny_model
    low = merge_adapters(model, tokenizer, None, pool, preset("ties").with_overrides(max_rank=2))
    assert {m.rank for m in low.adapter.modules.values()} <= {1, 2}
    assert 0 < low.compression["mean_relative_error"] <= low.compression["max_relative_error"] < 1
    path = "model.layers.1.mlp.up_proj"
    dense = merge_adapters(model, tokenizer, None, pool, preset("ties").with_overrides(max_rank=128))
    full, approx = dense.adapter.modules[path].delta(), low.adapter.modules[path].delta()
    S = torch.linalg.svdvals(full.double())
    expected = float((S[2:].square().sum() / S.square().sum()).sqrt())
    assert float((full - approx).norm() / full.norm()) == pytest.approx(expected, rel=1e-4)


def test_dare_is_seeded_and_rescaled(tiny_model, pool):
    model, tokenizer = tiny_model
    a = merge_adapters(model, tokenizer, None, pool, preset("dare_linear").with_overrides(seed=1, max_rank=128))
    b = merge_adapters(model, tokenizer, None, pool, preset("dare_linear").with_overrides(seed=1, max_rank=128))
    path = "model.layers.0.self_attn.q_proj"
    torch.testing.assert_close(a.adapter.modules[path].delta(), b.adapter.modules[path].delta())
    # rescaled by 1/density: the merged norm stays near the task-arithmetic norm, not density times it
    ta = merge_adapters(model, tokenizer, None, pool, preset("task_arithmetic").with_overrides(max_rank=128))
    ratio = a.adapter.modules[path].delta().norm() / ta.adapter.modules[path].delta().norm()
    assert 1.0 < float(ratio) < 2.5


def test_adaptive_export_compression(tiny_model, pool, colour_task_dir):
    from lora_recycle.tasks import load_task

    model, tokenizer = tiny_model
    settings = preset("ours").with_overrides(steps=2, eval_every=2, max_rank=3)
    outcome = merge_adapters(model, tokenizer, load_task(colour_task_dir), pool, settings)
    assert max(m.rank for m in outcome.adapter.modules.values()) <= 3
    assert "max_relative_error" in outcome.compression


def _full_rank_pool(size: int = 600, k: int = 3) -> list:
    """Adapters on one module wider than vLLM's rank 512, so an exact TIES merge needs rank 600."""
    from lora_recycle.adapters.lora import LoraAdapter, LoraModule

    generator = torch.Generator().manual_seed(0)
    path = "model.layers.0.mlp.down_proj"
    return [LoraAdapter({path: LoraModule(torch.randn(8, size, generator=generator),
                                          torch.randn(size, 8, generator=generator), 0.5)}, f"a{i}", "base", {})
            for i in range(k)]


def test_full_rank_ties_exports_exactly_without_svd_and_compresses_only_for_serving(monkeypatch):
    """TIES's update is full-rank: carried exactly as (delta, I); above rank 512 it is compressed unless
    ``exact_export`` (what a study scores), and the exact export takes no SVD at all."""
    from lora_recycle.merging import nonadaptive

    pool = _full_rank_pool()
    path = next(iter(pool[0].modules))
    expected = merge_utils.ties([a.modules[path].delta() for a in pool], torch.full((3,), 0.3), density=0.4)
    with monkeypatch.context() as patch:
        patch.setattr(nonadaptive.torch.linalg, "svd", lambda *a, **k: pytest.fail("an SVD was taken"))
        exact = merge_adapters(None, None, None, pool, preset("ties").with_overrides(exact_export=True))
    module = exact.adapter.modules[path]
    assert module.rank == 600 and not exact.compression.get("compressed")
    torch.testing.assert_close(module.delta(), expected, atol=1e-6, rtol=1e-5)
    served = merge_adapters(None, None, None, pool, preset("ties"))
    assert served.adapter.modules[path].rank <= 512 and served.compression["compressed"]
    assert "above 512" in served.compression["note"]

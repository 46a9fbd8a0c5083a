"""Arrow routing through PEFT: our pool preparation and scoring path against PEFT's own model on the originals."""

from __future__ import annotations

import pytest
import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.errors import UserError
from lora_recycle.routing.arrow import ArrowSettings, routed, write_arrow_dir
from lora_recycle.routing.pool import choose_paths, pad_module, prepare_arrow_pool
from lora_recycle.tasks.loss import selected_logits
from lora_recycle.tasks.scoring import evaluate_task


def _batch(seed: int = 0):
    """Right-padded token ids with a mask and the answer-like positions the scorer would take."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    positions = mask.bool() & (torch.arange(9) >= 2)
    return ids, mask, positions


def _peft_reference(model_dir, dirs, general=None, **arrow):
    from peft import ArrowConfig
    from peft.tuners.lora.arrow import create_arrow_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model = create_arrow_model(base, [str(d) for d in dirs], ArrowConfig(**arrow),
                               general_adapter_paths=[str(d) for d in general] if general else None)
    return model.eval()


@pytest.fixture(scope="module")
def uniform_dirs(tiny_model_dir, tmp_path_factory, peft_adapter_factory):
    """Four rank-4 adapters on all seven projections (what PEFT's Arrow accepts as they are); alphas differ."""
    root = tmp_path_factory.mktemp("arrow_uniform")
    return [peft_adapter_factory(tiny_model_dir, root / f"u{i}", 10 + i, r=4, alpha=[8, 8, 4, 16][i], b_std=0.3)
            for i in range(4)]


@pytest.mark.parametrize("use_gks", [False, True])
def test_scoring_path_equals_peft_arrow_model(tiny_model, tiny_model_dir, uniform_dirs, tmp_path, use_gks):
    model, tokenizer = tiny_model
    experts, general = (uniform_dirs[:3], uniform_dirs[3:]) if use_gks else (uniform_dirs, [])
    settings = ArrowSettings(top_k=2, router_temperature=0.5, rng_seed=7, use_gks=use_gks)
    reference = _peft_reference(tiny_model_dir, experts, general, **settings.peft_config(len(experts)))
    pool = prepare_arrow_pool([read_peft_adapter(d) for d in experts], [read_peft_adapter(d) for d in general])
    out = write_arrow_dir(pool, tmp_path / "arrow", "tiny", "arrow", settings, [])
    ids, mask, positions = _batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits[positions]
        base = selected_logits(model, ids, mask, positions)
        with routed(model, out) as scored:
            ours = selected_logits(scored, ids, mask, positions)
    assert (expected - base).abs().max() > 1e-2  # routing changes the model
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_evaluation_equals_peft_model_and_leaves_base_untouched(tiny_model, tiny_model_dir, uniform_dirs, tmp_path,
                                                                colour_task_dir):
    from lora_recycle.tasks import load_task

    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    settings = ArrowSettings(top_k=3)
    reference = _peft_reference(tiny_model_dir, uniform_dirs, **settings.peft_config(4))
    expected = evaluate_task(reference, tokenizer, task, "test")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_modules()]
    out = write_arrow_dir(prepare_arrow_pool([read_peft_adapter(d) for d in uniform_dirs], []), tmp_path / "a",
                          "tiny", "arrow", settings, [])
    with routed(model, out) as scored:
        ours = evaluate_task(scored, tokenizer, task, "test")
        again = evaluate_task(scored, tokenizer, task, "test")
    assert ours.predictions == expected.predictions == again.predictions
    assert ours.accuracy == expected.accuracy
    assert [n for n, _ in model.named_modules()] == names and not hasattr(model, "peft_config")
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _routed_layers(scored):
    return {name.removeprefix("base_model.model."): m for name, m in scored.named_modules() if hasattr(m, "lora_arrow")}


def test_mixed_rank_mixed_target_pool_routes_exactly(tiny_model, adapter_dirs, tmp_path):
    """Ranks 2-8, rsLoRA, rank/alpha patterns, four target sets: ``cover`` routes all seven projections."""
    model, _ = tiny_model
    adapters = [read_peft_adapter(d, adapter_id=name) for name, d in adapter_dirs.items()]
    pool = prepare_arrow_pool(adapters, [], "cover")
    assert [a.adapter_id for a in pool.experts] == ["all_r4", "patterns"]
    assert set(pool.dropped) == {"qv_r8", "rslora_r2"} and pool.rank == 6 and len(pool.paths) == 14
    originals = {a.adapter_id: a for a in adapters}
    settings = ArrowSettings(top_k=2, rng_seed=3)
    out = write_arrow_dir(pool, tmp_path / "mixed", "tiny", "arrow", settings, [])
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), routed(model, out) as scored:
        model(torch.tensor([[1, 2, 3]]))  # builds the prototypes
        layers = _routed_layers(scored)
        assert sorted(layers) == sorted(pool.paths)
        for path, layer in layers.items():
            arrow = layer.lora_arrow["arrow_router"]
            mods = [originals[i].modules[path] for i in ("all_r4", "patterns")]
            # prototypes of the padded experts equal PEFT's power iteration on the original factors
            protos = torch.stack([arrow.top_right_singular_vec_from_BA(m.A, m.B) for m in mods])
            torch.testing.assert_close(arrow.prototypes, protos, atol=1e-6, rtol=0)
            # the routed update equals Arrow's formula on the original (unpadded, own-scale) factors
            inputs = x[:, : layer.in_features] if layer.in_features <= 64 else torch.randn(5, layer.in_features)
            sim = (inputs @ protos.T).abs()
            top, idx = sim.topk(2, dim=1)
            coeff = torch.softmax(torch.full_like(sim, float("-inf")).scatter(1, idx, top), dim=1)
            deltas = torch.stack([m.scale * inputs @ (m.B @ m.A).T for m in mods], dim=1)
            expected = layer.base_layer(inputs) + torch.einsum("te,teo->to", coeff, deltas)
            torch.testing.assert_close(layer(inputs), expected, atol=1e-5, rtol=0)


def test_intersect_rule_keeps_every_adapter_on_shared_modules(adapter_dirs):
    adapters = [read_peft_adapter(d, adapter_id=name) for name, d in adapter_dirs.items()]
    pool = prepare_arrow_pool(adapters, [], "intersect")
    assert len(pool.experts) == 4 and not pool.dropped
    assert {p.rsplit(".", 1)[1] for p in pool.paths} == {"q_proj"} and pool.rank == 8
    for original, kept in zip(adapters, pool.experts, strict=True):
        for path in pool.paths:
            torch.testing.assert_close(kept.modules[path].delta(), original.modules[path].delta(), atol=1e-7, rtol=0)
    assert pool.unrouted_modules["all_r4"] == 12


def test_disjoint_pool_is_rejected_with_a_reason(tiny_model_dir, tmp_path, peft_adapter_factory):
    qv = read_peft_adapter(peft_adapter_factory(tiny_model_dir, tmp_path / "qv", 1, targets=["q_proj", "v_proj"]))
    mlp = read_peft_adapter(peft_adapter_factory(tiny_model_dir, tmp_path / "mlp", 2, targets=["up_proj"]))
    with pytest.raises(UserError, match="share no module"):
        prepare_arrow_pool([qv, mlp], [], "intersect")
    with pytest.raises(UserError, match="target-task LoRA and general adapters share no module"):
        prepare_arrow_pool([qv, mlp], [mlp], "cover", required_ids=(qv.adapter_id,))
    # without a required adapter, cover keeps the larger-coverage one
    assert [a.adapter_id for a in prepare_arrow_pool([mlp, qv], [], "cover").experts] == [qv.adapter_id]


def test_choose_paths_and_padding_are_exact():
    sets = [frozenset({"a", "b", "c"}), frozenset({"a", "b", "c"}), frozenset({"a"}), frozenset({"a", "b"})]
    assert choose_paths(sets, [], "cover") == {"a", "b", "c"}  # 2 x 3 beats 3 x 2 and 4 x 1
    assert choose_paths(sets, [frozenset({"a", "b"})], "cover") == {"a", "b"}
    assert choose_paths(sets, [], "intersect") == {"a"}
    from lora_recycle.adapters.lora import LoraModule

    module = LoraModule(torch.randn(3, 5), torch.randn(4, 3), 0.7)
    padded = pad_module(module, 8)
    assert padded.rank == 8 and padded.scale == 0.7
    torch.testing.assert_close(padded.delta(), module.delta(), atol=0, rtol=0)


def test_settings_cap_top_k_and_reject_bad_values():
    assert ArrowSettings(top_k=5).peft_config(2)["top_k"] == 2
    with pytest.raises(UserError, match="--top-k"):
        ArrowSettings(top_k=0)
    with pytest.raises(UserError, match="--router-temperature"):
        ArrowSettings(router_temperature=0.0)

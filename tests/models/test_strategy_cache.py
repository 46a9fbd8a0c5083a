"""Timed strategy choices: ``calibrate`` (and ``auto`` on an accelerator) time once per device and shapes, then
reuse the cached winner; ``auto`` on a CPU stays the deterministic FLOP model."""

from __future__ import annotations

import json

import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.models import strategy_cache
from lora_recycle.models.inject import MergedModel

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]])


def load_pool(adapter_dirs):
    return [read_peft_adapter(path, adapter_id=name) for name, path in sorted(adapter_dirs.items())]


def calibration_step(merged: MergedModel):
    def step() -> None:
        merged.apply_coefficients()
        merged.model(input_ids=IDS).logits.float().logsumexp(-1).mean().backward()
        merged.raw.grad = None
    return step


def test_calibrate_times_once_per_shapes_and_reuses_the_cached_winner(tiny_model, adapter_dirs, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("LORA_RECYCLE_CACHE", str(tmp_path))
    model, _ = tiny_model
    pool = load_pool(adapter_dirs)
    merged = MergedModel(model, pool[:2], strategy="calibrate")
    timed = merged.calibrate(calibration_step(merged), tokens=IDS.numel())
    chosen = {layer.strategy for layer in merged.layers.values()}
    assert merged.strategy_source == "timed" and set(timed) == {"auto", "factored", "materialized", "hybrid"}
    assert chosen == {min(timed, key=timed.get)}
    entries = json.loads((tmp_path / strategy_cache.CACHE_NAME).read_text())
    assert [entry["strategy"] for entry in entries.values()] == [chosen.pop()]
    merged.detach()

    again = MergedModel(model, pool[:2], strategy="calibrate")
    calls = []
    assert again.calibrate(lambda: calls.append(1), tokens=IDS.numel() - 1) == timed  # same power-of-two bucket
    assert again.strategy_source == "cached" and not calls  # nothing timed
    again.detach()

    other = MergedModel(model, pool[:3], strategy="calibrate")  # other ranks: another key, timed afresh
    other.calibrate(calibration_step(other), tokens=IDS.numel())
    assert other.strategy_source == "timed"
    assert len(json.loads((tmp_path / strategy_cache.CACHE_NAME).read_text())) == 2
    other.detach()


def test_auto_on_a_cpu_is_the_flop_model_and_never_timed(tiny_model, adapter_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_RECYCLE_CACHE", str(tmp_path))
    model, _ = tiny_model
    merged = MergedModel(model, load_pool(adapter_dirs)[:2], strategy="auto")
    assert merged.calibrate(lambda: (_ for _ in ()).throw(AssertionError("timed")), tokens=8) == {}
    assert {layer.strategy for layer in merged.layers.values()} == {"auto"} and merged.strategy_source == "rule"
    assert not (tmp_path / strategy_cache.CACHE_NAME).exists()
    merged.detach()
    assert strategy_cache.times_auto("cpu") is False and strategy_cache.times_auto("cuda") is True


def test_keys_separate_devices_dtypes_token_buckets_and_shapes(tmp_path):
    layers = [(64, 64, 16), (64, 128, 16)]
    key = strategy_cache.shape_key("cpu", torch.float32, 100, layers, False)
    assert key == strategy_cache.shape_key("cpu", torch.float32, 128, list(reversed(layers)), False)
    assert len({key, strategy_cache.shape_key("cpu", torch.bfloat16, 100, layers, False),
                strategy_cache.shape_key("cpu", torch.float32, 129, layers, False),
                strategy_cache.shape_key("cpu", torch.float32, 100, layers[:1], False),
                strategy_cache.shape_key("cpu", torch.float32, 100, layers, True)}) == 5
    broken = tmp_path / "cache.json"
    broken.write_text("{not json")
    assert strategy_cache.read_choice(key, broken) is None  # an unreadable cache is no cache
    strategy_cache.write_choice(key, "factored", {"factored": 0.1}, broken)
    assert strategy_cache.read_choice(key, broken) == ("factored", {"factored": 0.1})

"""mlx-lm adapters convert to the same canonical deltas as the PEFT adapter they were made from."""

from __future__ import annotations

import pytest
import torch
from pool_corpus import peft_to_mlx

from lora_recycle.adapters import read_adapter, read_mlx_adapter, read_peft_adapter
from lora_recycle.adapters.formats import mlx_factor
from lora_recycle.errors import UserError


def test_mlx_matches_peft(corpus, tmp_path):
    peft_dir = corpus / "bob/patterns"
    # mlx has one rank and scale per adapter: use a uniform PEFT adapter as the reference
    reference = read_peft_adapter(corpus / "alice/qv-only")
    mlx_dir = peft_to_mlx(corpus / "alice/qv-only", tmp_path / "mlx")
    converted = read_mlx_adapter(mlx_dir)
    assert set(converted.modules) == set(reference.modules)
    for path, module in reference.modules.items():
        assert converted.modules[path].scale == pytest.approx(module.scale)
        torch.testing.assert_close(converted.modules[path].delta(), module.delta())
    assert converted.metadata["format"] == "mlx"
    assert read_adapter(mlx_dir).metadata["format"] == "mlx"
    assert read_adapter(peft_dir).ranks == read_peft_adapter(peft_dir).ranks


def test_mlx_keys():
    assert mlx_factor("model.layers.3.mlp.down_proj.lora_b") == ("model.layers.3.mlp.down_proj", "B")
    assert mlx_factor("language_model.model.layers.0.self_attn.q_proj.lora_a") == (
        "model.layers.0.self_attn.q_proj",
        "A",
    )
    assert mlx_factor("model.layers.0.self_attn.q_proj.m") is None


def test_mlx_dora_is_refused(corpus):
    with pytest.raises(UserError, match="fine_tune_type dora"):
        read_mlx_adapter(corpus / "broken/mlx-dora")

"""The default storage dtype of an export is the base model's own, read from its config.json."""

from __future__ import annotations

import json

import pytest

from lora_recycle.models.config_file import config_dtype


@pytest.mark.parametrize(("config", "expected"), [
    ({"dtype": "bfloat16"}, "bfloat16"), ({"torch_dtype": "float16"}, "float16"),
    ({"torch_dtype": "torch.bfloat16"}, "bfloat16"), ({"dtype": "float32", "torch_dtype": "float16"}, "float32"),
    ({}, None), ({"dtype": "int8"}, None),
])
def test_config_dtype(tmp_path, config, expected):
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert config_dtype(tmp_path) == expected


def test_config_dtype_without_a_config(tmp_path):
    assert config_dtype(tmp_path) is None

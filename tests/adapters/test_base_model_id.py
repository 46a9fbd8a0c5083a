"""The base model's Hub id for exports: one test per resolution source, in the documented order."""

from __future__ import annotations

import json

import pytest

from lora_recycle.adapters.base_model_id import (
    MODEL_RECORD_NAME,
    hub_id_from_cache_path,
    is_hub_id,
    resolve_base_model_id,
)
from lora_recycle.errors import UserError


def model_dir(tmp_path, name="model", config=None, record=None):
    path = tmp_path / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    if record is not None:
        (path / MODEL_RECORD_NAME).write_text(json.dumps(record))
    return path


def test_explicit_option_wins_over_everything(tmp_path):
    path = model_dir(tmp_path, config={"_name_or_path": "org/from-config"}, record={"hub_id": "org/from-record"})
    resolved = resolve_base_model_id(path, "me/my-base")
    assert (resolved.name, resolved.source, resolved.warning()) == ("me/my-base", "option", None)


def test_explicit_option_must_be_a_hub_id(tmp_path):
    with pytest.raises(UserError, match="--base-model-id"):
        resolve_base_model_id(model_dir(tmp_path), "/not/a/hub id")


def test_own_record_of_a_converted_model(tmp_path):
    path = model_dir(tmp_path, config={"_name_or_path": "org/from-config"},
                     record={"format_version": 1, "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    resolved = resolve_base_model_id(path)
    assert (resolved.name, resolved.source) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "record")


def test_hugging_face_cache_path(tmp_path):
    path = model_dir(tmp_path, "hub/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/0123abc",
                     config={"_name_or_path": "org/from-config"})
    resolved = resolve_base_model_id(path)
    assert (resolved.name, resolved.source) == ("Qwen/Qwen2.5-0.5B-Instruct", "hf_cache")
    assert hub_id_from_cache_path(tmp_path / "models--gpt2" / "snapshots" / "r1") == "gpt2"
    assert hub_id_from_cache_path(tmp_path / "models--gpt2") is None  # not a snapshot


def test_hugging_face_cache_path_through_a_symlink(tmp_path):
    real = model_dir(tmp_path, "hub/models--org--name/snapshots/abc")
    link = tmp_path / "my-model"
    link.symlink_to(real, target_is_directory=True)
    assert resolve_base_model_id(link).name == "org/name"


def test_config_name_or_path_when_it_is_a_hub_id(tmp_path):
    resolved = resolve_base_model_id(model_dir(tmp_path, config={"_name_or_path": "meta-llama/Llama-3.2-1B"}))
    assert (resolved.name, resolved.source) == ("meta-llama/Llama-3.2-1B", "config")


@pytest.mark.parametrize("name_or_path", ["/home/me/models/llama", "./llama", "llama", "models--a--b/x", ""])
def test_config_path_is_not_taken_for_a_hub_id(tmp_path, name_or_path):
    path = model_dir(tmp_path, config={"_name_or_path": name_or_path})
    resolved = resolve_base_model_id(path)
    assert resolved.source == "path" and resolved.name == str(path.resolve())
    assert "--base-model-id" in resolved.warning()


def test_local_path_is_the_last_resort(tmp_path):
    path = model_dir(tmp_path, record={"hub_id": 42})  # a broken record is ignored, not trusted
    resolved = resolve_base_model_id(path)
    assert resolved.source == "path" and not resolved.is_hub_id and resolved.warning().startswith("warning:")


@pytest.mark.parametrize(("text", "expected"), [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", True), ("a/b.c_d-e", True), ("gpt2", False),
    ("a/b/c", False), ("a--b/c", False), ("a/b..c", False), ("a/b.git", False), ("-a/b", False), ("a/b-", False),
    ("/abs/path", False), ("a b/c", False), ("x/" + "y" * 100, False),
])
def test_is_hub_id(text, expected):
    assert is_hub_id(text) is expected

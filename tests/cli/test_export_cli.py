"""``merge`` exports a publishable adapter: Hub id in config and card, error-budget rank, storage dtype."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lora_recycle.adapters.base_model_id import MODEL_RECORD_NAME
from lora_recycle.adapters.card import read_card_data
from lora_recycle.cli import main
from lora_recycle.minihub.base_model import TINY_ID

SCRIPT = Path(sys.executable).with_name("lora-recycle")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def average(capsys, model_dir, adapter_dirs, out, *extra):
    return run(capsys, "merge", "--model", model_dir, "--adapters", adapter_dirs["all_r4"], "--adapters",
               adapter_dirs["patterns"], "--method", "average", "--out", out, *extra)


def stored_dtypes(out: Path) -> set[str]:
    return {str(t.dtype) for t in load_file(out / "adapter_model.safetensors").values()}


def copy_model(src: Path, dst: Path, record: bool = False, **config_changes) -> Path:
    shutil.copytree(src, dst, ignore=None if record else shutil.ignore_patterns(MODEL_RECORD_NAME))
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **config_changes}))
    return dst


def test_tiny_hub_export_names_the_hub_id(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    code, _, err = average(capsys, tiny_model_dir, adapter_dirs, tmp_path / "avg")
    assert code == 0, err
    config = json.loads((tmp_path / "avg" / "adapter_config.json").read_text())
    card = read_card_data(tmp_path / "avg")
    record = json.loads((tmp_path / "avg" / "merge_result.json").read_text())
    assert config["base_model_name_or_path"] == card["base_model"] == record["base_model"] == TINY_ID
    assert record["base_model_source"] == "record" and f"base_model:adapter:{TINY_ID}" in card["tags"]
    assert card["library_name"] == "peft" and card["license"] == "other"  # the fixtures' adapters state no license
    assert f"base model: {TINY_ID} (from record)" in err and "warning" not in err
    assert "| all_r4 | unknown | 0.5 |" in (tmp_path / "avg" / "README.md").read_text()


def test_explicit_id_and_hf_cache_path(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    cached = copy_model(tiny_model_dir, tmp_path / "hf/models--someorg--tiny-base/snapshots/abc123")
    code, out, _ = average(capsys, cached, adapter_dirs, tmp_path / "a", "--json")
    assert code == 0 and json.loads(out)["base_model"] == "someorg/tiny-base"
    code, out, _ = average(capsys, cached, adapter_dirs, tmp_path / "b", "--base-model-id", "me/renamed", "--json")
    assert code == 0 and json.loads(out)["base_model"] == "me/renamed"
    assert read_card_data(tmp_path / "b")["base_model"] == "me/renamed"


def test_local_path_is_a_last_resort_with_a_warning(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    local = copy_model(tiny_model_dir, tmp_path / "my-base")
    code, out, err = average(capsys, local, adapter_dirs, tmp_path / "avg", "--json")
    assert code == 0
    assert json.loads(out)["base_model"] == str(local.resolve())
    assert err.count("warning: could not tell the Hub id") == 1 and "--base-model-id" in err
    assert "base_model" not in read_card_data(tmp_path / "avg")


def test_max_error_and_save_dtype(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    code, out, err = average(capsys, tiny_model_dir, adapter_dirs, tmp_path / "exact")
    assert code == 0 and "exported exactly at rank 16 (no compression)" in err
    code, out, err = average(capsys, tiny_model_dir, adapter_dirs, tmp_path / "low", "--max-error", "0.5",
                             "--save-dtype", "bfloat16")
    assert code == 0
    assert "for --max-error 0.5" in err and "(needed rank/relative error)" in err  # the per-module table
    record = json.loads((tmp_path / "low" / "merge_result.json").read_text())
    compression = record["compression"]
    assert record["dtype"] == "bfloat16" and stored_dtypes(tmp_path / "low") == {"torch.bfloat16"}
    assert compression["max_error"] == 0.5 and compression["rank"] < 16
    assert len(compression["modules"]) == 14 and all(m["error"] <= 0.5 for m in compression["modules"].values())
    assert stored_dtypes(tmp_path / "exact") == {"torch.float32"}  # the tiny model's config says float32


def test_default_save_dtype_is_the_base_models(capsys, tmp_path, tiny_model_dir, adapter_dirs):
    bf16_base = copy_model(tiny_model_dir, tmp_path / "bf16-base", record=True, dtype="bfloat16")
    code, out, _ = average(capsys, bf16_base, adapter_dirs, tmp_path / "avg", "--json")
    assert code == 0 and json.loads(out)["save_dtype"] == "bfloat16"
    assert stored_dtypes(tmp_path / "avg") == {"torch.bfloat16"}


@pytest.mark.parametrize(("args", "message"), [
    (["--max-error", "1.5"], "must be in [0, 1), got 1.5"),
    (["--save-dtype", "int8"], "--save-dtype 'int8'"),
    (["--base-model-id", "not a/hub id"], "--base-model-id 'not a/hub id': not a Hub model id"),
    (["--save-dtype", "bfloat16", "--merge-into-base"], "with --merge-into-base the model is saved in --dtype"),
])
def test_export_option_mistakes_in_the_console_script(tmp_path, tiny_model_dir, adapter_dirs, args, message):
    command = [str(SCRIPT), "merge", "--model", str(tiny_model_dir), "--adapters", str(adapter_dirs["all_r4"]),
               "--method", "average", "--out", str(tmp_path / "o"), *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and (len(lines) == 1 or len(lines) == 2 and lines[1].startswith("usage:"))
    assert message in result.stderr and not (tmp_path / "o").exists()

"""Build a pool of real PEFT / mlx adapters on a tiny Llama: good ones and one per rejection reason."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lora_recycle.adapters.card import write_card
from lora_recycle.adapters.formats import CONFIG_NAME, WEIGHTS_NAME

ALL_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BASE_NAME = "tiny-llama"


def build_tiny_base(target: Path) -> Path:
    """A 2-layer hidden-32 Llama (GQA, 128-token vocab) saved with save_pretrained; no tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    return target


class AdapterFactory:
    """Saves real PEFT adapters of one in-memory base model (deep-copied per adapter, which is fast)."""

    def __init__(self, base_dir: Path) -> None:
        from transformers import AutoModelForCausalLM

        self.base_dir = base_dir
        self.model = AutoModelForCausalLM.from_pretrained(str(base_dir))

    def peft(
        self,
        out: Path,
        seed: int,
        *,
        r: int = 4,
        alpha: float = 8,
        targets=None,
        license: str | None = "mit",
        b_std: float = 0.01,
        card: dict | None = None,
        safe: bool = True,
        **lora_kwargs,
    ) -> Path:
        """A PEFT LoRA with random non-zero B (``b_std=0`` keeps PEFT's zero init) and a model card."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=r, lora_alpha=alpha, target_modules=targets or ALL_MODULES, task_type="CAUSAL_LM", **lora_kwargs
        )
        torch.manual_seed(seed)
        model = get_peft_model(copy.deepcopy(self.model), config)
        if b_std:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "lora_B" in name:
                        param.normal_(0, b_std)
        model.save_pretrained(str(out), safe_serialization=safe)
        card_data = {**({"license": license} if license else {}), "base_model": BASE_NAME, **(card or {})}
        write_card(out, card_data, "# A test adapter")
        return out


def edit_tensors(directory: Path, edit) -> None:
    """Rewrite ``adapter_model.safetensors`` through ``edit(tensors) -> tensors``."""
    path = directory / WEIGHTS_NAME
    save_file(edit(load_file(path)), path)


def edit_config(directory: Path, **changes) -> None:
    path = directory / CONFIG_NAME
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def peft_to_mlx(peft_dir: Path, out: Path, num_layers: int = 2) -> Path:
    """Convert a PEFT adapter to mlx-lm's layout: transposed lora_a/lora_b and an absolute scale."""
    config = json.loads((peft_dir / CONFIG_NAME).read_text())
    tensors = {}
    for key, tensor in load_file(peft_dir / WEIGHTS_NAME).items():
        path = (
            key.removeprefix("base_model.model.")
            .replace(".lora_A.weight", ".lora_a")
            .replace(".lora_B.weight", ".lora_b")
        )
        tensors[path] = tensor.T.contiguous()
    out.mkdir(parents=True)
    save_file(tensors, out / "adapters.safetensors")
    mlx_config = {
        "model": config["base_model_name_or_path"],
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": {
            "rank": config["r"],
            "scale": config["lora_alpha"] / config["r"],
            "dropout": 0.0,
            "keys": sorted(config["target_modules"]),
        },
    }
    (out / CONFIG_NAME).write_text(json.dumps(mlx_config))
    write_card(out, {"license": "apache-2.0"}, "# mlx adapter")
    return out


class Evil:
    """Unpickling this creates ``marker``: the pickle runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_evil_pickle(out: Path, marker: Path, name: str = "adapter_model.bin") -> Path:
    """An adapter whose pickle weights would create ``marker`` if anything unpickled them unsafely."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": Evil(marker)}, out / name)
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "base_model_name_or_path": BASE_NAME,
        "target_modules": ["q_proj"],
    }
    (out / CONFIG_NAME).write_text(json.dumps(config))
    write_card(out, {"license": "mit"}, "# evil")
    return out


def lay_out_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes], sha: str, ref: bool = True) -> Path:
    """Place ``files`` like huggingface_hub does: blobs by hash, snapshot symlinks, refs/main."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo_dir / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, snapshot), link)
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(sha)
    return snapshot


def folder_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def huge_header_file(path: Path, claimed: int) -> Path:
    """A safetensors file whose header claims ``claimed`` bytes of JSON (a hostile header)."""
    path.write_bytes(struct.pack("<Q", claimed) + b"{}")
    return path


# What each corpus adapter must end as: id -> sorted reason codes (empty = accepted).
EXPECTED = {
    "alice/all-seven": [],
    "alice/qv-only": [],
    "bob/rslora": [],
    "bob/patterns": [],
    "bob/mirror-name": [],
    "carol/default-keys": [],
    "carol/mlx": [],
    "carol/nested/deep/adapter": [],
    "broken/no-license": ["no_license"],
    "broken/pickle-evil": ["not_safetensors"],
    "broken/pickle-plain": ["not_safetensors"],
    "broken/dora": ["unsupported_type"],
    "broken/mlx-dora": ["unsupported_type"],
    "broken/other-base": ["base_mismatch"],
    "broken/shape": ["shape_mismatch"],
    "broken/rank-vs-config": ["shape_mismatch"],
    "broken/unknown-module": ["unknown_module"],
    "broken/nan": ["nonfinite"],
    "broken/outlier": ["outlier"],
    "broken/empty-init": ["empty"],
    "broken/no-tensors": ["empty"],
    "broken/bad-json": ["corrupt"],
    "broken/truncated": ["corrupt"],
    "broken/hostile-header": ["corrupt"],
    "broken/two-reasons": ["base_mismatch", "no_license"],
}


def build_corpus(factory: AdapterFactory, root: Path, marker: Path) -> Path:
    """Write every adapter of ``EXPECTED`` under ``root`` and return it."""
    f = factory
    f.peft(root / "alice/all-seven", 1)
    f.peft(root / "alice/qv-only", 2, r=8, alpha=16, targets=["q_proj", "v_proj"])
    f.peft(
        root / "bob/rslora",
        3,
        r=16,
        alpha=8,
        use_rslora=True,
        targets=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    f.peft(root / "bob/patterns", 4, r=4, alpha=8, rank_pattern={"v_proj": 6}, alpha_pattern={"up_proj": 2})
    f.peft(root / "bob/mirror-name", 5, targets=["q_proj"])
    edit_config(root / "bob/mirror-name", base_model_name_or_path=f"unsloth/{BASE_NAME}-bnb-4bit")
    f.peft(
        root / "carol/default-keys",
        6,
        targets=["gate_proj", "up_proj", "down_proj"],
        card={"author": "carla"},
    )
    edit_tensors(
        root / "carol/default-keys",
        lambda t: {k.replace(".weight", ".default.weight"): v for k, v in t.items()},
    )
    f.peft(root / "tmp-for-mlx", 7, r=4, alpha=8, targets=["q_proj", "v_proj"])
    peft_to_mlx(root / "tmp-for-mlx", root / "carol/mlx")
    _remove_tree(root / "tmp-for-mlx")
    f.peft(root / "carol/nested/deep/adapter", 8, targets=["k_proj"])

    f.peft(root / "broken/no-license", 10, license=None)
    write_evil_pickle(root / "broken/pickle-evil", marker)
    f.peft(root / "broken/pickle-plain", 11, safe=False)
    f.peft(root / "broken/dora", 12, targets=["q_proj", "v_proj"], use_dora=True)
    f.peft(root / "tmp-for-mlx-dora", 13, r=4, alpha=8, targets=["q_proj"])
    peft_to_mlx(root / "tmp-for-mlx-dora", root / "broken/mlx-dora")
    _remove_tree(root / "tmp-for-mlx-dora")
    mlx_config = json.loads((root / "broken/mlx-dora" / CONFIG_NAME).read_text())
    (root / "broken/mlx-dora" / CONFIG_NAME).write_text(json.dumps({**mlx_config, "fine_tune_type": "dora"}))
    f.peft(root / "broken/other-base", 14)
    edit_config(root / "broken/other-base", base_model_name_or_path="meta-llama/Llama-3.1-8B-Instruct")
    f.peft(root / "broken/shape", 15, targets=["q_proj"])
    edit_tensors(root / "broken/shape", lambda t: {k: torch.zeros(4, 48) if "lora_A" in k else v for k, v in t.items()})
    f.peft(root / "broken/rank-vs-config", 16, targets=["q_proj"])
    edit_config(root / "broken/rank-vs-config", r=8)
    f.peft(root / "broken/unknown-module", 17, targets=["q_proj"])
    edit_tensors(root / "broken/unknown-module", _add_layer_9)
    f.peft(root / "broken/nan", 18, targets=["v_proj"])
    edit_tensors(root / "broken/nan", _poison)
    f.peft(root / "broken/outlier", 19, b_std=50.0)
    f.peft(root / "broken/empty-init", 20, b_std=0)
    f.peft(root / "broken/no-tensors", 21, targets=["q_proj"])
    save_file({}, root / "broken/no-tensors" / WEIGHTS_NAME)
    f.peft(root / "broken/bad-json", 22, targets=["q_proj"])
    (root / "broken/bad-json" / CONFIG_NAME).write_text("{not json")
    f.peft(root / "broken/truncated", 23, targets=["q_proj"])
    weights = root / "broken/truncated" / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-100])
    f.peft(root / "broken/hostile-header", 24, targets=["q_proj"])
    huge_header_file(root / "broken/hostile-header" / WEIGHTS_NAME, 8 << 30)
    f.peft(root / "broken/two-reasons", 25, license=None)
    edit_config(root / "broken/two-reasons", base_model_name_or_path="Qwen/Qwen2.5-7B")
    return root


def _add_layer_9(tensors: dict) -> dict:
    extra = {k.replace("layers.0.", "layers.9."): v.clone() for k, v in tensors.items() if "layers.0." in k}
    return {**tensors, **extra}


def _poison(tensors: dict) -> dict:
    key = next(k for k in sorted(tensors) if "lora_B" in k)
    tensors[key][0, 0] = float("nan")
    return tensors


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)

"""A hostile pool built from real PEFT adapters of the tiny Llama: every attack of issue 16 next to good adapters.

``build_hostile_tree`` writes a folder tree and ``build_hostile_cache`` a Hugging Face cache; scanning both
together must catalogue every adapter with exactly ``HOSTILE_EXPECTED``. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from pool_corpus import BASE_NAME, AdapterFactory, edit_config, folder_bytes, lay_out_hf_cache
from safetensors.torch import save_file

from lora_recycle.adapters.card import write_card
from lora_recycle.adapters.formats import CONFIG_NAME, WEIGHTS_NAME

DEEP = 100_000
Q0 = "base_model.model.model.layers.0.self_attn.q_proj"

# id -> sorted reasons (empty = accepted); ids of the folder tree, then of the cache.
HOSTILE_EXPECTED: dict[str, list[str]] = {
    "a-good": [],
    "b-r-nan": ["bad_config"],
    "c-good": [],
    "hostile/r-infinity": ["bad_config"],
    "hostile/r-10e400": ["bad_config"],
    "hostile/r-5000-digits": ["corrupt"],
    "hostile/alpha-nan": ["bad_config"],
    "hostile/alpha-pattern-string": ["bad_config"],
    "hostile/alpha-pattern-nan": ["bad_config"],
    "hostile/use-rslora-string": ["bad_config"],
    "hostile/rank-pattern-invalid-regex": ["bad_pattern"],
    "hostile/rank-pattern-redos": ["bad_pattern"],
    "hostile/rank-pattern-nested-quantifier": ["bad_pattern"],
    "hostile/config-deep": ["corrupt"],
    "hostile/config-huge": ["corrupt"],
    "hostile/header-deep": ["corrupt"],
    "hostile/header-duplicate-key": ["corrupt"],
    "hostile/card-billion-laughs": ["bad_card", "no_license"],
    "hostile/card-deep": ["bad_card", "no_license"],
    "hostile/card-huge-front-matter": ["bad_card", "no_license"],
    "hostile/rank-8000": ["rank_too_large"],
    "hostile/rank-8000-tensors": ["rank_too_large"],
    "hostile/rank-pattern-8000": ["rank_too_large"],
    "hostile/offsets-overlap": ["corrupt"],
    "hostile/offsets-gap": ["corrupt"],
    "hostile/trailing-bytes": ["corrupt"],
    "hostile/nan-tensor": ["nonfinite"],
    "loops/after-the-loops": [],
    "loops/m1/good": [],  # loops/m2/to-m1/good is the same folder: each real folder is walked once
    "z-good": [],
    # the Hugging Face cache source
    "dave/cached-good": [],
    "evil/ref-escape": ["outside_source"],
    "evil/link-out": ["outside_source"],
}
GOOD_IDS = sorted(k for k, v in HOSTILE_EXPECTED.items() if not v)


def write_json_text(directory: Path, text: str) -> None:
    (directory / CONFIG_NAME).write_text(text)


def _config_text(directory: Path, **raw: str) -> str:
    """The adapter's config with some fields replaced by raw JSON text (NaN, Infinity, huge numbers)."""
    config = json.loads((directory / CONFIG_NAME).read_text())
    for key in raw:
        config[key] = f"@@{key}@@"
    text = json.dumps(config)
    for key, value in raw.items():
        text = text.replace(f'"@@{key}@@"', value)
    return text


def raw_safetensors(path: Path, entries: dict[str, tuple[list[int], list[int]]], data: bytes) -> Path:
    """A safetensors file with a hand-written header: name -> (shape, data_offsets), F32."""
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": offsets}
              for name, (shape, offsets) in entries.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _q0_only(factory: AdapterFactory, out: Path, seed: int) -> Path:
    factory.peft(out, seed, targets=["q_proj"], layers_to_transform=[0])
    return out


def _float_bytes(n: int, seed: int) -> bytes:
    return (torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.01).numpy().tobytes()


def build_hostile_tree(factory: AdapterFactory, root: Path) -> Path:
    """Write the folder-tree part of ``HOSTILE_EXPECTED`` under ``root``."""
    f = factory
    f.peft(root / "a-good", 101, targets=["q_proj", "v_proj"])
    f.peft(root / "b-r-nan", 102, targets=["q_proj"])
    write_json_text(root / "b-r-nan", _config_text(root / "b-r-nan", r="NaN"))
    f.peft(root / "c-good", 103)
    f.peft(root / "z-good", 104, targets=["o_proj"])

    h = root / "hostile"
    numbers = {
        "r-infinity": {"r": "Infinity"},
        "r-10e400": {"r": "1" + "0" * 400},
        "r-5000-digits": {"r": "9" * 5000},
        "alpha-nan": {"lora_alpha": "NaN"},
        "alpha-pattern-string": {"alpha_pattern": '{"q_proj": "big"}'},
        "alpha-pattern-nan": {"alpha_pattern": '{"q_proj": NaN}'},
        "use-rslora-string": {"use_rslora": '"false"'},
        "rank-pattern-invalid-regex": {"rank_pattern": '{"(unclosed": 4}'},
        "rank-pattern-redos": {"rank_pattern": '{"(.|.|.)*X": 4}'},
        "rank-pattern-nested-quantifier": {"rank_pattern": '{"(\\\\w+\\\\.?)+q_proj": 4}'},
        "config-deep": {"nested": "[" * DEEP + "]" * DEEP},
        "config-huge": {"padding": json.dumps("x" * (3 << 20))},
    }
    for seed, (name, raw) in enumerate(numbers.items(), start=110):
        f.peft(h / name, seed, targets=["q_proj"])
        write_json_text(h / name, _config_text(h / name, **raw))

    f.peft(h / "header-deep", 130, targets=["q_proj"])
    deep = ('{"x":' + "[" * DEEP + "]" * DEEP + "}").encode()
    (h / "header-deep" / WEIGHTS_NAME).write_bytes(struct.pack("<Q", len(deep)) + deep)
    f.peft(h / "header-duplicate-key", 131, targets=["q_proj"])
    dup = f'{{"{Q0}.lora_A.weight": {{"dtype": "F32", "shape": [4, 32], "data_offsets": [0, 512]}}, '
    dup += f'"{Q0}.lora_A.weight": {{"dtype": "F32", "shape": [4, 32], "data_offsets": [0, 512]}}}}'
    (h / "header-duplicate-key" / WEIGHTS_NAME).write_bytes(struct.pack("<Q", len(dup)) + dup.encode() + bytes(512))

    laughs = ["license: mit", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    for name, front in (
        ("card-billion-laughs", "\n".join(laughs)),
        ("card-deep", "license: mit\nx: " + "[" * 5000 + "]" * 5000),
        ("card-huge-front-matter", "license: mit\n" + "\n".join(f"k{i}: {'v' * 60}" for i in range(4000))),
    ):
        f.peft(h / name, 140 + len(name), targets=["q_proj"])
        (h / name / "README.md").write_text(f"---\n{front}\n---\n\n# hostile card\n")

    f.peft(h / "rank-8000", 150, r=8000, alpha=16, targets=["q_proj"], layers_to_transform=[0])
    f.peft(h / "rank-8000-tensors", 151, r=8000, alpha=16, targets=["q_proj"], layers_to_transform=[0])
    edit_config(h / "rank-8000-tensors", r=4)
    f.peft(h / "rank-pattern-8000", 152, r=8000, alpha=16, targets=["q_proj"], layers_to_transform=[0])
    edit_config(h / "rank-pattern-8000", r=4, rank_pattern={"q_proj": 8000})

    a, b = f"{Q0}.lora_A.weight", f"{Q0}.lora_B.weight"
    layouts = {
        "offsets-overlap": ({a: ([4, 32], [0, 512]), b: ([32, 4], [0, 512])}, 512),
        "offsets-gap": ({a: ([4, 32], [0, 512]), b: ([32, 4], [600, 1112])}, 1112),
        "trailing-bytes": ({a: ([4, 32], [0, 512]), b: ([32, 4], [512, 1024])}, 1124),
    }
    for seed, (name, (entries, size)) in enumerate(layouts.items(), start=160):
        _q0_only(f, h / name, seed)
        raw_safetensors(h / name / WEIGHTS_NAME, entries, _float_bytes(size // 4, seed))

    f.peft(h / "nan-tensor", 170, targets=["v_proj"])
    path = h / "nan-tensor" / WEIGHTS_NAME
    from safetensors.torch import load_file

    tensors = load_file(path)
    next(t for k, t in sorted(tensors.items()) if "lora_B" in k)[0, 0] = float("nan")
    save_file(tensors, path)

    build_symlink_loops(f, root / "loops")
    return root


def build_symlink_loops(factory: AdapterFactory, loops: Path) -> None:
    """Self-links, a link to the parent and a two-folder cycle next to good adapters."""
    loops.mkdir(parents=True)
    (loops / "aaa-self").symlink_to("aaa-self")  # ELOOP on stat: listing it used to hide every sibling
    (loops / "up").symlink_to("..")
    factory.peft(loops / "m1" / "good", 180, targets=["k_proj"])
    (loops / "m2").mkdir()
    (loops / "m1" / "to-m2").symlink_to("../m2")
    (loops / "m2" / "to-m1").symlink_to("../m1")
    (loops / "dangling").symlink_to("does-not-exist")
    factory.peft(loops / "after-the-loops", 181, targets=["v_proj"])


def build_hostile_cache(factory: AdapterFactory, cache: Path, outside: Path) -> Path:
    """A Hugging Face cache with one good repo, a ref escaping its snapshots and a file linked outside."""
    good = factory.peft(outside / "src-good", 190, targets=["q_proj", "v_proj"])
    lay_out_hf_cache(cache, "dave/cached-good", folder_bytes(good), sha="a" * 40)

    elsewhere = factory.peft(outside / "elsewhere", 191, targets=["q_proj"])
    repo = cache / "models--evil--ref-escape"
    (repo / "snapshots").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(os.path.relpath(elsewhere, repo / "snapshots"))

    snapshot = lay_out_hf_cache(cache, "evil/link-out", folder_bytes(good), sha="c" * 40)
    (snapshot / WEIGHTS_NAME).unlink()
    (snapshot / WEIGHTS_NAME).symlink_to(elsewhere / WEIGHTS_NAME)
    return cache


def write_plain_card(directory: Path) -> None:
    write_card(directory, {"license": "mit", "base_model": BASE_NAME}, "# plain")

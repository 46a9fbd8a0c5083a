"""Session fixtures: a tiny random Llama with SmolLM2's tokenizer, a learnable toy task, PEFT adapters."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `-n auto`: one worker per core already; the tests' tensors are tiny, and a second torch thread per worker
    # only spins against the other worker (and the console scripts the tests start inherit this too)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from lora_recycle.tasks.format import Example, TaskSpec, write_task

MODULES_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COLOURS = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue", "coal": "black",
           "snow": "white", "cherry": "red", "lemon": "yellow", "leaf": "green", "ocean": "blue",
           "night": "black", "milk": "white", "tomato": "red", "corn": "yellow", "frog": "green",
           "sapphire": "blue", "crow": "black", "cloud": "white", "ruby": "red", "sun": "yellow"}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A per-run lora-recycle cache (tokenizer extracted from the GGUF once per session)."""
    path = Path(os.environ.get("LORA_RECYCLE_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["LORA_RECYCLE_CACHE"] = str(path)
    seed_tokenizer(path, tmp_path_factory)
    return path


def shared_cache(tmp_path_factory) -> Path:
    """A cache folder of this run shared by all its xdist workers (write into it under a file lock)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-cache"  # this run's only
    shared.mkdir(exist_ok=True)
    return shared


def seed_tokenizer(cache: Path, tmp_path_factory) -> None:
    """Put SmolLM2's tokenizer into ``cache``, extracted from the GGUF (~10 s) once for all xdist workers."""
    import shutil

    from filelock import FileLock

    from lora_recycle.minihub.base_model import ensure_tokenizer

    target = cache / "tokenizers" / "smollm2"
    if (target / "tokenizer.json").is_file():
        return
    shared = shared_cache(tmp_path_factory)
    with FileLock(shared / "tokenizer.lock"):
        source = ensure_tokenizer(shared)
    shutil.copytree(source, target)


@pytest.fixture(scope="session")
def tiny_hub(cache_dir, tmp_path_factory):
    """The tiny mini-hub (seed 0) in this worker's cache. Built once per run for all xdist workers (~20 s; the
    build itself is what test_demo and test_workers check) and copied, unless another worker is building it at
    that moment (then built here, rather than waiting idle). ``build_hub`` then finds every adapter built and
    catalogues the copy where it lies."""
    import shutil

    from filelock import FileLock, Timeout

    from lora_recycle.minihub.hub import build_hub, hub_root

    root = hub_root("tiny", cache_dir, 0)
    if not (root / "manifest.json").is_file():
        shared = shared_cache(tmp_path_factory)
        try:
            with FileLock(shared / "tiny-hub.lock").acquire(timeout=0):
                built = hub_root("tiny", shared, 0)
                if not (built / "manifest.json").is_file():
                    build_hub("tiny", shared, 0)
                shutil.copytree(shared / "models" / "tiny-llama", cache_dir / "models" / "tiny-llama",
                                dirs_exist_ok=True)
                shutil.copytree(built, root, ignore=shutil.ignore_patterns("pool.db", "manifest.json"),
                                dirs_exist_ok=True)
        except Timeout:
            pass
    return build_hub("tiny", cache_dir, 0)


@pytest.fixture(scope="session")
def tiny_model_dir(cache_dir, tmp_path_factory) -> Path:
    from lora_recycle.minihub.base_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0, cache_dir=cache_dir)


@pytest.fixture()
def tiny_model(tiny_model_dir):
    """A fresh (model, tokenizer) per test: tests may attach, fold and train without leaking state."""
    from lora_recycle.models.loading import load_base_model

    return load_base_model(tiny_model_dir)


def _colour_examples(seed: int, n: int) -> list[Example]:
    rng = random.Random(seed)
    names = sorted(COLOURS)
    out = []
    for i in range(n):
        word = names[rng.randrange(len(names))]
        out.append(Example(word, COLOURS[word], tuple(sorted(set(COLOURS.values()))), id=str(i)))
    return out


@pytest.fixture(scope="session")
def colour_task_dir(tmp_path_factory) -> Path:
    """A learnable multiple-choice toy task: the colour of a thing (6 choices)."""
    spec = TaskSpec(name="colour", type="multiple_choice", template="What colour is {input}?")
    return write_task(tmp_path_factory.mktemp("tasks") / "colour", spec, _colour_examples(0, 40),
                      _colour_examples(1, 30))


@pytest.fixture(scope="session")
def echo_task_dir(tmp_path_factory) -> Path:
    """A learnable generation toy task: repeat the colour word of a thing."""
    spec = TaskSpec(name="colour-gen", type="generation", template="Colour of {input}:", max_new_tokens=4)
    train = [Example(e.input, e.target) for e in _colour_examples(2, 40)]
    test = [Example(e.input, e.target) for e in _colour_examples(3, 12)]
    return write_task(tmp_path_factory.mktemp("tasks") / "colour_gen", spec, train, test)


def make_peft_adapter(model_dir: Path, out: Path, seed: int, r: int = 4, alpha: float = 8, targets=None,
                      use_rslora: bool = False, rank_pattern=None, alpha_pattern=None, b_std: float = 0.05) -> Path:
    """Save a real PEFT LoRA adapter with random A and non-zero B, deterministic in ``seed``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or MODULES_ALL, use_rslora=use_rslora,
                        rank_pattern=rank_pattern or {}, alpha_pattern=alpha_pattern or {},
                        init_lora_weights=True, task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, b_std)
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def peft_adapter_factory():
    """``make_peft_adapter`` for tests in other folders (conftest modules cannot be imported by name)."""
    return make_peft_adapter


@pytest.fixture(scope="session")
def adapter_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Heterogeneous PEFT adapters: ranks, alphas, rsLoRA, patterns and target sets all differ."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "all_r4": make_peft_adapter(tiny_model_dir, root / "all_r4", 1, r=4, alpha=8),
        "qv_r8": make_peft_adapter(tiny_model_dir, root / "qv_r8", 2, r=8, alpha=16, targets=["q_proj", "v_proj"]),
        "rslora_r2": make_peft_adapter(tiny_model_dir, root / "rslora_r2", 3, r=2, alpha=4, use_rslora=True,
                                       targets=["q_proj", "k_proj", "up_proj", "down_proj"]),
        "patterns": make_peft_adapter(tiny_model_dir, root / "patterns", 4, r=4, alpha=8,
                                      rank_pattern={"v_proj": 6, "model.layers.1.mlp.down_proj": 2},
                                      alpha_pattern={"o_proj": 3, "up_proj": 20}),
    }


@pytest.fixture(scope="session")
def rank32_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A rank-32 PEFT LoRA on all seven projections (copies of it overflow vLLM's rank ceiling when concatenated)."""
    return make_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "all_r32", 7, r=32, alpha=32)


def make_derived_pool(tmp: Path, model_dir: Path, sources: dict[str, Path], n: int, seed: int = 0,
                      broken: float = 0.0) -> tuple[Path, Path]:
    """``lora-recycle hub scale`` from the given adapters, scanned: ``(derived pool folder, its catalog)``."""
    import shutil

    from lora_recycle.cli import main

    for name, path in sources.items():
        shutil.copytree(path, tmp / "sources" / name)
    assert main(["pool", "scan", str(tmp / "sources"), "--base-model", str(model_dir), "--db", str(tmp / "sources.db"),
                 "--no-require-license"]) == 0
    out, db = tmp / "derived", tmp / "derived.db"
    assert main(["hub", "scale", "--adapters", str(n), "--from", str(tmp / "sources.db"), "--out", str(out),
                 "--seed", str(seed), "--broken", str(broken)]) == 0
    assert main(["pool", "scan", str(out), "--base-model", str(model_dir), "--db", str(db)]) == 0
    return out, db


@pytest.fixture(scope="session")
def derived_pool_factory():
    """``make_derived_pool`` for tests in other folders."""
    return make_derived_pool


@pytest.fixture()
def pool_db(tmp_path, tiny_model_dir, adapter_dirs) -> Path:
    """A catalog of the four ``adapter_dirs`` copied to ``tmp_path/pool`` (accepted, no license required)."""
    import shutil

    from lora_recycle.cli import main

    root = tmp_path / "pool"
    for name, path in adapter_dirs.items():
        shutil.copytree(path, root / name)
    db = tmp_path / "pool.db"
    assert main(["pool", "scan", str(root), "--base-model", str(tiny_model_dir), "--db", str(db),
                 "--no-require-license"]) == 0
    return db

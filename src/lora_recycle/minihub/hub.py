"""Build (or reuse) the mini-hub of a profile: base model, task suite, adapter pool, manifest.

Everything lands in ``<cache>/hub/<profile>-<config hash>/``; finished adapters are kept, so an
interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from lora_recycle import __version__
from lora_recycle.errors import UserError
from lora_recycle.minihub.base_model import TINY_ID, build_tiny_model, default_cache_dir
from lora_recycle.minihub.pool import AdapterPlan, make_broken_adapters, plan_pool, train_pool_adapter

HUB_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Profile:
    """Sizes of one mini-hub profile (and of the demo run on it)."""

    name: str
    base: str  # "tiny" or "smollm2"
    pool_size: int
    adapter_steps: int
    target_lora_steps: int
    merge_steps: int
    test_limit: int
    demo_k: int
    in_house: bool = False  # train one "in-house" adapter per target task (the paper's Q4 pool)


PROFILES = {
    "tiny": Profile("tiny", "tiny", pool_size=8, adapter_steps=20, target_lora_steps=40, merge_steps=20,
                    test_limit=60, demo_k=5),
    # Sized for a 2-core CPU: SmolLM2-135M takes ~2 s per batch-8 training step there.
    "small": Profile("small", "smollm2", pool_size=12, adapter_steps=16, target_lora_steps=40, merge_steps=20,
                     test_limit=100, demo_k=6),
    "full": Profile("full", "smollm2", pool_size=64, adapter_steps=100, target_lora_steps=400, merge_steps=100,
                    test_limit=400, demo_k=30, in_house=True),
}


@dataclass
class Hub:
    """A built mini-hub on disk."""

    profile: Profile
    root: Path
    base_model: Path
    base_model_id: str
    tasks: dict[str, Path]
    source_tasks: list[str]
    target_tasks: list[str]
    adapters: list[Path]
    broken: list[Path]
    in_house: dict[str, Path] = field(default_factory=dict)  # target task -> its in-house adapter (full only)

    @property
    def pool_dir(self) -> Path:
        return self.root / "pool"

    @property
    def catalog(self) -> Path:
        """The SQLite pool catalog the pool directory was scanned into."""
        return self.root / "pool.db"


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return PROFILES[name]


def ensure_base(profile: Profile, cache_dir: Path) -> tuple[Path, str]:
    """The profile's base model directory and the Hub id adapters name as their base."""
    if profile.base == "tiny":
        return build_tiny_model(cache_dir / "models" / "tiny-llama", seed=0, cache_dir=cache_dir), TINY_ID
    from lora_recycle.minihub.smollm2 import SMOLLM2_ID, ensure_smollm2

    return ensure_smollm2(cache_dir), SMOLLM2_ID


def hub_key(profile: Profile, seed: int, plans: list[AdapterPlan]) -> str:
    payload = json.dumps({"profile": asdict(profile), "seed": seed, "plans": [asdict(p) for p in plans],
                          "format": HUB_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_hub(profile_name: str = "small", cache_dir: Path | None = None, seed: int = 0) -> Hub:
    """Build or reuse the mini-hub for a profile, with progress bars; returns where everything is."""
    from lora_recycle.minihub.tasks import SOURCE_TASKS, TARGET_TASKS, build_task_suite
    from lora_recycle.models.loading import load_base_model
    from lora_recycle.tasks import load_task

    profile = get_profile(profile_name)
    cache_dir = Path(cache_dir or default_cache_dir())
    plans = plan_pool(list(SOURCE_TASKS), profile.pool_size, profile.adapter_steps, seed)
    root = cache_dir / "hub" / f"{profile.name}-{hub_key(profile, seed, plans)}"
    base_dir, base_id = ensure_base(profile, cache_dir)
    tasks_dir = root / "tasks"
    if not (tasks_dir / ".complete").is_file():
        build_task_suite(tasks_dir, seed=seed)
        (tasks_dir / ".complete").write_text("ok\n")
    tasks = {p.name: p for p in sorted(tasks_dir.iterdir()) if (p / "task.yaml").is_file()}
    adapters = []
    todo = [p for p in plans if not (root / "pool" / p.contributor / p.name / "adapter_config.json").is_file()]
    model = tokenizer = None
    with tqdm(total=len(plans), initial=len(plans) - len(todo), desc=f"mini-hub {profile.name}: adapters",
              unit="adapter", disable=False, mininterval=5) as bar:
        for plan in plans:
            out = root / "pool" / plan.contributor / plan.name
            if not (out / "adapter_config.json").is_file():
                if model is None:
                    model, tokenizer = load_base_model(base_dir)
                train_pool_adapter(plan, model, tokenizer, load_task(tasks[plan.task]), out, base_id)
                bar.update(1)
            adapters.append(out)
    broken_root = root / "pool" / "mallory"
    if not (broken_root / ".complete").is_file():
        broken = make_broken_adapters(adapters[0], broken_root)
        (broken_root / ".complete").write_text("ok\n")
    else:
        broken = sorted(p for p in broken_root.iterdir() if p.is_dir())
    in_house = {}
    if profile.in_house:
        in_house = build_in_house(profile, root, tasks, list(TARGET_TASKS), base_dir, base_id, seed)
    hub = Hub(profile, root, base_dir, base_id, tasks, list(SOURCE_TASKS), list(TARGET_TASKS), adapters, broken,
              in_house)
    scan_into_catalog(hub)
    manifest = {"format_version": HUB_FORMAT_VERSION, "lora_recycle_version": __version__,
                "profile": asdict(profile), "seed": seed, "base_model": str(base_dir), "base_model_id": base_id,
                "tasks": sorted(tasks), "source_tasks": hub.source_tasks, "target_tasks": hub.target_tasks,
                "adapters": [{"path": str(a.relative_to(root)), **asdict(p)}
                             for a, p in zip(adapters, plans, strict=True)],
                "broken": [str(b.relative_to(root)) for b in broken],
                "in_house": {name: str(path.relative_to(root)) for name, path in in_house.items()}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return hub


def build_in_house(profile: Profile, root: Path, tasks: dict[str, Path], targets: list[str], base_dir: Path,
                   base_id: str, seed: int) -> dict[str, Path]:
    """One organisation's own LoRA per target task (rank 16, all seven projections), kept out of the pool.

    The paper's Q4 asks whether a pool of such in-house adapters recycles better than Hub ones.
    """
    from lora_recycle.models.loading import load_base_model
    from lora_recycle.recipe.target import cached_target_lora
    from lora_recycle.tasks import load_task
    from lora_recycle.tuning.target_lora import TargetLoraConfig

    out: dict[str, Path] = {}
    model = tokenizer = None
    config = TargetLoraConfig(rank=16, alpha=32, steps=profile.adapter_steps, lr=1e-3, seed=seed,
                              eval_every=max(1, profile.adapter_steps // 4), keep_initial=False)
    for name in tqdm(targets, desc=f"mini-hub {profile.name}: in-house adapters", disable=False, mininterval=5):
        target = root / "in-house" / name
        if not (target / "adapter_config.json").is_file() and model is None:
            model, tokenizer = load_base_model(base_dir)
        out[name], _ = cached_target_lora(model, tokenizer, load_task(tasks[name]), config, target,
                                          base_model_id=base_id)
    return out


def scan_into_catalog(hub: Hub) -> dict:
    """Scan the hub's pool into ``hub.catalog`` with the pool machinery (incremental, so cheap when warm)."""
    from lora_recycle.pool import Catalog, ValidationPolicy, load_base_spec, scan_pool

    base = load_base_spec(hub.base_model, base_name=hub.base_model_id)
    with Catalog(hub.catalog) as catalog:
        summary = scan_pool([hub.pool_dir], base, catalog, ValidationPolicy(), progress=False)
    return summary.to_dict()

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
from lora_recycle.minihub.pool import BATCH_SIZE, AdapterPlan, make_broken_adapters, plan_pool
from lora_recycle.minihub.specialists import SpecialistScore, summary
from lora_recycle.minihub.trainer import TrainerSetup, default_workers, job_groups, run_jobs

# 2: the key leaves out the demo's own sizes; 3: in-house adapters train 2x and gate on test rows
HUB_FORMAT_VERSION = 3
IN_HOUSE_STEPS_FACTOR = 2  # in-house adapters train up to this many times the pool's steps (see in_house_config)
DEMO_FIELDS = ("target_lora_steps", "merge_steps", "test_limit", "demo_k")  # sizes of the demo, not of the hub


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
    adapter_lr: float = 2e-3  # pool learning rate at rank 8 / alpha 16 (others matched to their LoRA scale)
    adapter_batch_size: int = BATCH_SIZE  # pool and in-house adapters' rows per step
    source_eval_limit: int = 100  # test rows of its own task each pool adapter is scored on
    precision: str = "auto"  # bf16 autocast where the hardware has it natively, else fp32


PROFILES = {
    "tiny": Profile("tiny", "tiny", pool_size=8, adapter_steps=20, target_lora_steps=40, merge_steps=20,
                    test_limit=60, demo_k=5, source_eval_limit=60),
    # Sized by measurement on 2 CPU cores (bench/train_step.py, docs/minihub/README.md): bf16, batch 16
    # with the shared prompt prefix run once, 80 training rows per task, so 24 steps are 4.8 epochs at most;
    # each adapter validates every 5 steps and stops after 3 validations without a new best.
    "small": Profile("small", "smollm2", pool_size=6, adapter_steps=24, target_lora_steps=40, merge_steps=20,
                     test_limit=100, demo_k=4, adapter_lr=3e-3),
    "full": Profile("full", "smollm2", pool_size=60, adapter_steps=24, target_lora_steps=400, merge_steps=100,
                    test_limit=400, demo_k=30, in_house=True, adapter_lr=3e-3),
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
    scores: list[SpecialistScore] = field(default_factory=list)  # pool adapters on their own source tasks
    in_house_scores: list[SpecialistScore] = field(default_factory=list)
    precision: str = "fp32"

    @property
    def pool_dir(self) -> Path:
        return self.root / "pool"

    @property
    def catalog(self) -> Path:
        """The SQLite pool catalog the pool directory was scanned into."""
        return self.root / "pool.db"


def profile_workers(profile: Profile, device: str = "cpu") -> int:
    """Default worker processes for a profile's build and demo: 1 for tiny (too small to repay them), else one
    per core, at most 2, on a CPU."""
    return 1 if profile.base == "tiny" else default_workers(device)


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


def hub_key(profile: Profile, seed: int, plans: list[AdapterPlan], targets: list[str]) -> str:
    """What names a built hub: the profile's hub sizes, the seed, every adapter's plan, the held-out targets and
    the task suite's fingerprint (the demo's own sizes are left out, so tuning the demo reuses the hub)."""
    from lora_recycle.minihub.tasks.suite import SUITE_FINGERPRINT

    sizes = {k: v for k, v in asdict(profile).items() if k not in DEMO_FIELDS}
    payload = json.dumps({"profile": sizes, "seed": seed, "plans": [asdict(p) for p in plans], "targets": targets,
                          "suite": SUITE_FINGERPRINT, "format": HUB_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def hub_plans(profile: Profile, seed: int) -> list[AdapterPlan]:
    """The profile's pool plan: which adapter is trained on which source task, how (cheap: no training)."""
    from lora_recycle.minihub.tasks import SOURCE_TASKS

    return plan_pool(list(SOURCE_TASKS), profile.pool_size, profile.adapter_steps, seed, profile.adapter_lr,
                     profile.adapter_batch_size)


def hub_root(profile_name: str, cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Where ``build_hub`` builds (or finds) a profile's hub; it is complete once it holds ``manifest.json``."""
    from lora_recycle.minihub.tasks import TARGET_TASKS

    profile = get_profile(profile_name)
    key = hub_key(profile, seed, hub_plans(profile, seed), list(TARGET_TASKS))
    return Path(cache_dir or default_cache_dir()) / "hub" / f"{profile.name}-{key}"


def build_hub(profile_name: str = "small", cache_dir: Path | None = None, seed: int = 0,
              device: str = "cpu", workers: int | None = None) -> Hub:
    """Build or reuse the mini-hub for a profile, with progress bars; returns where everything is.

    ``workers`` processes train adapters side by side (default: one per core, at most 2, on a CPU; 1 for
    the tiny profile and on accelerators).
    """
    from lora_recycle.extras import require_extra
    from lora_recycle.minihub.tasks import SOURCE_TASKS, TARGET_TASKS, build_task_suite
    from lora_recycle.models.precision import resolve_precision

    profile = get_profile(profile_name)
    require_extra("hub", "the mini-hub")
    cache_dir = Path(cache_dir or default_cache_dir())
    plans = hub_plans(profile, seed)
    root = hub_root(profile_name, cache_dir, seed)
    base_dir, base_id = ensure_base(profile, cache_dir)
    tasks_dir = root / "tasks"
    if not (tasks_dir / ".complete").is_file():
        build_task_suite(tasks_dir, seed=seed)
        (tasks_dir / ".complete").write_text("ok\n")
    tasks = {p.name: p for p in sorted(tasks_dir.iterdir()) if (p / "task.yaml").is_file()}
    precision = resolve_precision(profile.precision, device)
    setup = TrainerSetup(base_dir, base_id, device, precision, profile.source_eval_limit, root)
    workers = profile_workers(profile, device) if workers is None else workers
    outs = [root / "pool" / p.contributor / p.name for p in plans]
    in_house = {name: root / "in-house" / name for name in TARGET_TASKS} if profile.in_house else {}
    groups = job_groups(plans, outs, tasks, in_house, in_house_config(profile, seed, precision) if in_house else None)
    todo = sum(not _is_built(job.out) for group in groups for job in group)
    total = sum(map(len, groups))
    with tqdm(total=total, initial=total - todo, desc=f"mini-hub {profile.name}: adapters ({workers} workers)",
              unit="adapter", disable=False, mininterval=5) as bar:
        run_jobs([[job for job in group if not _is_built(job.out)] for group in groups], setup, workers, bar.update)
    adapters = outs  # every planned adapter is on disk now
    scores = [_card_score(out, p.name, p.task, tasks[p.task]) for p, out in zip(plans, adapters, strict=True)]
    broken_root = root / "pool" / "mallory"
    if not (broken_root / ".complete").is_file():
        broken = make_broken_adapters(adapters[0], broken_root)
        (broken_root / ".complete").write_text("ok\n")
    else:
        broken = sorted(p for p in broken_root.iterdir() if p.is_dir())
    in_house_scores = [_card_score(path, f"in-house/{name}", name, tasks[name]) for name, path in in_house.items()]
    hub = Hub(profile, root, base_dir, base_id, tasks, list(SOURCE_TASKS), list(TARGET_TASKS), adapters, broken,
              in_house, scores, in_house_scores, precision)
    scan_into_catalog(hub)
    manifest = {"format_version": HUB_FORMAT_VERSION, "lora_recycle_version": __version__,
                "profile": asdict(profile), "seed": seed, "base_model": str(base_dir), "base_model_id": base_id,
                "precision": precision, "tasks": sorted(tasks), "source_tasks": hub.source_tasks,
                "target_tasks": hub.target_tasks,
                "adapters": [{"path": str(a.relative_to(root)), **asdict(p), "source_accuracy": sc.source_accuracy,
                              "base_accuracy": sc.base_accuracy, "precision": _card_precision(a, precision)}
                             for a, p, sc in zip(adapters, plans, scores, strict=True)],
                "broken": [str(b.relative_to(root)) for b in broken],
                "in_house": {name: str(path.relative_to(root)) for name, path in in_house.items()},
                "in_house_adapters": [{"task": sc.task, "path": str(in_house[sc.task].relative_to(root)),
                                       "source_accuracy": sc.source_accuracy, "base_accuracy": sc.base_accuracy}
                                      for sc in in_house_scores],
                "specialists": summary(scores),
                "in_house_specialists": summary(in_house_scores) if in_house_scores else None}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return hub


def _is_built(out: Path) -> bool:
    """An adapter is built once it is saved and its card carries its own-task score."""
    from lora_recycle.adapters.card import read_card_data

    return (out / "adapter_config.json").is_file() and "source_accuracy" in read_card_data(out)


def _card_score(adapter_dir: Path, name: str, task_name: str, task_dir: Path) -> SpecialistScore:
    """The own-task scores recorded in an adapter's card (NaN if the card predates them)."""
    from lora_recycle.adapters.card import read_card_data
    from lora_recycle.tasks.format import load_spec

    card = read_card_data(adapter_dir)
    return SpecialistScore(name, task_name, load_spec(task_dir).type, float(card.get("source_accuracy", "nan")),
                           float(card.get("base_accuracy", "nan")))


def _card_precision(adapter_dir: Path, default: str) -> str:
    from lora_recycle.adapters.card import read_card_data

    return str(read_card_data(adapter_dir).get("training_precision", default))


def in_house_config(profile: Profile, seed: int, precision: str):
    """One organisation's own LoRA per target task (rank 16, all seven projections), kept out of the pool.

    The paper's Q4 asks whether a pool of such in-house adapters recycles better than Hub ones. They train
    up to ``IN_HOUSE_STEPS_FACTOR`` x the pool's steps (~10 epochs, as the study's target-task LoRA): at the
    pool's 4.8 epochs their median gain was +10 points (rhyme_choice, a target then, stayed below the base).
    """
    from lora_recycle.minihub.pool import EVAL_EVERY, PATIENCE, matched_lr
    from lora_recycle.tuning.target_lora import TargetLoraConfig

    steps = IN_HOUSE_STEPS_FACTOR * profile.adapter_steps
    return TargetLoraConfig(rank=16, alpha=32, dropout=0.0, steps=steps,
                            lr=matched_lr(profile.adapter_lr, 16, 32, False), batch_size=profile.adapter_batch_size,
                            seed=seed, eval_every=min(EVAL_EVERY, steps), patience=PATIENCE,
                            keep_initial=False, precision=precision, select_by="accuracy")


def scan_into_catalog(hub: Hub) -> dict:
    """Scan the hub's pool into ``hub.catalog`` with the pool machinery (incremental, so cheap when warm)."""
    from lora_recycle.pool import Catalog, ValidationPolicy, load_base_spec, scan_pool

    base = load_base_spec(hub.base_model, base_name=hub.base_model_id)
    with Catalog(hub.catalog) as catalog:
        summary = scan_pool([hub.pool_dir], base, catalog, ValidationPolicy(), progress=False)
    return summary.to_dict()

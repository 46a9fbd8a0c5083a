"""Build mini-hub tasks into the task format: deterministic splits, the source/target division.

Every task gets 100 labelled rows in ``train.jsonl`` (the format trains on the first 80 and validates
on the last 20) and a disjoint ``test.jsonl`` of up to ``MAX_TEST`` rows (fewer where the data is
smaller: iris, wine, countries, languages). The same seed gives the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

from lora_recycle.minihub.tasks import cldr, geography, numerals, phonetics, sentiment, tabular
from lora_recycle.minihub.tasks.registry import TASK_BUILDERS, get_task_builder
from lora_recycle.tasks.format import Example, TaskSpec, write_task

BUILDER_MODULES = (tabular, phonetics, sentiment, numerals, cldr, geography)  # each registers its builders
N_TRAIN = 100
MIN_TEST = 40
MAX_TEST = 400

# Held out: no pool adapter is ever trained on these; each has related source tasks in its family.
# The first target is the demo's default.
TARGET_TASKS: list[str] = ["phrase_sentiment", "wine_cultivar", "country_language", "number_words_es",
                           "country_name_es", "country_alpha3"]


# In the suite but given no pool adapters: SmolLM2-135M does not learn them from 80 examples. A rank-8
# LoRA trained 4-6 epochs (batch 16, lr 3e-3, best validation snapshot) scored within noise of the base
# or below it on 100 test rows (gain in points), while the kept source tasks gain 12-47 points (multiple
# choice) and 0-94 (generation, from a base that never answers in the expected form). A pool
# adapter that is no specialist has nothing to transfer, and Hub authors do not publish such adapters.
NOT_POOLED: dict[str, str] = {
    "emoji_name": "-3 (base 0.26): emoji names are knowledge the model lacks",
    "flag_country": "-6 (base 0.24): flag emoji to country, the same",
    "syllable_count": "+2 (base 0.25): validation loss stays at ln 4, nothing learned",
    "word_intensity": "-1 (base 0.49): strong vs mild, nothing learned",
    "calendar_names": "+6 (base 0.00): validation loss rises from the first epoch",
    "rhyme_choice": "-7 (base 0.27) for the rank-16 in-house LoRA after two tries, and 0.20 on average over 3 "
                    "seeds for the study's rank-64 target-task LoRA (4-way chance 0.25): once a held-out target, "
                    "it has nothing to recycle into",
    "iris_species": "0 (base 0.35) at rank 8 and at rank 64 with two learning rates: four numbers are too "
                    "few tokens to learn three species from",
    # Learnable, but too dear for the full build's hour: 40 tokens of ASCII art per row make its steps 5.4 s
    # against 1.6-3.1 s elsewhere (bench/adapter_cost.py); words_to_digits_fr (+16) took its place.
    "digits_ascii": "learnable, but a step costs 2.5x a typical source task's (40 tokens of art per row)",
}


def ordered_task_names() -> list[str]:
    """Every registered task: modules in ``BUILDER_MODULES`` order, each module's tasks as it defines them.

    Not plain registration order, which depends on which module some caller happened to import first.
    """
    modules = [module.__name__ for module in BUILDER_MODULES]
    builders = list(TASK_BUILDERS.values())
    return [b.name for b in sorted(builders, key=lambda b: (modules.index(b.build.__module__), builders.index(b)))]


def task_families() -> dict[str, list[str]]:
    """Family -> its task names in suite order (families are what transfer is expected within)."""
    families: dict[str, list[str]] = {}
    for name in TASK_NAMES:
        families.setdefault(TASK_BUILDERS[name].family, []).append(name)
    return families


def interleave_families(names: list[str]) -> list[str]:
    """Round-robin over families, so any prefix (a small pool trains the first few) spans the families."""
    queues = [[n for n in members if n in names] for members in task_families().values()]
    ordered = []
    while any(queues):
        ordered += [queue.pop(0) for queue in queues if queue]
    return ordered


TASK_NAMES: list[str] = ordered_task_names()
TASK_FAMILIES: dict[str, list[str]] = task_families()
SOURCE_TASKS: list[str] = interleave_families([n for n in TASK_NAMES if n not in TARGET_TASKS and n not in NOT_POOLED])


# The suite's content at seed 0 (``suite_fingerprint``): part of every hub's key, so a changed task builder
# rebuilds the hubs trained on the old tasks. A test checks it against the built suite; update it with it.
SUITE_FINGERPRINT = "48bc8d16153327af"


def suite_fingerprint(task_dirs: list[Path]) -> str:
    """A hash of every task's files (definition, training and test rows), tasks in name order."""
    import hashlib

    digest = hashlib.sha256()
    for directory in sorted(task_dirs, key=lambda d: Path(d).name):
        for name in sorted(p.name for p in Path(directory).iterdir() if p.is_file()):
            digest.update(f"{Path(directory).name}/{name}\n".encode())
            digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()[:16]


def unambiguous(examples: list[Example]) -> list[Example]:
    """First occurrence of each input; inputs seen with two different targets are dropped altogether."""
    targets: dict[str, set[str]] = {}
    for ex in examples:
        targets.setdefault(ex.input, set()).add(ex.target)
    seen: set[str] = set()
    kept = []
    for ex in examples:
        if len(targets[ex.input]) == 1 and ex.input not in seen:
            seen.add(ex.input)
            kept.append(ex)
    return kept


def split_examples(examples: list[Example], rng: random.Random) -> tuple[list[Example], list[Example]]:
    """Shuffle the unambiguous examples; the first ``N_TRAIN`` train, up to ``MAX_TEST`` more test."""
    pool = unambiguous(examples)
    rng.shuffle(pool)
    if len(pool) < N_TRAIN + MIN_TEST:
        raise ValueError(f"only {len(pool)} distinct examples; need {N_TRAIN + MIN_TEST}")
    return pool[:N_TRAIN], pool[N_TRAIN:N_TRAIN + MAX_TEST]


def build_task(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Write task ``name`` (built for ``seed``) to ``out_dir / name``; returns that directory."""
    builder = get_task_builder(name)
    rng = random.Random(f"{name}/{seed}")  # str seeds are stable across processes (no hash randomisation)
    draft = builder.build(rng)
    train, test = split_examples(draft.examples, rng)
    metric = "accuracy" if draft.type == "multiple_choice" else "exact_match"
    spec = TaskSpec(name=name, type=draft.type, template=draft.template, system=draft.system, metric=metric,
                    max_new_tokens=draft.max_new_tokens, description=draft.description, domain=builder.domain)
    return write_task(Path(out_dir) / name, spec, train, test)


def build_task_suite(out_dir: Path, seed: int = 0, names: list[str] | None = None) -> list[Path]:
    """Build every registered task (or ``names``) under ``out_dir``; returns their directories in order."""
    return [build_task(name, out_dir, seed) for name in (names if names is not None else TASK_NAMES)]

"""The mini-hub task suite: deterministic, loadable, disjoint, valid, varied, with a sound source/target split."""

from __future__ import annotations

import random

import pytest

from lora_recycle.errors import UserError
from lora_recycle.minihub.tasks import (
    SOURCE_TASKS,
    TARGET_TASKS,
    TASK_BUILDERS,
    TASK_FAMILIES,
    TASK_NAMES,
    build_task,
    build_task_suite,
    get_task_builder,
    register_task,
)
from lora_recycle.minihub.tasks.suite import MAX_TEST, N_TRAIN, NOT_POOLED, unambiguous
from lora_recycle.tasks.format import Example, load_task

FILES = ("task.yaml", "train.jsonl", "test.jsonl")
MAX_PROMPT_TOKENS = 120


@pytest.fixture(scope="session")
def suite_dirs(tmp_path_factory):
    """The whole suite built twice for seed 0, into two different directories."""
    first = build_task_suite(tmp_path_factory.mktemp("suite_a"), seed=0)
    second = build_task_suite(tmp_path_factory.mktemp("suite_b"), seed=0)
    return dict(zip(TASK_NAMES, zip(first, second, strict=True), strict=True))


@pytest.fixture(scope="session")
def smollm2_tokenizer(cache_dir):
    from lora_recycle.minihub.base_model import ensure_tokenizer
    from lora_recycle.models.loading import load_tokenizer

    return load_tokenizer(ensure_tokenizer(cache_dir))


def test_suite_fingerprint_names_the_built_suite(suite_dirs):
    """Hub keys hold SUITE_FINGERPRINT: a changed task builder must change it (and so rebuild the hubs)."""
    from lora_recycle.minihub.tasks.suite import SUITE_FINGERPRINT, suite_fingerprint

    built = suite_fingerprint([first for first, _ in suite_dirs.values()])
    assert built == SUITE_FINGERPRINT, f"the task suite changed: set SUITE_FINGERPRINT = {built!r} in suite.py"


def test_suite_size_domains_and_split():
    assert len(TASK_NAMES) >= 20 and set(TASK_NAMES) == set(TASK_BUILDERS)
    assert len({TASK_BUILDERS[n].domain for n in TASK_NAMES}) >= 5
    assert len(SOURCE_TASKS) >= 16 and len(TARGET_TASKS) >= 4
    assert not set(SOURCE_TASKS) & set(TARGET_TASKS)
    assert not set(NOT_POOLED) & (set(SOURCE_TASKS) | set(TARGET_TASKS)) and set(NOT_POOLED) <= set(TASK_NAMES)
    assert sorted(SOURCE_TASKS + TARGET_TASKS + list(NOT_POOLED)) == sorted(TASK_NAMES)
    assert len(SOURCE_TASKS) == len(set(SOURCE_TASKS))


def test_every_target_has_a_source_in_its_family():
    for target in TARGET_TASKS:
        family = TASK_BUILDERS[target].family
        assert set(TASK_FAMILIES[family]) & set(SOURCE_TASKS), f"{target}: no source task in family {family}"


def test_source_order_spans_families_early():
    """A small pool trains the first sources: they should cover one task of each family first."""
    families_with_sources = {TASK_BUILDERS[n].family for n in SOURCE_TASKS}
    prefix = SOURCE_TASKS[:len(families_with_sources)]
    assert {TASK_BUILDERS[n].family for n in prefix} == families_with_sources


def test_both_task_types_are_present(suite_dirs):
    types = {load_task(first).type for first, _ in suite_dirs.values()}
    assert types == {"multiple_choice", "generation"}


def test_registry_refuses_duplicates_and_suggests_names():
    with pytest.raises(ValueError, match="already registered"):
        register_task("iris_species", family="tabular", domain="science")(lambda rng: None)
    with pytest.raises(UserError, match="did you mean iris_species"):
        get_task_builder("iris_specie")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_builds_deterministically(name, suite_dirs):
    first, second = suite_dirs[name]
    for file in FILES:
        assert (first / file).read_bytes() == (second / file).read_bytes(), f"{name}/{file} differs between builds"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_is_valid(name, suite_dirs):
    task = load_task(suite_dirs[name][0])
    spec = task.spec
    assert spec.name == name and spec.domain == TASK_BUILDERS[name].domain and spec.description
    assert spec.metric == ("accuracy" if spec.type == "multiple_choice" else "exact_match")
    train, val, test = task.split("train"), task.split("val"), task.split("test")
    assert (len(train), len(val)) == (80, 20)
    available = len(unambiguous(TASK_BUILDERS[name].build(random.Random(f"{name}/0")).examples))
    assert len(test) == min(MAX_TEST, available - N_TRAIN)
    assert len(test) >= 200 or available < N_TRAIN + 200, "test set smaller than the data allows"
    labelled = [ex.input for ex in train + val]
    held_out = [ex.input for ex in test]
    assert len(set(labelled)) == len(labelled) and len(set(held_out)) == len(held_out)
    assert not set(labelled) & set(held_out), "an input is in both train.jsonl and test.jsonl"
    for ex in train + val + test:
        assert ex.input.strip() and ex.target.strip()
        if spec.type == "multiple_choice":
            assert 2 <= len(ex.choices) <= 6 and len(set(ex.choices)) == len(ex.choices)
            assert ex.target in ex.choices
        else:
            assert ex.choices is None


@pytest.mark.parametrize("name", TASK_NAMES)
def test_prompts_are_short_and_answers_fit(name, suite_dirs, smollm2_tokenizer):
    from lora_recycle.tasks.prompting import encode_answer, encode_prompt

    task = load_task(suite_dirs[name][0])
    examples = task.split("train") + task.split("val") + task.split("test")
    longest = max(len(encode_prompt(smollm2_tokenizer, task.spec, ex)) for ex in examples)
    assert longest < MAX_PROMPT_TOKENS, f"{name}: a prompt of {longest} tokens"
    if task.type == "generation":
        answer = max(len(encode_answer(smollm2_tokenizer, ex.target)) for ex in examples)
        assert answer < task.spec.max_new_tokens, f"{name}: an answer of {answer} tokens"


def test_another_seed_gives_another_split(tmp_path):
    a = load_task(build_task("number_words_en", tmp_path / "a", seed=0))
    b = load_task(build_task("number_words_en", tmp_path / "b", seed=1))
    assert [ex.input for ex in a.split("train")] != [ex.input for ex in b.split("train")]


def test_suite_builds_a_subset(tmp_path):
    paths = build_task_suite(tmp_path, names=["wine_cultivar", "country_alpha3"])
    assert [p.name for p in paths] == ["wine_cultivar", "country_alpha3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["country_alpha3", "wine_cultivar"]


def test_unambiguous_drops_conflicting_inputs():
    rows = [Example("a", "1"), Example("b", "2"), Example("a", "1"), Example("c", "3"), Example("c", "4")]
    assert [(ex.input, ex.target) for ex in unambiguous(rows)] == [("a", "1"), ("b", "2")]


def test_pool_learning_rates_match_each_lora_scale():
    """rank/alpha/rsLoRA mixes get learning rates that move their delta equally fast (within the clip)."""
    import math

    from lora_recycle.minihub.pool import MAX_LR, matched_lr, plan_pool

    def speed(lr, r, a, rs):
        return (a / math.sqrt(r) if rs else a / r) * math.sqrt(r) * lr

    reference = speed(1e-3, 8, 16, False)
    for r, a, rs in ((8, 16, False), (16, 32, False), (4, 8, False), (16, 16, True), (32, 32, False), (4, 32, False)):
        assert speed(matched_lr(1e-3, r, a, rs), r, a, rs) == pytest.approx(reference)
    assert matched_lr(1e-3, 64, 8, False) == pytest.approx(1.5e-3)  # clipped at 1.5x
    assert matched_lr(1e-3, 64, 16, False) == pytest.approx(1.5e-3)
    plans = plan_pool(["a", "b"], 12, 10, seed=0, base_lr=3e-3)
    assert len({p.lr for p in plans}) > 1 and all(3e-3 * 0.7 * 0.25 <= p.lr <= MAX_LR for p in plans)

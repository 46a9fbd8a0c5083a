"""The registry of mini-hub task builders: name -> (family, domain, builder), filled by a decorator.

A builder turns a seeded ``random.Random`` into a ``TaskDraft``: the prompt settings and every
candidate example the data offers, in a deterministic order. Splitting (dedupe, shuffle, 100 train
rows, a disjoint test set) is the suite's job, the same for every task.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lora_recycle.registry import Registry
from lora_recycle.tasks.format import Example, TaskType


@dataclass(frozen=True)
class TaskDraft:
    """What a builder returns: prompt settings and all candidate examples (the suite splits them)."""

    type: TaskType
    template: str
    description: str
    examples: list[Example]
    system: str | None = None
    max_new_tokens: int = 8


Builder = Callable[[random.Random], TaskDraft]


@dataclass(frozen=True)
class TaskBuilder:
    """A registered task: its name, family (related tasks, for transfer), domain and builder."""

    name: str
    family: str
    domain: str
    build: Builder


TASK_BUILDERS: Registry[TaskBuilder] = Registry("mini-hub task")


def register_task(name: str, family: str, domain: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder as task ``name``; refuses a name already taken."""

    def decorator(build: Builder) -> Builder:
        TASK_BUILDERS.add(name, TaskBuilder(name, family, domain, build))
        return build

    return decorator


def get_task_builder(name: str) -> TaskBuilder:
    """The registered builder of ``name``; an unknown name gets a one-line error suggesting close ones."""
    return TASK_BUILDERS.lookup(name)



def with_options(rng: random.Random, answer: str, pool: list[str], n: int = 4) -> tuple[str, ...]:
    """``n`` shuffled choices: ``answer`` plus ``n - 1`` distinct distractors drawn from ``pool``.

    >>> with_options(random.Random(0), "b", ["a", "b", "c", "d", "e"], n=3)  # doctest: +SKIP
    ('c', 'b', 'e')
    """
    distractors = rng.sample(sorted({p for p in pool if p != answer}), n - 1)
    options = [answer, *distractors]
    rng.shuffle(options)
    return tuple(options)


def options_text(options: tuple[str, ...]) -> str:
    """The options as a prompt shows them: ``"Options: a; b; c"``."""
    return "Options: " + "; ".join(options)


def is_latin(text: str) -> bool:
    """True when every character is Basic Latin to Latin Extended-B (short tokenisations, readable prompts)."""
    return all(ord(char) < 0x250 for char in text)

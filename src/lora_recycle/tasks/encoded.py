"""A task tokenised once per tokenizer: every scorer, tuner and trainer asks here instead of re-encoding.

Evaluation-based selection scores the same prompts once per pool adapter, and a study tunes many
merges on the same training examples; ``encode_task(tokenizer, task)`` returns the one
``EncodedTask`` of that pair, which encodes each example the first time it is asked for.
"""

from __future__ import annotations

from lora_recycle.tasks.format import Example, Task
from lora_recycle.tasks.prompting import TrainingSequence, encode_answer, encode_for_training, encode_prompt


class EncodedTask:
    """Token ids of one task's examples for one tokenizer, computed on first use and kept."""

    def __init__(self, tokenizer, task: Task):
        self.tokenizer = tokenizer
        self.task = task
        self._prompts: dict[Example, list[int]] = {}
        self._answers: dict[str, list[int]] = {}
        self._training: dict[Example, TrainingSequence] = {}

    def prompt(self, example: Example) -> list[int]:
        if example not in self._prompts:
            self._prompts[example] = encode_prompt(self.tokenizer, self.task.spec, example)
        return self._prompts[example]

    def answer(self, text: str) -> list[int]:
        if text not in self._answers:
            self._answers[text] = encode_answer(self.tokenizer, text)
        return self._answers[text]

    def training(self, example: Example) -> TrainingSequence:
        if example not in self._training:
            self._training[example] = encode_for_training(self.tokenizer, self.task.spec, example)
        return self._training[example]

    def training_split(self, split: str) -> list[TrainingSequence]:
        """Training sequences of a split, in order."""
        return [self.training(ex) for ex in self.task.split(split)]

    def fit_splits(self) -> tuple[list[TrainingSequence], list[TrainingSequence]]:
        """``(train, validation)`` sequences; without validation examples, the training ones validate."""
        train = self.training_split("train")
        return train, self.training_split("validation") or train


def encode_task(tokenizer, task: Task) -> EncodedTask:
    """The ``EncodedTask`` of this task and tokenizer (one per pair, kept on the task)."""
    cache = task.__dict__.setdefault("_encodings", {})
    entry = cache.get(id(tokenizer))
    if entry is None or entry.tokenizer is not tokenizer:
        entry = cache[id(tokenizer)] = EncodedTask(tokenizer, task)
    return entry

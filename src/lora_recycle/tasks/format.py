"""The task directory format (DESIGN section 5): ``task.yaml`` plus ``train.jsonl`` and ``test.jsonl``.

Rows have ``input``, ``target``, optional ``choices`` (multiple choice), ``id`` and ``split``
(``train`` / ``validation``). Without ``split``, the first 80% of ``train.jsonl`` trains and the last
20% validates. Every malformed file or row raises a UserError naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lora_recycle.errors import UserError
from lora_recycle.user_files import read_yaml

TaskType = Literal["multiple_choice", "generation"]
Split = Literal["train", "validation", "test"]
SPLIT_ALIASES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
# All labelled examples (train + validation): the paper's evaluation-based selection scores on these.
LABELLED_SPLITS = ("labelled", "train+val")


class TaskSpec(BaseModel):
    """The typed contents of ``task.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: TaskType
    template: str = "{input}"
    system: str | None = None
    metric: Literal["accuracy", "exact_match"] | None = None
    max_new_tokens: int = Field(default=16, ge=1, le=4096)
    description: str | None = None
    domain: str | None = None
    format_version: int = 1

    @field_validator("template")
    @classmethod
    def _has_input_field(cls, template: str) -> str:
        if "{input}" not in template:
            raise ValueError("template must contain the field {input}")
        try:
            template.format(input="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template has fields other than {{input}} ({exc}); escape braces as {{{{ }}}}") from None
        return template


@dataclass(frozen=True)
class Example:
    """One labelled row: ``input``, ``target`` and, for multiple choice, ``choices`` (target among them)."""

    input: str
    target: str
    choices: tuple[str, ...] | None = None
    id: str | None = None


@dataclass
class Task:
    """A loaded task: its spec and its examples per split."""

    spec: TaskSpec
    directory: Path
    splits: dict[str, list[Example]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def type(self) -> TaskType:
        return self.spec.type

    def __getstate__(self) -> dict:
        # the per-tokenizer encodings (tasks/encoded.py) hold a tokenizer: never ship them to workers
        return {k: v for k, v in self.__dict__.items() if k != "_encodings"}

    def split(self, name: str) -> list[Example]:
        """Examples of ``train``, ``validation`` (alias ``val``), ``test``, or ``labelled`` (train + validation)."""
        if name in LABELLED_SPLITS:
            return self.splits.get("train", []) + self.splits.get("validation", [])
        key = SPLIT_ALIASES.get(name)
        if key is None:
            raise UserError(f"unknown split {name!r}: use train, val, test or labelled (train + val)")
        return self.splits.get(key, [])

    def require_rows(self, split: str, purpose: str) -> list[Example]:
        """The split's examples, or a one-line UserError saying ``purpose`` needs some (e.g. training rows)."""
        examples = self.split(split)
        if not examples:
            source = "test.jsonl" if split == "test" else "train.jsonl"
            raise UserError(f"task {self.name} ({self.directory / source}): no {split} rows, which {purpose} needs")
        return examples

    def content_hash(self) -> str:
        """A stable hash of the task's definition and training rows: keys cached per-task scores."""
        digest = hashlib.sha256(self.spec.model_dump_json().encode())
        for split in ("train", "validation"):
            for ex in self.splits.get(split, []):
                digest.update(json.dumps([split, ex.input, ex.target, ex.choices]).encode())
        return digest.hexdigest()[:16]


def choices_problem(choices: list[str]) -> str | None:
    """Why a choice list cannot be scored fairly: an empty choice (its log-likelihood is 0, so it always
    wins) or a repeated one (two identical options); None if it is fine."""
    if any(not choice.strip() for choice in choices):
        return "has an empty choice (an empty string scores log-likelihood 0 and always wins)"
    if len(set(choices)) != len(choices):
        return "repeats a choice"
    return None


def _parse_row(raw: str, where: str, task_type: TaskType) -> tuple[Example, str | None]:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object")
    for key in ("input", "target"):
        if key not in row:
            raise UserError(f"{where}: missing field {key!r}")
        if not isinstance(row[key], str):
            raise UserError(f"{where}: field {key!r} must be a string")
    choices = row.get("choices")
    if task_type == "multiple_choice":
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise UserError(f"{where}: field 'choices' must be a list of at least two strings")
        problem = choices_problem(choices)
        if problem:
            raise UserError(f"{where}: field 'choices' {problem}")
        if row["target"] not in choices:
            raise UserError(f"{where}: target {row['target']!r} is not one of the choices")
        choices = tuple(choices)
    elif choices is not None:
        raise UserError(f"{where}: field 'choices' given in a generation task")
    split = row.get("split")
    if split is not None and split not in ("train", "validation", "val"):
        raise UserError(f"{where}: field 'split' must be 'train' or 'validation', got {split!r}")
    row_id = row.get("id")
    return Example(row["input"], row["target"], choices, None if row_id is None else str(row_id)), split


def read_jsonl(path: Path, task_type: TaskType) -> list[tuple[Example, str | None]]:
    """Parse a task JSONL file into ``(example, split field)`` pairs; blank lines are skipped."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of row 1
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            rows.append(_parse_row(raw, f"{path}:{number}", task_type))
    return rows


def load_spec(directory: Path) -> TaskSpec:
    spec_file = directory / "task.yaml"
    if not spec_file.is_file():
        raise UserError(f"{spec_file}: not found (is {directory} a task directory?)")
    data = read_yaml(spec_file)
    if not isinstance(data, dict):
        raise UserError(f"{spec_file}: expected a mapping with name, type and template")
    try:
        return TaskSpec(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"]) or "task"
        raise UserError(f"{spec_file}: field {field_name}: {first['msg']}") from None


def load_task(directory: str | Path) -> Task:
    """Load and validate a task directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: task directory not found")
    spec = load_spec(directory)
    train_file = directory / "train.jsonl"
    if not train_file.is_file():
        raise UserError(f"{train_file}: not found")
    rows = read_jsonl(train_file, spec.type)
    if not rows:
        raise UserError(f"{train_file}: no examples")
    if any(split is not None for _, split in rows):
        train = [ex for ex, split in rows if split in (None, "train")]
        validation = [ex for ex, split in rows if split in ("validation", "val")]
    else:
        cut = max(1, int(round(0.8 * len(rows)))) if len(rows) > 1 else 1
        train = [ex for ex, _ in rows[:cut]]
        validation = [ex for ex, _ in rows[cut:]]
    test_file = directory / "test.jsonl"
    test = [ex for ex, _ in read_jsonl(test_file, spec.type)] if test_file.is_file() else []
    return Task(spec, directory, {"train": train, "validation": validation, "test": test})


def write_task(directory: str | Path, spec: TaskSpec, train: list[Example], test: list[Example]) -> Path:
    """Write a task directory (used by the mini-hub and by tests); rows keep their order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = spec.model_dump(exclude_none=True)
    (directory / "task.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    for name, examples in (("train.jsonl", train), ("test.jsonl", test)):
        with (directory / name).open("w", encoding="utf-8") as handle:
            for ex in examples:
                row = {"input": ex.input, "target": ex.target}
                if ex.choices is not None:
                    row["choices"] = list(ex.choices)
                if ex.id is not None:
                    row["id"] = ex.id
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return directory

"""The task directory format (DESIGN section 5): ``task.yaml`` plus ``train.jsonl`` and ``test.jsonl``.

Rows have ``input``, ``target``, optional ``choices`` (multiple choice), ``id`` and ``split``
(``train`` / ``validation``). Without ``split``, the first 80% of ``train.jsonl`` trains and the last
20% validates. Every malformed file or row raises a UserError naming the file and line.

Task files may come from anyone, so what they cost is bounded before a model sees them: a row is at most
``MAX_ROW_BYTES`` (read without loading a longer line), the template holds only plain ``{input}`` fields
(no format spec such as ``{input:>300000000}``, conversion, attribute or index), and the filled-in prompt is
at most ``MAX_PROMPT_CHARS`` characters (counted, not built); ``tasks/prompting.py`` then holds its tokens
to the model's context.
"""

from __future__ import annotations

import hashlib
import json
import string
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
MAX_ROW_BYTES = 1 << 20  # one JSONL line; rows in the wild are well under 100 KB
MAX_PROMPT_CHARS = 1 << 20  # system prompt + filled template, before tokenising (~250k tokens, beyond any context)


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
        try:  # parsed, never formatted: "{input:>300000000}" would build a 300 MB string
            fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                      if name is not None]
        except ValueError as exc:
            raise ValueError(f"template is not a format string ({exc}); escape braces as {{{{ }}}}") from None
        for name, spec, conversion in fields:
            if name != "input" or spec or conversion:
                shown = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                raise ValueError(f"template field {shown[:60]} is not a plain {{input}} (other fields, format specs, "
                                 "conversions, attributes and indexes are not allowed; escape braces as {{ }})")
        if not fields:
            raise ValueError("template must contain the field {input}")
        return template

    def prompt_chars(self, text: str) -> int:
        """Characters of the system prompt and the template filled with ``text`` (counted, never built)."""
        count = sum(name is not None for _, name, _, _ in string.Formatter().parse(self.template))
        return len(self.system or "") + len(self.template.format(input="")) + count * len(text)


@dataclass(frozen=True)
class Example:
    """One labelled row: ``input``, ``target`` and, for multiple choice, ``choices`` (target among them)."""

    input: str
    target: str
    choices: tuple[str, ...] | None = None
    id: str | None = None
    where: str | None = field(default=None, compare=False)  # ``file:line`` it was read from, for errors


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
    return Example(row["input"], row["target"], choices, None if row_id is None else str(row_id), where), split


def jsonl_lines(path: Path, max_bytes: int = MAX_ROW_BYTES):
    """``(line number, text)`` of a UTF-8 JSONL file, one line at a time; a line above ``max_bytes`` is a
    UserError naming file and line, raised before more of it is read."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(max_bytes + 1), b""), start=1):
            line = raw.rstrip(b"\r\n")
            if len(line) > max_bytes:
                raise UserError(f"{path}:{number}: row longer than {max_bytes} bytes (the cap on one JSONL row)")
            try:
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark is not row 1's
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{number}: not UTF-8 text ({exc.reason})") from None
            yield number, text


def read_jsonl(path: Path, task_type: TaskType) -> list[tuple[Example, str | None]]:
    """Parse a task JSONL file into ``(example, split field)`` pairs; blank lines are skipped."""
    return [_parse_row(text, f"{path}:{number}", task_type) for number, text in jsonl_lines(path) if text.strip()]


def check_prompt_sizes(spec: TaskSpec, examples: list[Example]) -> None:
    """Refuse a row whose prompt (system + filled template) would exceed ``MAX_PROMPT_CHARS``."""
    for ex in examples:
        chars = spec.prompt_chars(ex.input)
        if chars > MAX_PROMPT_CHARS:
            raise UserError(f"{ex.where}: the prompt would be {chars} characters, above the {MAX_PROMPT_CHARS} cap "
                            "(template and system prompt filled with this input)")


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
    check_prompt_sizes(spec, [ex for ex, _ in rows] + test)
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

"""Turn examples into token ids: prompts through the chat template, answers as supervised tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lora_recycle.errors import UserError
from lora_recycle.tasks.format import Example, TaskSpec

IGNORE_INDEX = -100


def render_prompt(tokenizer, spec: TaskSpec, example: Example) -> str:
    """The prompt text: the task template filled with the input, through the chat template if any."""
    user = spec.template.format(input=example.input)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": spec.system}] if spec.system else []
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = f"{spec.system}\n\n" if spec.system else ""
    return f"{prefix}{user}\n"


def context_length(tokenizer) -> int | None:
    """The most tokens a sequence may have: the tokenizer's ``model_max_length``, which ``load_base_model`` holds
    to the model's context; None when unknown (transformers' placeholder is 1e30)."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1 << 40 else None


def require_in_context(tokenizer, ids: list[int], example: Example, what: str) -> list[int]:
    """``ids``, or a UserError naming the row when they are longer than the model's context."""
    limit = context_length(tokenizer)
    if limit is not None and len(ids) > limit:
        raise UserError(f"{example.where or 'a task row'}: the {what} is {len(ids)} tokens, longer than the "
                        f"model's context of {limit} tokens")
    return ids


def encode_prompt(tokenizer, spec: TaskSpec, example: Example) -> list[int]:
    """Token ids of the rendered prompt (special tokens already in the text are parsed, none added); a prompt
    longer than the model's context is a UserError naming its row."""
    # verbose=False: too long a sequence is our error to report, not a library warning
    ids = tokenizer(render_prompt(tokenizer, spec, example), add_special_tokens=False, verbose=False)["input_ids"]
    if not getattr(tokenizer, "chat_template", None) and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    return require_in_context(tokenizer, ids, example, "prompt")


def encode_answer(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


@dataclass(frozen=True)
class TrainingSequence:
    """Prompt plus answer ids, with labels masked to the answer tokens (loss on the answer only)."""

    input_ids: list[int]
    labels: list[int]


def encode_for_training(tokenizer, spec: TaskSpec, example: Example) -> TrainingSequence:
    """Prompt + target (+ end-of-turn for generation tasks, so the model learns to stop)."""
    prompt = encode_prompt(tokenizer, spec, example)
    answer = encode_answer(tokenizer, example.target)
    if spec.type == "generation" and tokenizer.eos_token_id is not None:
        answer = [*answer, tokenizer.eos_token_id]
    require_in_context(tokenizer, prompt + answer, example, "prompt with its answer")
    return TrainingSequence(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer)


def collate(sequences: list[TrainingSequence], pad_id: int, device: torch.device | str = "cpu") -> dict:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    width = max(len(s.input_ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq.input_ids)
        ids[row, :n] = torch.tensor(seq.input_ids)
        labels[row, :n] = torch.tensor(seq.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into ``(input_ids, attention_mask)``: every row's last token in the last column."""
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    return ids, mask


def pad_token_id(tokenizer) -> int:
    """The pad id to use: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0

"""The training objective: token-level cross-entropy on the answer tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lora_recycle.tasks.prompting import IGNORE_INDEX, TrainingSequence, collate, pad_token_id


def answer_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of next-token predictions on positions whose label is not ignored.

    ``logits`` is ``[batch, seq, vocab]`` and ``labels`` ``[batch, seq]`` (unshifted); with
    ``reduction="sum"`` returns the summed loss (for token-weighted averages across batches).
    """
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:]
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def batch_loss(model, batch: dict) -> torch.Tensor:
    """Mean answer-token cross-entropy of one collated batch (differentiable)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return answer_token_loss(logits, batch["labels"])


@torch.no_grad()
def dataset_loss(model, tokenizer, sequences: list[TrainingSequence], batch_size: int = 16, device="cpu") -> float:
    """Token-level mean answer cross-entropy over many sequences, batched without gradients."""
    if not sequences:
        return float("nan")
    total, tokens = 0.0, 0
    pad = pad_token_id(tokenizer)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids))
    for start in range(0, len(order), batch_size):
        batch = collate([sequences[i] for i in order[start : start + batch_size]], pad, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total += answer_token_loss(logits, batch["labels"], reduction="sum").item()
        tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return total / max(tokens, 1)

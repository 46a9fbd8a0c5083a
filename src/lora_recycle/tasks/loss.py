"""The training objective: token-level cross-entropy on the answer tokens only.

Only answer positions need logits, so the vocabulary projection runs on those hidden states alone
(with a 49k-128k vocabulary this is most of the compute and memory of a full-logits forward), and a
prompt prefix every row shares runs once (``shared_prefix``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lora_recycle.tasks.prompting import IGNORE_INDEX, TrainingSequence, collate, pad_token_id
from lora_recycle.tasks.shared_prefix import can_share_prefix, prefix_shared_hidden, shared_prefix_length


def supports_selective_head(model) -> bool:
    """True when logits are exactly ``lm_head(decoder hidden state)`` (no softcapping or scaling after)."""
    config = getattr(model, "config", None)
    return (
        hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")
        and getattr(config, "final_logit_softcapping", None) is None
        and getattr(config, "logit_scale", None) is None
        and model.get_output_embeddings() is not None
    )


def selected_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor):
    """Logits ``[n, vocab]`` at the ``True`` entries of the boolean ``positions`` mask ``[batch, seq]``."""
    if not supports_selective_head(model):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[positions]
    decoder = model.get_decoder()
    prefix = shared_prefix_length(input_ids, attention_mask, positions)
    if can_share_prefix(model, input_ids, prefix):
        hidden = prefix_shared_hidden(decoder, input_ids, attention_mask, prefix)
        if hidden is not None:
            return model.get_output_embeddings()(hidden[positions[:, prefix:]])
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return model.get_output_embeddings()(hidden[positions])


def batch_loss(model, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """Answer-token cross-entropy of one collated batch (differentiable), logits computed only where needed."""
    labels = batch["labels"]
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # the position before each answer token predicts it
    logits = selected_logits(model, batch["input_ids"], batch["attention_mask"], positions)
    return F.cross_entropy(logits.float(), labels[:, 1:][positions[:, :-1]], reduction=reduction)


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
        total += batch_loss(model, batch, reduction="sum").item()
        tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return total / max(tokens, 1)

"""Run a batch's shared prompt prefix once: its keys and values are computed for one row and reused.

Every row of a task batch starts with the same chat-template tokens (system prompt, the template's
opening words): 55-70% of a mini-hub sequence. Causal attention makes the prefix's hidden states the
same in every row, so the decoder runs it once, repeats its key/value cache across the batch and runs
only the rows' suffixes on top. The result is the full forward's, to floating-point rounding, and
gradients flow through the repeated cache into the one prefix pass (training costs drop with it).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
from torch import nn

from lora_recycle.tasks.prompting import left_pad

MIN_SHARED_PREFIX = 8  # below this, the extra pass costs more than it saves
# rows: SmolLM2 bf16 on 2 cores, batch 4 is 0.93x the plain forward's speed, 8 is 1.25x, 16 1.50x, 32 1.9x
MIN_SHARED_BATCH = 8
_enabled = True


@contextmanager
def prefix_sharing(enabled: bool) -> Iterator[None]:
    """Turn the shared-prefix forward on or off inside the block (benchmarks compare the two)."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> int:
    """Leading tokens identical (and unpadded) in every row, ending before the first position whose output
    is needed (``positions``: boolean ``[batch, seq]``)."""
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)
    leading = int(same.long().cumprod(0).sum())
    needed = positions.any(0).nonzero()
    first_needed = int(needed[0]) if len(needed) else input_ids.shape[1]
    return min(leading, first_needed)


def has_active_dropout(model: nn.Module) -> bool:
    """True when some dropout would draw a mask now (training mode, p > 0): a shared prefix would share it."""
    return model.training and any(isinstance(m, nn.Dropout) and m.p > 0 and m.training for m in model.modules())


def can_share_prefix(model: nn.Module, input_ids: torch.Tensor, prefix: int) -> bool:
    """Whether the shared-prefix forward applies: a batch large enough to repay the extra pass, a long enough
    prefix, no active dropout."""
    return (_enabled and input_ids.shape[0] >= MIN_SHARED_BATCH and prefix >= MIN_SHARED_PREFIX
            and not has_active_dropout(model))


@cache
def _cache_argument(decoder_type: type) -> str | None:
    """The decoder's keyword for a key/value cache (transformers 5 says ``cache``, 4 ``past_key_values``)."""
    parameters = inspect.signature(decoder_type.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def cache_keyword(model: nn.Module) -> str:
    """The keyword ``model``'s forward and ``generate`` take a key/value cache by (``cache`` or ``past_key_values``)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_argument(type(inner)) or "past_key_values"


def _first_pass(decoder: nn.Module, argument: str | None = None, **inputs):
    """Run ``decoder`` with a fresh key/value cache (passed as ``argument``, default: the keyword its forward
    takes): ``(output, cache, keyword)``, or ``None`` if it takes none."""
    from transformers import DynamicCache

    argument = argument or _cache_argument(type(decoder))
    config = getattr(decoder, "config", None)
    if argument is None or config is None:
        return None
    cache = DynamicCache(config=config)
    out = decoder(use_cache=True, **inputs, **{argument: cache})
    return out, getattr(out, argument, None) or getattr(out, "past_key_values", None) or cache, argument


def _repeated_prefix(module: nn.Module, prefix_ids: torch.Tensor, rows: int, argument: str | None = None,
                     **inputs) -> tuple[object, str] | None:
    """The shared prefix (``prefix_ids``, one row) run once, its cache repeated for ``rows`` rows:
    ``(cache, keyword)``, or ``None`` if ``module`` takes no cache."""
    first = _first_pass(module, argument=argument, input_ids=prefix_ids, **inputs)
    if first is None:
        return None
    _, cache, argument = first
    cache.batch_repeat_interleave(rows)
    return cache, argument


def prefix_shared_hidden(decoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         prefix: int) -> torch.Tensor | None:
    """Last hidden states ``[batch, seq - prefix, hidden]`` of the suffix tokens, the first ``prefix`` tokens
    run once; ``None`` if the decoder takes no cache (the caller runs the full forward)."""
    batch, width = input_ids.shape
    repeated = _repeated_prefix(decoder, input_ids[:1, :prefix], batch, attention_mask=attention_mask[:1, :prefix])
    if repeated is None:
        return None
    cache, argument = repeated
    positions = torch.arange(prefix, width, device=input_ids.device).unsqueeze(0).expand(batch, -1)
    out = decoder(input_ids=input_ids[:, prefix:], attention_mask=attention_mask, position_ids=positions,
                  use_cache=True, **{argument: cache})
    return out.last_hidden_state


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Leading tokens every sequence shares, leaving each at least one token of its own."""
    shortest = min(map(len, sequences))
    length = 0
    while length < shortest - 1 and all(seq[length] == sequences[0][length] for seq in sequences):
        length += 1
    return length


def prefix_cached_prompts(model: nn.Module, prompts: list[list[int]], pad: int, device
                          ) -> tuple[torch.Tensor, torch.Tensor, object | None]:
    """``(input_ids, attention_mask, cache)`` for ``generate``: the prompts' shared prefix already run once.

    Rows are ``prefix, padding, rest of the prompt`` (every row's last prompt token in the last column, as
    left padding gives); ``cache`` holds the prefix's keys and values repeated per row, so ``generate`` runs
    only the columns after it, and takes positions from the mask. ``cache`` is None (plain left padding)
    when sharing does not apply.
    """
    prefix = common_prefix_length(prompts) if len(prompts) >= 2 else 0
    config = getattr(model, "config", None)
    if not _enabled or prefix < MIN_SHARED_PREFIX or config is None:
        ids, mask = left_pad(prompts, pad)
        return ids.to(device), mask.to(device), None
    rest, rest_mask = left_pad([p[prefix:] for p in prompts], pad)
    head = torch.tensor([prompts[0][:prefix]], dtype=torch.long)
    cache, _ = _repeated_prefix(model, head.to(device), len(prompts), cache_keyword(model))
    ids = torch.cat([head.expand(len(prompts), -1), rest], dim=1)
    mask = torch.cat([torch.ones(len(prompts), prefix, dtype=torch.long), rest_mask], dim=1)
    return ids.to(device), mask.to(device), cache


def _prompt_pass(decoder: nn.Module, prompts: list[list[int]], pad: int, device):
    """Run every prompt: ``(last hidden state per prompt, cache, cache keyword, cache mask, prompt lengths)``,
    or ``None`` if the decoder takes no cache.

    With enough prompts sharing a long enough prefix, the prefix runs once (one row, its cache repeated)
    and the right-padded rest on top; otherwise the prompts run left-padded in one pass.
    """
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    prefix = common_prefix_length(prompts)
    if _enabled and len(prompts) >= MIN_SHARED_BATCH and prefix >= MIN_SHARED_PREFIX:
        repeated = _repeated_prefix(decoder, torch.tensor([prompts[0][:prefix]], device=device), len(prompts))
        if repeated is None:
            return None
        cache, argument = repeated
        width = max(len(p) for p in prompts) - prefix
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        suffix_mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt) - prefix] = torch.tensor(prompt[prefix:])
            suffix_mask[row, : len(prompt) - prefix] = 1
        ids, suffix_mask = ids.to(device), suffix_mask.to(device)
        mask = torch.cat([torch.ones(len(prompts), prefix, dtype=torch.long, device=device), suffix_mask], dim=1)
        positions = (prefix + torch.arange(width, device=device)).unsqueeze(0).expand(len(prompts), -1)
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{argument: cache}).last_hidden_state
        last = hidden[torch.arange(len(prompts), device=device), lengths - prefix - 1]
        return last, cache, argument, mask, lengths
    ids, mask = left_pad(prompts, pad)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    first = _first_pass(decoder, input_ids=ids, attention_mask=mask, position_ids=positions)
    if first is None:
        return None
    out, cache, argument = first
    return out.last_hidden_state[:, -1], cache, argument, mask, lengths


def choice_logprobs(model: nn.Module, prompts: list[list[int]], choices: list[list[list[int]]], pad: int,
                    device: torch.device | str = "cpu") -> list[list[float]] | None:
    """Sum of log-probabilities of each choice's tokens after its prompt, each prompt run once.

    The prompts run in one pass (their shared prefix once, see ``_prompt_pass``); their key/value cache is
    repeated once per choice and the choices' tokens run on top (single-token choices need no second pass:
    the prompt's last position scores them all). ``None`` when the model takes no cache; the caller then
    runs prompt + choice rows.
    """
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if not _enabled or any(not c for options in choices for c in options):
        return None
    prompt_pass = _prompt_pass(decoder, prompts, pad, device)
    if prompt_pass is None:
        return None
    last, cache, argument, mask, lengths = prompt_pass
    first = torch.log_softmax(head(last).float(), dim=-1)  # [prompts, vocab]
    owner = [e for e, options in enumerate(choices) for _ in options]
    flat = [c for options in choices for c in options]
    scores = [float(first[e, c[0]]) for e, c in zip(owner, flat, strict=True)]
    longest = max(map(len, flat))
    if longest > 1:  # tokens 2.. of each choice: its tokens 1..n-1 run on the prompt's cache
        index = torch.tensor(owner, device=mask.device)
        cache.batch_select_indices(index)
        tail = torch.full((len(flat), longest - 1), pad, dtype=torch.long)
        tail_mask = torch.zeros_like(tail)
        for row, c in enumerate(flat):
            tail[row, : len(c) - 1] = torch.tensor(c[:-1])
            tail_mask[row, : len(c) - 1] = 1
        tail, tail_mask = tail.to(mask.device), tail_mask.to(mask.device)
        tail_positions = lengths[index][:, None] + torch.arange(longest - 1, device=mask.device)[None]
        full_mask = torch.cat([mask[index], tail_mask], dim=1)
        hidden = decoder(input_ids=tail, attention_mask=full_mask, position_ids=tail_positions, use_cache=True,
                         **{argument: cache}).last_hidden_state
        logprobs = torch.log_softmax(head(hidden[tail_mask.bool()]).float(), dim=-1)
        targets = torch.tensor([t for c in flat for t in c[1:]], device=logprobs.device)
        picked = logprobs.gather(1, targets[:, None]).squeeze(1).split([len(c) - 1 for c in flat])
        scores = [s + float(p.sum()) for s, p in zip(scores, picked, strict=True)]
    result, start = [], 0
    for options in choices:
        result.append(scores[start : start + len(options)])
        start += len(options)
    return result

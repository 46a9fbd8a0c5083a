"""Evaluate a model on a task split: choice log-likelihood for multiple choice, greedy exact match otherwise.

Two metrics: ``loglik`` (multiple choice only: the choice with the highest summed log-probability,
cheap and smooth) and ``exact_match`` (greedy generation, normalised string match with the target;
the paper scores every task, multiple choice included, this way). Every result names its metric.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from lora_recycle.errors import UserError
from lora_recycle.progress import progress_bar
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.format import Example, Task
from lora_recycle.tasks.loss import selected_logits, supports_selective_head
from lora_recycle.tasks.metrics import resolve_metric
from lora_recycle.tasks.prompting import pad_token_id
from lora_recycle.tasks.shared_prefix import cache_keyword, choice_logprobs, prefix_cached_prompts


class NonFiniteLogits(UserError):
    """The model computed NaN or infinite logits (an overflowing model or adapter): no score is reported."""


def _nonfinite(where: str | None, task: Task) -> NonFiniteLogits:
    return NonFiniteLogits(f"{where or f'task {task.name}'}: the model's logits are NaN or infinite on this row "
                           "(an overflowing model or adapter); no score reported")


def require_finite_scores(task: Task, examples: list[Example], scores: list[list[float]]) -> None:
    """Refuse choice log-likelihoods that are NaN or infinite (NaN logits would still pick a choice)."""
    for ex, row in zip(examples, scores, strict=True):
        if not all(math.isfinite(value) for value in row):
            raise _nonfinite(ex.where, task)


class FiniteLogits:
    """A ``generate`` logits processor that stops decoding with ``NonFiniteLogits`` at the first NaN or Inf."""

    def __init__(self, task: Task, examples: list[Example]):
        self.task, self.examples = task, examples

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(scores).all(dim=-1)
        if not bool(finite.all()):
            raise _nonfinite(self.examples[int((~finite).nonzero()[0, 0])].where, self.task)
        return scores


@dataclass
class EvalResult:
    """Scores of one split: ``accuracy`` (and ``accuracy_norm`` for multiple choice) over ``n`` examples."""

    task: str
    split: str
    n: int
    accuracy: float
    accuracy_norm: float | None = None
    predictions: list[str] | None = None
    correct: list[bool] | None = None  # per example, in split order: what bootstraps resample
    metric: str = "loglik"
    gold_nll: float | None = None  # loglik only: mean negative log-likelihood of the right choice (a tie-break)

    def to_dict(self, with_predictions: bool = False) -> dict:
        data = asdict(self)
        data.pop("correct")
        data.pop("gold_nll")
        if not with_predictions:
            data.pop("predictions")
        return data

    def correct_marks(self) -> str:
        """``"1"`` (right) or ``"0"`` (wrong) per example, in split order."""
        return "".join("1" if ok else "0" for ok in self.correct or [])


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(predictions: list[str], targets: list[str]) -> list[bool]:
    """Per example, whether the normalised prediction equals the normalised target."""
    return [normalize_answer(p) == normalize_answer(t) for p, t in zip(predictions, targets, strict=True)]


@torch.no_grad()
def choice_logliks(model, tokenizer, task: Task, examples: list[Example], batch_size: int = 32, device="cpu"):
    """Sum of log-probabilities of each choice's tokens after the prompt: a list (per example) of lists."""
    encoded = encode_task(tokenizer, task)
    pad = pad_token_id(tokenizer)
    if supports_selective_head(model):
        scores = _prompt_once_logliks(model, encoded, examples, batch_size, pad, device)
        if scores is not None:
            return scores
    items = []  # (example index, choice index, prompt ids, choice ids)
    for ei, ex in enumerate(examples):
        prompt = encoded.prompt(ex)
        for ci, choice in enumerate(ex.choices or ()):
            items.append((ei, ci, prompt, encoded.answer(choice)))
    scores: list[list[float]] = [[0.0] * len(ex.choices or ()) for ex in examples]
    order = sorted(range(len(items)), key=lambda i: len(items[i][2]) + len(items[i][3]))
    for start in progress_bar(range(0, len(order), batch_size), desc=f"scoring {task.name}", leave=False):
        chunk = [items[i] for i in order[start : start + batch_size]]
        logits = _continuation_logits(model, [(p, c) for _, _, p, c in chunk], pad, device).float()
        targets = torch.tensor([t for _, _, _, c in chunk for t in c], device=logits.device)
        token_logprobs = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
        sums = torch.stack([part.sum() for part in token_logprobs.split([len(c) for *_, c in chunk])]).tolist()
        for (ei, ci, _, _), value in zip(chunk, sums, strict=True):
            scores[ei][ci] = value
    return scores


def _continuation_logits(model, pairs: list[tuple[list[int], list[int]]], pad: int, device) -> torch.Tensor:
    """Logits predicting each continuation token of ``(prompt ids, continuation ids)`` pairs, run as one
    right-padded batch: rows follow the pairs, each pair's continuation tokens in turn."""
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    positions = torch.zeros_like(ids, dtype=torch.bool)
    for row, (p, c) in enumerate(pairs):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        mask[row, : len(p) + len(c)] = 1
        positions[row, len(p) - 1 : len(p) + len(c) - 1] = True  # each position predicts the next token
    return selected_logits(model, ids.to(device), mask.to(device), positions.to(device))


def _prompt_once_logliks(model, encoded, examples: list[Example], batch_size: int, pad: int, device):
    """``choice_logliks`` with each prompt run once and its choices on its cache (``None``: not possible)."""
    order = sorted(range(len(examples)), key=lambda i: len(encoded.prompt(examples[i])))
    scores: list[list[float]] = [[] for _ in examples]
    batch: list[int] = []

    def flush() -> bool:
        result = choice_logprobs(model, [encoded.prompt(examples[i]) for i in batch],
                                 [[encoded.answer(c) for c in examples[i].choices or ()] for i in batch], pad, device)
        if result is None:
            return False
        for i, row in zip(batch, result, strict=True):
            scores[i] = row
        batch.clear()
        return True

    rows = 0
    for i in order:
        n = len(examples[i].choices or ())
        if batch and rows + n > batch_size:
            if not flush():
                return None
            rows = 0
        batch.append(i)
        rows += n
    if batch and not flush():
        return None
    return scores


ARTICLE_SLACK = 4  # appending text can shrink a normalised prediction by at most one article and a space


class PastMatching:
    """A ``generate`` stopping criterion: a row stops once its text, normalised, is too long to ever equal its
    target. Appending can only shrink a normalised text by ``ARTICLE_SLACK`` characters (a trailing partial
    word becoming an article), so a stopped row is certainly wrong and its exact match is unchanged."""

    def __init__(self, tokenizer, targets: list[str], width: int):
        self.tokenizer, self.width = tokenizer, width
        self.limits = [len(normalize_answer(t)) + ARTICLE_SLACK for t in targets]

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        done = [len(normalize_answer(self.tokenizer.decode(row[self.width:], skip_special_tokens=True))) > limit
                for row, limit in zip(input_ids, self.limits, strict=True)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def greedy_generate(model, tokenizer, task: Task, examples: list[Example], batch_size: int = 16, device="cpu",
                    stop_past_targets: bool = False):
    """Greedy continuations (decoded, special tokens dropped) of each example's prompt, left-padded batches
    whose shared prompt prefix runs once (``prefix_cached_prompts``).

    ``stop_past_targets``: a row stops as soon as it can no longer match its target (``PastMatching``); its
    text is then cut short, but whether it matches is not changed (what exact-match scoring needs).
    """
    from transformers import LogitsProcessorList, StoppingCriteriaList

    spec = task.spec
    pad = pad_token_id(tokenizer)
    prompts = [encode_task(tokenizer, task).prompt(ex) for ex in examples]
    outputs: list[str] = [""] * len(examples)
    stop_ids = [i for i in {tokenizer.eos_token_id, pad} if i is not None]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in progress_bar(range(0, len(order), batch_size), desc=f"generating {task.name}", leave=False):
        index = order[start : start + batch_size]
        ids, mask, cache = prefix_cached_prompts(model, [prompts[i] for i in index], pad, device)
        width = ids.shape[1]
        extra = {} if cache is None else {cache_keyword(model): cache}
        if stop_past_targets:
            extra["stopping_criteria"] = StoppingCriteriaList(
                [PastMatching(tokenizer, [examples[i].target for i in index], width)])
        finite = LogitsProcessorList([FiniteLogits(task, [examples[i] for i in index])])
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=spec.max_new_tokens,
                                   do_sample=False, pad_token_id=pad, eos_token_id=stop_ids, logits_processor=finite,
                                   **extra)
        for row, i in enumerate(index):
            outputs[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
    return outputs


@torch.no_grad()
def teacher_forced_hits(model, tokenizer, task: Task, examples: list[Example], batch_size: int = 32,
                        device="cpu") -> list[bool]:
    """Per example, whether greedy decoding provably reproduces its target: the model's argmax, fed the
    target's tokens, picks each of them and then the end token (within ``max_new_tokens``).

    One teacher-forced forward per batch instead of a decoding loop. A ``True`` row's greedy continuation
    is the target (its exact match is certain); a ``False`` one must be decoded (it may still match after
    normalisation, e.g. through another tokenisation of the same text).
    """
    encoded = encode_task(tokenizer, task)
    pad, eos, budget = pad_token_id(tokenizer), tokenizer.eos_token_id, task.spec.max_new_tokens
    hits = [False] * len(examples)
    checks = {}
    for i, ex in enumerate(examples):
        answer = encoded.answer(ex.target)
        if answer and len(answer) <= budget and (eos is not None or len(answer) == budget):
            checks[i] = (encoded.prompt(ex), answer + ([eos] if len(answer) < budget else []))
    order = sorted(checks, key=lambda i: len(checks[i][0]) + len(checks[i][1]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logits = _continuation_logits(model, [checks[i] for i in chunk], pad, device)
        finite = torch.isfinite(logits).all(dim=-1).cpu().split([len(checks[i][1]) for i in chunk])
        picked = logits.argmax(-1).cpu().split([len(checks[i][1]) for i in chunk])
        for i, ok, row in zip(chunk, finite, picked, strict=True):
            if not bool(ok.all()):  # argmax would still "pick" a token from NaN logits
                raise _nonfinite(examples[i].where, task)
            hits[i] = row.tolist() == checks[i][1]
    return hits


def greedy_exact_match(model, tokenizer, task: Task, examples: list[Example], batch_size: int = 64,
                       device="cpu") -> tuple[list[str], list[bool]]:
    """Greedy predictions and their exact match: rows the teacher-forced check proves correct take their target
    as prediction; only the others are decoded, each until it ends or can no longer match (the same exact
    match at a fraction of the decoding; a wrong row's recorded prediction may be cut short)."""
    hits = teacher_forced_hits(model, tokenizer, task, examples, batch_size, device)
    encoded = encode_task(tokenizer, task)
    predictions = [tokenizer.decode(encoded.answer(ex.target), skip_special_tokens=True).strip() if hit else ""
                   for ex, hit in zip(examples, hits, strict=True)]
    rest = [i for i, hit in enumerate(hits) if not hit]
    if rest:
        decoded = greedy_generate(model, tokenizer, task, [examples[i] for i in rest], batch_size, device,
                                  stop_past_targets=True)
        for i, text in zip(rest, decoded, strict=True):
            predictions[i] = text
    return predictions, exact_match(predictions, [ex.target for ex in examples])


def evaluate_task(model, tokenizer, task: Task, split: str = "test", device="cpu", limit: int | None = None,
                  batch_size: int = 32, metric: str | None = None, start: int = 0) -> EvalResult:
    """Score the model on a split of the task (``limit`` examples from row ``start``, by default its first
    ones) by ``metric`` (see ``resolve_metric``); the model is put in eval mode. NaN or infinite logits are a
    ``NonFiniteLogits`` error naming the row, never an accuracy."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit {limit!r}: give a positive number of examples")
    name = resolve_metric(task, metric)
    examples = task.split(split)[start:][:limit]
    model.eval()
    if not examples:
        return EvalResult(task.name, split, 0, float("nan"), metric=name)
    if name == "loglik":
        scores = choice_logliks(model, tokenizer, task, examples, batch_size, device)
        require_finite_scores(task, examples, scores)
        correct, correct_norm, predictions, gold_nll = [], 0, [], 0.0
        for ex, row in zip(examples, scores, strict=True):
            gold = ex.choices.index(ex.target)
            gold_nll -= row[gold]
            best = max(range(len(row)), key=row.__getitem__)
            best_norm = max(range(len(row)), key=lambda i: row[i] / max(len(ex.choices[i]), 1))
            correct.append(best == gold)
            correct_norm += best_norm == gold
            predictions.append(ex.choices[best])
        n = len(examples)
        return EvalResult(task.name, split, n, sum(correct) / n, correct_norm / n, predictions, correct, name,
                          gold_nll / n)
    # a decoding step costs about the same for 32 or 64 short rows (per-step overhead dominates): twice the rows
    predictions, correct = greedy_exact_match(model, tokenizer, task, examples, 2 * batch_size, device)
    return EvalResult(task.name, split, len(examples), sum(correct) / len(examples), None, predictions, correct, name)

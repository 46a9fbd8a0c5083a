"""Generation scoring: rows a teacher-forced pass proves correct skip decoding; results equal plain decoding."""

from lora_recycle.tasks import load_task
from lora_recycle.tasks.format import Example, write_task
from lora_recycle.tasks.scoring import evaluate_task, exact_match, greedy_generate, teacher_forced_hits


def _task_of_own_outputs(tiny_model, echo_task_dir, tmp_path):
    """The echo task, its test targets replaced by the tiny model's own greedy outputs (every other one)."""
    model, tokenizer = tiny_model
    task = load_task(echo_task_dir)
    examples = task.split("test")
    outputs = greedy_generate(model, tokenizer, task, examples)
    rows = [Example(ex.input, out if i % 2 == 0 and out else ex.target + " indeed")
            for i, (ex, out) in enumerate(zip(examples, outputs, strict=True))]
    return load_task(write_task(tmp_path / "own", task.spec, task.split("train"), rows)), outputs


def test_hits_are_exactly_the_rows_greedy_decoding_reproduces(tiny_model, echo_task_dir, tmp_path):
    model, tokenizer = tiny_model
    task, outputs = _task_of_own_outputs(tiny_model, echo_task_dir, tmp_path)
    examples = task.split("test")
    hits = teacher_forced_hits(model, tokenizer, task, examples)
    decoded = greedy_generate(model, tokenizer, task, examples)
    assert decoded == outputs
    reproduced = [d == ex.target for d, ex in zip(decoded, examples, strict=True)]
    assert any(hits) and not all(hits)
    assert all(r for r, h in zip(reproduced, hits, strict=True) if h)  # a hit is never a wrong row
    # rows whose text re-tokenises otherwise (a random model's leading-space tokens) are decoded, not hits
    assert sum(hits) < sum(reproduced)


def test_scores_and_predictions_equal_decoding_every_row(tiny_model, echo_task_dir, tmp_path):
    model, tokenizer = tiny_model
    task, _ = _task_of_own_outputs(tiny_model, echo_task_dir, tmp_path)
    examples = task.split("test")
    result = evaluate_task(model, tokenizer, task, "test")
    decoded = greedy_generate(model, tokenizer, task, examples)
    assert result.correct == exact_match(decoded, [ex.target for ex in examples])
    assert 0 < result.accuracy < 1
    for got, full, ok in zip(result.predictions, decoded, result.correct, strict=True):
        assert got == full if ok else full.startswith(got)  # a wrong row may stop early, never a right one


def test_a_row_stops_only_once_it_can_no_longer_match(tiny_model):
    import torch

    from lora_recycle.tasks.scoring import ARTICLE_SLACK, PastMatching, normalize_answer

    _, tokenizer = tiny_model
    target = "the Netherlands"
    criterion = PastMatching(tokenizer, [target, target], width=0)
    growing = "The Netherlands, a country in Europe"
    for end in range(1, len(growing) + 1):
        ids = [tokenizer(growing[:end], add_special_tokens=False)["input_ids"]] * 2
        width = max(map(len, ids))
        stopped = criterion(torch.tensor([row + [0] * (width - len(row)) for row in ids]))
        too_long = len(normalize_answer(growing[:end])) > len(normalize_answer(target)) + ARTICLE_SLACK
        assert bool(stopped[0]) == too_long
    assert normalize_answer("xyz th") != normalize_answer("xyz the")  # why the slack: a word can turn article


def test_generation_with_the_prefix_run_once_equals_plain_left_padding(tiny_model, echo_task_dir, monkeypatch):
    """Greedy decoding on a cached shared prefix gives the same continuations, with prompts of uneven length."""
    from lora_recycle.tasks import shared_prefix
    from lora_recycle.tasks.encoded import encode_task
    from lora_recycle.tasks.shared_prefix import common_prefix_length, prefix_sharing

    model, tokenizer = tiny_model
    task = load_task(echo_task_dir)
    examples = task.split("train")[:20]
    prompts = [encode_task(tokenizer, task).prompt(ex) for ex in examples]
    assert common_prefix_length(prompts) >= shared_prefix.MIN_SHARED_PREFIX and len({len(p) for p in prompts}) > 1
    with prefix_sharing(False):
        plain = greedy_generate(model, tokenizer, task, examples, batch_size=8)
    calls = []
    real = shared_prefix.prefix_cached_prompts

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out[2] is not None)
        return out

    monkeypatch.setattr("lora_recycle.tasks.scoring.prefix_cached_prompts", spy)
    assert greedy_generate(model, tokenizer, task, examples, batch_size=8) == plain
    assert calls and all(calls)

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
    assert result.predictions == decoded
    assert result.correct == exact_match(decoded, [ex.target for ex in examples])
    assert 0 < result.accuracy < 1

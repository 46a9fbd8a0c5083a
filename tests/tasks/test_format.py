import json

import pytest

from lora_recycle.errors import UserError
from lora_recycle.tasks import load_task
from lora_recycle.tasks.scoring import evaluate_task, normalize_answer


def write(tmp_path, spec: str, rows: list, test_rows: list | None = None):
    d = tmp_path / "t"
    d.mkdir(exist_ok=True)
    (d / "task.yaml").write_text(spec)
    (d / "train.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    if test_rows is not None:
        (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    return d


SPEC = "name: t\ntype: generation\ntemplate: 'Q: {input}'\n"


def test_default_split_is_80_20(tmp_path):
    task = load_task(write(tmp_path, SPEC, [{"input": str(i), "target": "x"} for i in range(10)]))
    assert [e.input for e in task.split("train")] == [str(i) for i in range(8)]
    assert [e.input for e in task.split("val")] == ["8", "9"]
    assert task.split("test") == []


def test_split_field_wins(tmp_path):
    rows = [{"input": "a", "target": "x", "split": "validation"}, {"input": "b", "target": "y"}]
    task = load_task(write(tmp_path, SPEC, rows))
    assert [e.input for e in task.split("validation")] == ["a"]
    assert [e.input for e in task.split("train")] == ["b"]


@pytest.mark.parametrize("spec,rows,message", [
    ("name: t\ntype: essay\ntemplate: '{input}'\n", [{"input": "a", "target": "b"}], r"task.yaml: field type"),
    ("name: t\ntype: generation\ntemplate: 'no field'\n", [{"input": "a", "target": "b"}], r"field template"),
    ("name: t\ntype: generation\ntemplate: '{input}'\nextra: 1\n", [{"input": "a", "target": "b"}], r"field extra"),
    ("name: [t\n", [{"input": "a", "target": "b"}], r"task.yaml:\d+: invalid YAML"),
    (SPEC, [{"input": "a", "target": "b"}, "{oops"], r"train.jsonl:2: invalid JSON"),
    (SPEC, [{"input": "a"}], r"train.jsonl:1: missing field 'target'"),
    (SPEC, [{"input": "a", "target": 3}], r"train.jsonl:1: field 'target' must be a string"),
    ("name: t\ntype: multiple_choice\ntemplate: '{input}'\n", [{"input": "a", "target": "b", "choices": ["c", "d"]}],
     r"train.jsonl:1: target 'b' is not one of the choices"),
    ("name: t\ntype: multiple_choice\ntemplate: '{input}'\n", [{"input": "a", "target": "b"}],
     r"train.jsonl:1: field 'choices'"),
])
def test_bad_task_files_name_file_and_line(tmp_path, spec, rows, message):
    with pytest.raises(UserError, match=message):
        load_task(write(tmp_path, spec, rows))


def test_missing_task_dir(tmp_path):
    with pytest.raises(UserError, match="task directory not found"):
        load_task(tmp_path / "nope")


def test_normalize_answer():
    assert normalize_answer("  The Red, apple! ") == "red apple"


def test_scoring_runs_on_both_task_types(tiny_model, colour_task_dir, echo_task_dir):
    model, tokenizer = tiny_model
    mc = evaluate_task(model, tokenizer, load_task(colour_task_dir), "test")
    assert mc.n == 30 and 0.0 <= mc.accuracy <= 1.0 and mc.accuracy_norm is not None
    assert len(mc.predictions) == 30
    gen = evaluate_task(model, tokenizer, load_task(echo_task_dir), "test")
    assert gen.n == 12 and gen.accuracy_norm is None and len(gen.predictions) == 12


def test_multiple_choice_picks_the_most_likely_choice(tiny_model, colour_task_dir):
    """Accuracy counts argmax of the summed choice log-likelihood, checked against a direct computation."""
    import torch

    from lora_recycle.tasks.prompting import encode_answer, encode_prompt
    from lora_recycle.tasks.scoring import choice_logliks

    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    ex = task.split("test")[0]
    scores = choice_logliks(model, tokenizer, task, [ex])[0]
    prompt = encode_prompt(tokenizer, task.spec, ex)
    for choice, score in zip(ex.choices, scores, strict=True):
        ids = prompt + encode_answer(tokenizer, choice)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        direct = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(encode_answer(tokenizer, choice)))
        assert score == pytest.approx(direct, abs=1e-3)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    """Files saved by editors (or PowerShell) that write a BOM load like plain UTF-8 ones."""
    d = tmp_path / "bom"
    d.mkdir()
    (d / "task.yaml").write_bytes(b"\xef\xbb\xbf" + SPEC.encode())
    rows = [{"input": "caf\u00e9", "target": "x"}, {"input": "b", "target": "y"}]
    (d / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    (d / "test.jsonl").write_bytes(b"\xef\xbb\xbf" + (json.dumps(rows[0]) + "\n").encode())
    task = load_task(d)
    assert task.name == "t" and [e.input for e in task.split("train")] == ["caf\u00e9", "b"]
    assert [e.input for e in task.split("test")] == ["caf\u00e9"]


@pytest.mark.parametrize("test_rows,split,message", [
    (None, "test", r"task t \(.*/test\.jsonl\): no test rows, which evaluate needs"),
    ([], "test", r"task t \(.*/test\.jsonl\): no test rows"),
    (None, "val", r"task t \(.*/train\.jsonl\): no val rows"),
])
def test_empty_split_names_split_and_file(tmp_path, test_rows, split, message):
    task = load_task(write(tmp_path, SPEC, [{"input": "a", "target": "x"}], test_rows))
    with pytest.raises(UserError, match=message):
        task.require_rows(split, "evaluate")
    assert task.require_rows("train", "evaluate")[0].input == "a"

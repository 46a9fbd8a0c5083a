"""A task is tokenised once per tokenizer: evaluation selection and tuning reuse the encoded examples."""

import pickle

import lora_recycle.tasks.encoded as encoded_module
from lora_recycle.adapters import read_peft_adapter
from lora_recycle.selection.evaluation import evaluation_scores
from lora_recycle.tasks import load_task
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.prompting import encode_for_training, encode_prompt
from lora_recycle.tasks.scoring import evaluate_task


def test_evaluation_selection_encodes_each_prompt_once(monkeypatch, tiny_model, colour_task_dir, adapter_dirs):
    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    calls = []

    def counting(tokenizer, spec, example):
        calls.append(example)
        return encode_prompt(tokenizer, spec, example)

    monkeypatch.setattr(encoded_module, "encode_prompt", counting)
    ids = sorted(adapter_dirs)[:3]
    scores = evaluation_scores(model, tokenizer, task, ids, lambda i: read_peft_adapter(adapter_dirs[i]))
    assert len(scores) == 3
    assert len(calls) == len(set(task.split("train"))) and len(set(calls)) == len(calls)


def test_encoded_sequences_equal_direct_encoding_and_scores_agree(tiny_model, colour_task_dir):
    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    train, val = encode_task(tokenizer, task).fit_splits()
    assert train == [encode_for_training(tokenizer, task.spec, ex) for ex in task.split("train")]
    assert val == [encode_for_training(tokenizer, task.spec, ex) for ex in task.split("validation")]
    assert encode_task(tokenizer, task) is encode_task(tokenizer, task)
    result = evaluate_task(model, tokenizer, task, "test")
    assert len(result.correct) == result.n and sum(result.correct) / result.n == result.accuracy
    assert result.correct_marks().count("1") == sum(result.correct)
    clone = pickle.loads(pickle.dumps(task))  # what a worker receives carries no tokenizer
    assert "_encodings" not in clone.__dict__ and clone.split("train") == task.split("train")

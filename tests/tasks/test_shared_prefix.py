"""The shared-prefix forward equals the full forward: losses, gradients and choice scores."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

import lora_recycle.tasks.shared_prefix as shared_prefix
from lora_recycle.tasks import load_task
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.loss import batch_loss
from lora_recycle.tasks.prompting import collate, pad_token_id
from lora_recycle.tasks.scoring import evaluate_task
from lora_recycle.tasks.shared_prefix import has_active_dropout, shared_prefix_length


def test_shared_prefix_length_stops_at_padding_differences_and_needed_positions():
    ids = torch.tensor([[1, 2, 3, 4, 5, 0], [1, 2, 3, 9, 5, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    none = torch.zeros_like(ids, dtype=torch.bool)
    assert shared_prefix_length(ids, mask, none) == 3
    needed = none.clone()
    needed[1, 2] = True  # position 2's output is needed: it must be computed per row, after the prefix
    assert shared_prefix_length(ids, mask, needed) == 2
    same = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert shared_prefix_length(same, torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.zeros_like(same).bool()) == 2


def _peft_model(model, dropout: float):
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                  target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    return peft_model


def _loss_and_grads(peft_model, batch, share: bool, monkeypatch):
    monkeypatch.setattr(shared_prefix, "MIN_SHARED_PREFIX", 1 if share else 10**9)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    loss = batch_loss(peft_model, batch)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in params]


def test_training_loss_and_gradients_equal_the_full_forward(tiny_model, colour_task_dir, monkeypatch):
    model, tokenizer = tiny_model
    train, _ = encode_task(tokenizer, load_task(colour_task_dir)).fit_splits()
    batch = collate(train[:8], pad_token_id(tokenizer))
    peft_model = _peft_model(model, dropout=0.0)
    peft_model.train()
    prefix = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"] != -100)
    assert prefix >= 8  # the chat template's system prompt, at least
    full, full_grads = _loss_and_grads(peft_model, batch, False, monkeypatch)
    shared, shared_grads = _loss_and_grads(peft_model, batch, True, monkeypatch)
    assert shared == pytest.approx(full, rel=1e-5)
    for a, b in zip(full_grads, shared_grads, strict=True):
        assert (a - b).norm() <= 1e-4 * a.norm()


def test_choice_scores_equal_the_full_forward(tiny_model, colour_task_dir, monkeypatch):
    model, tokenizer = tiny_model
    task = load_task(colour_task_dir)
    monkeypatch.setattr(shared_prefix, "MIN_SHARED_PREFIX", 10**9)
    full = evaluate_task(model, tokenizer, task, "test")
    monkeypatch.setattr(shared_prefix, "MIN_SHARED_PREFIX", 1)
    shared = evaluate_task(model, tokenizer, task, "test")
    assert shared.correct == full.correct and shared.predictions == full.predictions


def test_active_dropout_disables_sharing(tiny_model):
    """A shared prefix would share one dropout mask between rows: with dropout active, the full forward runs."""
    model, _ = tiny_model
    peft_model = _peft_model(model, dropout=0.1)
    peft_model.train()
    assert has_active_dropout(peft_model)
    peft_model.eval()
    assert not has_active_dropout(peft_model)


@pytest.mark.parametrize("batch_size", [5, 64])  # one prompt per pass (left-padded), or 12 sharing their prefix
def test_prompt_once_choice_logliks_equal_prompt_plus_choice_rows(tiny_model, tmp_path, batch_size, monkeypatch):
    """Multi-token choices of uneven length and prompts of uneven length: the cached path gives the same sums."""
    shared_passes = []
    real_first_pass = shared_prefix._first_pass

    def spy(decoder, **inputs):  # a one-row first pass is the shared prefix
        shared_passes.append(inputs["input_ids"].shape[0] == 1 and "attention_mask" not in inputs)
        return real_first_pass(decoder, **inputs)

    monkeypatch.setattr(shared_prefix, "_first_pass", spy)
    from lora_recycle.tasks.format import Example, TaskSpec, write_task
    from lora_recycle.tasks.scoring import choice_logliks
    from lora_recycle.tasks.shared_prefix import prefix_sharing

    model, tokenizer = tiny_model
    choices = ("dark red", "a light shade of blue", "green", "yellowish orange")
    rows = [Example("thing " * (i % 5) + f"number {i}", choices[i % 4], choices) for i in range(12)]
    spec = TaskSpec(name="shades", type="multiple_choice", template="Which shade is {input}?")
    task = load_task(write_task(tmp_path / "shades", spec, rows, rows))
    examples = task.split("test")
    with prefix_sharing(False):
        reference = choice_logliks(model, tokenizer, task, examples, batch_size=5)
    cached = choice_logliks(model, tokenizer, task, examples, batch_size=batch_size)
    assert len(cached) == len(reference) == 12
    assert any(shared_passes) == (batch_size == 64)
    for got, want in zip(cached, reference, strict=True):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_common_prefix_leaves_every_prompt_a_token():
    from lora_recycle.tasks.shared_prefix import common_prefix_length

    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts: the last token runs per row
    assert common_prefix_length([[7], [7, 8]]) == 0

"""Fixtures for the core-install check, made with the core's own packages only (no mini-hub, no GGUF).

Writes into DIR: ``model/`` (a random 2-layer Llama with a byte-level BPE tokenizer trained here on the task's
words), ``colour/`` (a multiple-choice task) and ``pool/a0..a2`` (PEFT LoRA adapters with non-zero B).
Usage: python .ci/core_fixtures.py DIR
"""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lora_recycle.models.loading import quiet_libraries
from lora_recycle.tasks.format import Example, TaskSpec, write_task

BASE_ID = "ci/tiny-llama"
COLOURS = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue", "coal": "black", "snow": "white",
           "cherry": "red", "lemon": "yellow", "leaf": "green", "ocean": "blue", "crow": "black", "milk": "white"}
TEMPLATE = "What colour is {input}?"


def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) trained on the task's words in milliseconds."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [TEMPLATE.format(input=word) + f" {colour}" for word, colour in COLOURS.items()]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def base_model(out: Path) -> Path:
    tok = tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def task(out: Path) -> Path:
    rng = random.Random(0)
    choices = tuple(sorted(set(COLOURS.values())))
    rows = [Example(word, COLOURS[word], choices, id=str(i))
            for i, word in enumerate(rng.choice(sorted(COLOURS)) for _ in range(50))]
    spec = TaskSpec(name="colour", type="multiple_choice", template=TEMPLATE)
    return write_task(out, spec, rows[:40], rows[40:])


def adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A PEFT LoRA adapter (rank 4) whose B is non-zero, so it changes the model."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(model_dir), config)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    model.peft_config["default"].base_model_name_or_path = BASE_ID
    with warnings.catch_warnings():  # PEFT looks for the (made-up) base id's config to check the vocabulary
        warnings.filterwarnings("ignore", message="Could not find a config file")
        model.save_pretrained(out)
    return out


def main(root: Path) -> None:
    quiet_libraries()
    model_dir = base_model(root / "model")
    task(root / "colour")
    for seed in range(3):
        adapter(model_dir, root / "pool" / f"a{seed}", seed)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

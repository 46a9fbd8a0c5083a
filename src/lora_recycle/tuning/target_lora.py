"""Train a target-task LoRA with PEFT on the task's ~100 examples (the baseline recycling must beat)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lora_recycle.adapters.card import write_card
from lora_recycle.models.loading import base_model_name
from lora_recycle.models.precision import attention_for, autocast, lowered_weights, resolve_precision, unlowered
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.format import Task
from lora_recycle.tasks.loss import batch_loss, dataset_loss
from lora_recycle.tasks.prompting import pad_token_id
from lora_recycle.tasks.scoring import evaluate_task
from lora_recycle.tuning.loop import LoopConfig, LoopResult, run_training
from lora_recycle.tuning.target_config import TargetLoraConfig

# weight of the right choices' mean negative log-likelihood in the accuracy-based score (a tie-break only;
# the same scoring pass gives both)
ACCURACY_TIEBREAK = 1e-3


def capped_rank(model: nn.Module, rank: int, target_modules: tuple[str, ...]) -> int:
    """The rank actually used: at most half the smallest dimension of a targeted linear layer."""
    smallest = min(
        (min(m.in_features, m.out_features) for name, m in model.named_modules()
         if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in target_modules),
        default=rank * 2,
    )
    return max(1, min(rank, smallest // 2))


def train_target_lora(
    model: nn.Module, tokenizer, task: Task, config: TargetLoraConfig, out_dir: str | Path,
    device: torch.device | str = "cpu", base_model_id: str | None = None,
) -> tuple[Path, LoopResult, int]:
    """Fit a PEFT LoRA on ``task``'s training split, save the best-validation checkpoint to ``out_dir``.

    ``base_model_id`` (e.g. the Hub id of a local copy) is recorded as the adapter's base model.
    Returns ``(out_dir, loop result, rank used)``. The base model is left without the adapter.
    """
    from peft import LoraConfig, get_peft_model

    task.require_rows("train", "training a target-task LoRA")
    rank = capped_rank(model, config.rank, config.target_modules)
    torch.manual_seed(config.seed)
    peft_config = LoraConfig(
        r=rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=list(config.target_modules),
        use_rslora=config.use_rslora, task_type="CAUSAL_LM", bias="none",
    )
    with unlowered(model):  # fp32 factors initialised as in an fp32 region, inside a merge's bf16 one too
        peft_model = get_peft_model(model, peft_config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    for p in params:  # fp32 master weights whatever the base dtype
        p.data = p.data.float()
    precision = resolve_precision(config.precision, device)
    train, val = encode_task(tokenizer, task).fit_splits()

    by_accuracy = config.select_by == "accuracy" and task.type == "multiple_choice"
    val_split = "validation" if task.split("validation") else "train"

    def validate() -> float:
        with autocast(precision, device):
            if not by_accuracy:
                return dataset_loss(peft_model, tokenizer, val, device=device)
            result = evaluate_task(peft_model, tokenizer, task, val_split, device=device)
        return (1.0 - result.accuracy) + ACCURACY_TIEBREAK * result.gold_nll  # one pass scores both

    def snapshot():
        return [p.detach().clone() for p in params]

    def loss_fn(batch: dict) -> torch.Tensor:
        with autocast(precision, device):
            return batch_loss(peft_model, batch)

    with attention_for(model, precision), lowered_weights(model, precision):
        loop = run_training(
            loss_fn=loss_fn,
            params=params,
            train=train,
            validate=validate,
            snapshot=snapshot,
            config=LoopConfig(steps=config.steps, lr=config.lr, batch_size=config.batch_size,
                              micro_batch_size=config.batch_size, eval_every=config.eval_every,
                              warmup_ratio=0.1, schedule="cosine", weight_decay=0.0, seed=config.seed,
                              bucket_by_length=True, eval_initial=config.keep_initial,
                              patience=config.patience),
            pad_id=pad_token_id(tokenizer),
            device=device,
            description=f"training target LoRA on {task.name}",
            on_train=lambda training: peft_model.train(training),
            keep_initial=config.keep_initial,
        )
    with torch.no_grad():
        for p, best in zip(params, loop.best_state, strict=True):
            p.copy_(best)
    out_dir = Path(out_dir)
    peft_model.save_pretrained(str(out_dir))
    peft_model.unload()  # removes the LoRA layers: the caller's model is the bare base again
    _describe(out_dir, base_model_id or base_model_name(model), task, config, rank, len(train), loop, precision)
    return out_dir, loop, rank


def _score_name(config: TargetLoraConfig, task: Task) -> str:
    if config.select_by == "accuracy" and task.type == "multiple_choice":
        return f"score (1 - accuracy + {ACCURACY_TIEBREAK:g} x right-choice NLL)"
    return "loss"


def _describe(out_dir: Path, base: str, task: Task, config: TargetLoraConfig, rank: int, n_train: int,
              loop: LoopResult, precision: str) -> None:
    """Record the base model in ``adapter_config.json`` and write the model card."""
    config_file = out_dir / "adapter_config.json"
    saved = json.loads(config_file.read_text())
    saved["base_model_name_or_path"] = base
    if isinstance(saved.get("target_modules"), list):  # PEFT writes its set in hash order: sort for stable files
        saved["target_modules"] = sorted(saved["target_modules"])
    config_file.write_text(json.dumps(saved, indent=2) + "\n")
    write_card(
        out_dir,
        {"base_model": base, "library_name": "peft", "license": "apache-2.0",
         "tags": ["lora", "lora-recycle", "target-task-lora"], "task": task.name, "training_precision": precision},
        f"# Target-task LoRA for `{task.name}`\n\nTrained by lora-recycle on {n_train} examples "
        f"(rank {rank}, alpha {config.alpha}, {config.steps} steps, lr {config.lr}, seed {config.seed}, "
        f"{precision}); best validation {_score_name(config, task)} {loop.best_val_loss:.4f} at step {loop.best_step}"
        + (f", early-stopped at step {loop.stopped_at}" if loop.stopped_at else "") + ".\n",
    )

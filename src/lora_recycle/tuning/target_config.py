"""The target-task LoRA's settings (paper appendix C.2), apart from its training code so that reading an
experiment or a results file never imports torch."""

from __future__ import annotations

from dataclasses import dataclass, fields

from lora_recycle.adapters.paths import MODULE_TYPES


@dataclass(frozen=True)
class TargetLoraConfig:
    """Paper appendix C.2: rank 64, alpha 16, dropout 0.1, 400 steps, lr 3e-4, all seven projections."""

    rank: int = 64
    alpha: float = 16.0
    dropout: float = 0.1
    steps: int = 400
    lr: float = 3e-4
    batch_size: int = 8
    eval_every: int = 20
    seed: int = 0
    target_modules: tuple[str, ...] = MODULE_TYPES
    use_rslora: bool = False
    keep_initial: bool = True  # False for published pool adapters: never save the untrained (B = 0) state
    precision: str = "fp32"  # "fp32", "bf16" (autocast, fp32 LoRA factors) or "auto" (bf16 where native)
    patience: int | None = None  # early stopping: validations without a new best before stopping (None: off)
    # "accuracy": on multiple-choice tasks keep the snapshot with the best validation accuracy (the right
    # choices' log-likelihood breaks ties); a low answer-token loss can still rank the wrong choice first
    select_by: str = "loss"

    def identity(self) -> dict:
        """What identifies the trained LoRA in caches and run hashes: rank, alpha, steps, lr and seed, plus
        any other field changed from its default (so existing hashes stay valid)."""
        always = ("rank", "alpha", "steps", "lr", "seed")
        default = TargetLoraConfig()
        data = {name: getattr(self, name) for name in always}
        data.update({f.name: getattr(self, f.name) for f in fields(self)
                     if f.name not in always and getattr(self, f.name) != getattr(default, f.name)})
        return data

"""Time one tuning step per merge strategy and tuning mode, side by side.

Prints, for each k, ms per step and the ratio to the frozen base model's own forward+backward:
gradient tuning (coefficients only) under the factored, materialized, hybrid and auto strategies
(DESIGN section 8); joint tuning (pi-Tuning: coefficients and every adapter's A/B) under factored
and materialized; and one gradient-free evaluation (LoraHub: a forward pass, no gradients). Example:
    .venv/bin/python bench/merge_step.py --hidden 512 --layers 4 --rank 64 --tokens 1024 --k 5 30
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.paths import MODULE_TYPES
from lora_recycle.models.inject import MergedModel


def synthetic_adapter(model, rank: int, seed: int) -> LoraAdapter:
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in MODULE_TYPES:
            A = torch.randn(rank, module.in_features, generator=generator) * 0.02
            B = torch.randn(module.out_features, rank, generator=generator) * 0.02
            modules[name] = LoraModule(A, B, 16 / rank)
    return LoraAdapter(modules, f"synthetic-{seed}")


def merged_step_calibration(merged, ids) -> None:
    merged(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
    merged.raw.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per step (batch x sequence)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 30])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=args.hidden,
        intermediate_size=int(2.6875 * args.hidden),
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
    )
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    seq = 256
    ids = torch.randint(0, 1024, (max(1, args.tokens // seq), seq))

    def base_step():
        embeds = model.get_input_embeddings()(ids).requires_grad_(True)  # backward through every layer
        model(inputs_embeds=embeds).logits.float().logsumexp(-1).mean().backward()

    print(
        f"config: hidden {args.hidden}, layers {args.layers}, rank {args.rank}, tokens/step {ids.numel()}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{'k':>4} {'variant':>18} {'ms/step':>10} {'x base':>8}")
    strategies = ("factored", "materialized", "hybrid", "auto")
    for k in args.k:
        adapters = [synthetic_adapter(model, args.rank, seed) for seed in range(k)]
        merged = MergedModel(model, adapters, "module", "leaky_relu", "uniform")
        optimizer = torch.optim.AdamW([merged.raw], lr=5e-2)

        def merged_step(strategy, merged=merged, optimizer=optimizer):
            merged.set_strategy(strategy)
            optimizer.zero_grad()
            merged(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
            optimizer.step()

        def frozen_step(merged=merged):
            merged.apply_coefficients(torch.zeros_like(merged.raw))
            for layer in merged.layers.values():
                layer.coefficients = None  # bare base layers: the frozen model's own cost
            base_step()

        def joint_step(strategy, merged=merged):
            factors = [p for layer in merged.layers.values() for p in (layer.A_cat, layer.B_cat)]
            for p in factors:
                p.requires_grad_(True)
            merged.set_strategy(strategy)
            joint_optimizer = torch.optim.AdamW([merged.raw, *factors], lr=1e-4)
            merged(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
            joint_optimizer.step()
            for p in factors:
                p.requires_grad_(False)
                p.grad = None

        def gradient_free_step(merged=merged):
            merged.set_strategy("auto")
            with torch.no_grad():
                merged(input_ids=ids).logits.float().logsumexp(-1).mean()

        # Round-robin over repeats so that machine load affects every variant alike.
        runs = {"base": frozen_step, **{s: (lambda s=s: merged_step(s)) for s in strategies},
                "joint factored": lambda: joint_step("factored"),
                "joint materialized": lambda: joint_step("materialized"),
                "gradient-free eval": gradient_free_step}
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
        median = {name: sorted(v)[len(v) // 2] for name, v in samples.items()}
        print(f"{k:>4} {'frozen base':>18} {median['base'] * 1000:>10.1f} {1.0:>8.2f}")
        for name in runs:
            if name != "base":
                print(f"{k:>4} {name:>18} {median[name] * 1000:>10.1f} {median[name] / median['base']:>8.2f}")
        merged.set_strategy("calibrate")
        timings = merged.calibrate(lambda merged=merged: merged_step_calibration(merged, ids))
        chosen = min(timings, key=timings.get)
        print(f"{k:>4} {'calibrate':>18} -> {chosen} (one timed step per candidate)")
        merged.detach()


if __name__ == "__main__":
    main()

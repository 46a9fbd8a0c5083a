"""Time one tuning step per merge strategy and tuning mode, side by side.

Prints, for each k, ms per step and the ratio to the frozen base model's own forward+backward:
gradient tuning (coefficients only) under the factored, materialized, hybrid and auto strategies
(DESIGN section 8); joint tuning (pi-Tuning: coefficients and every adapter's A/B) under factored
and materialized; and one gradient-free evaluation (LoraHub: a forward pass, no gradients). Each
coefficient step is also read against its FLOP floor: the frozen base's own measured step times
``1 + (LoRA-path FLOPs of each layer's cheapest strategy) / (4 x linear parameters x tokens)`` (about
``R(n+m)/(nm)`` over the base for the factored path, ``R/T`` for the materialised one; DESIGN section 8),
and ``auto`` against the fastest strategy. ``--device cuda --dtype bf16`` runs it on a GPU (timed with
synchronisation). Examples:
    .venv/bin/python bench/merge_step.py --hidden 512 --layers 4 --rank 64 --tokens 1024 --k 5 30
    python bench/merge_step.py --device cuda --dtype bf16 --hidden 4096 --layers 4 --rank 16 --tokens 2048 --k 10
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.paths import MODULE_TYPES
from lora_recycle.models.inject import MergedModel
from lora_recycle.models.merged_linear import strategy_costs
from lora_recycle.models.precision import computing_in


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


def lora_floor_ratio(merged: MergedModel, tokens: int) -> float:
    """The step's floor over the frozen base's: 1 + the LoRA path's FLOPs (each layer at its cheapest exact
    strategy) over the base's 4 x linear parameters x tokens (forward plus input-gradient backward)."""
    base = sum(4.0 * layer.base.in_features * layer.base.out_features * tokens for layer in merged.layers.values())
    extra = sum(min(strategy_costs(layer.rank_sum, tokens, layer.base.out_features, layer.base.in_features).values())
                for layer in merged.layers.values())
    return 1.0 + extra / base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=0, help="MLP width (0: 2.6875 x hidden)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=0, help="attention heads (0: hidden / 128, at least 8)")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per step (batch x sequence)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 30])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="compute precision (bf16: autocast with frozen weights held in bf16, as merge runs it)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    heads = args.heads or max(8, args.hidden // 128)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate or int(2.6875 * args.hidden),
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
    )
    model = LlamaForCausalLM(config).eval().requires_grad_(False).to(device)
    seq = 256
    ids = torch.randint(0, 1024, (max(1, args.tokens // seq), seq), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def base_step():
        embeds = model.get_input_embeddings()(ids).requires_grad_(True)  # backward through every layer
        model(inputs_embeds=embeds).logits.float().logsumexp(-1).mean().backward()

    print(
        f"config: hidden {args.hidden}, intermediate {config.intermediate_size}, layers {args.layers}, heads {heads}, "
        f"rank {args.rank}, tokens/step {ids.numel()}, device {device}, dtype {args.dtype}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{'k':>4} {'variant':>18} {'ms/step':>10} {'x base':>8} {'x floor':>8}")
    strategies = ("factored", "materialized", "hybrid", "auto")
    with computing_in(model, args.dtype, device):
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
            sync()
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    start = time.perf_counter()
                    fn()
                    sync()
                    samples[name].append(time.perf_counter() - start)
            median = {name: sorted(v)[len(v) // 2] for name, v in samples.items()}
            floor = lora_floor_ratio(merged, ids.numel())
            print(f"{k:>4} {'frozen base':>18} {median['base'] * 1000:>10.1f} {1.0:>8.2f} {'':>8}")
            for name in runs:
                if name != "base":
                    ratio = median[name] / median["base"]
                    against = f"{ratio / floor:>8.2f}" if name in strategies else f"{'':>8}"
                    print(f"{k:>4} {name:>18} {median[name] * 1000:>10.1f} {ratio:>8.2f} {against}")
            best = min(strategies[:3], key=median.get)
            print(f"{k:>4} floor {floor:.2f}x the base; best {best}; "
                  f"auto {median['auto'] / median[best]:.3f}x the best")
            # what `merge` runs: on an accelerator `auto` is timed once per device and shapes (then cached),
            # on a CPU `calibrate` is; its pick read against this run's medians (the rule `auto` is the row above)
            merged.set_strategy("auto" if device.type != "cpu" else "calibrate")
            timings = merged.calibrate(lambda merged=merged: merged_step_calibration(merged, ids),
                                       repeats=3, tokens=ids.numel())
            chosen = min(timings, key=timings.get)
            print(f"{k:>4} {'timed choice':>18} -> {chosen} ({merged.strategy_source}; "
                  f"{median[chosen] / median[best]:.3f}x the best)")
            merged.detach()


if __name__ == "__main__":
    main()

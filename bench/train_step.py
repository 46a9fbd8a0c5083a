"""LoRA training step against the hardware floor, fp32 and bf16, and the pool build's adapter-steps per minute.

The floor of a step is 6 x non-embedding parameters x (non-padding) tokens at the matmul throughput
this same run measures on this machine (per precision, matmuls shaped like the model's, interleaved
with the steps so both see the same load). A ratio of 1.0 means the step costs what a full training
step's matmuls cost; LoRA needs no weight gradients of the frozen base, and the shared-prefix forward
runs the prompt prefix every row shares once (``tasks/shared_prefix.py``), so below 1.0 is possible:
the floor counts every non-padding token.

Also, side by side in the same run:
- a pool adapter built end to end (train + validation + own-task evaluation + save), as
  adapter-steps per minute and the share of its time spent outside the training steps;
- multi-LoRA in one pass (``--multi N``): N same-shaped LoRAs on N batches concatenated into one
  forward/backward, rows routed to their own adapter, as time per adapter-step against one LoRA.

Examples:
  .venv/bin/python bench/train_step.py --json                # SmolLM2-135M-Instruct (converted on first use)
  .venv/bin/python bench/train_step.py --model tiny --json   # the tiny CI model
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from lora_recycle.minihub.base_model import build_tiny_model, default_cache_dir
from lora_recycle.minihub.pool import BATCH_SIZE
from lora_recycle.models.loading import load_base_model
from lora_recycle.models.precision import attention_for, autocast, matmul_seconds, native_bf16
from lora_recycle.tasks import load_task
from lora_recycle.tasks.encoded import encode_task
from lora_recycle.tasks.loss import batch_loss
from lora_recycle.tasks.prompting import collate, pad_token_id
from lora_recycle.tasks.shared_prefix import prefix_sharing
from lora_recycle.tuning.batching import bucketed_batch_order, padding_share

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # --clock cpu: process CPU time, robust on a shared machine with --threads 1


def model_dir(name: str, cache: Path) -> Path:
    if name == "tiny":
        return build_tiny_model(cache / "models" / "tiny-llama", seed=0, cache_dir=cache)
    from lora_recycle.minihub.smollm2 import ensure_smollm2

    return ensure_smollm2(cache)


def non_embedding_params(model: nn.Module) -> int:
    """Parameters of the decoder's linear layers and norms: everything but token embeddings and the head."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def matmul_flops(dtype: torch.dtype, m: int, hidden: int, inter: int, seconds: float = 0.3) -> float:
    """FLOP/s of ``[m, hidden] @ [hidden, inter]`` and back, the shapes of the model's MLP at this batch (best of a
    ``seconds`` loop, as ``bench/adaptive_merge.py`` measures its floor)."""
    return 4 * m * hidden * inter / matmul_seconds(dtype, "cpu", m, hidden, inter, budget=seconds, clock=clock)


class MultiLora(nn.Module):
    """``base(x) + scale * x A_i^T B_i^T`` with the i-th adapter on the i-th slice of the batch (n same-rank LoRAs)."""

    def __init__(self, base: nn.Linear, n: int, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.A = nn.Parameter(torch.randn(n, rank, base.in_features) / base.in_features ** 0.5)
        self.B = nn.Parameter(torch.zeros(n, base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.A.shape[0]
        grouped = x.reshape(n, -1, x.shape[-1])  # rows of adapter i are the i-th block of the batch
        low = torch.bmm(grouped, self.A.transpose(1, 2).to(x.dtype))
        delta = torch.bmm(low, self.B.transpose(1, 2).to(x.dtype)).reshape(*x.shape[:-1], -1)
        return self.base(x) + self.scale * delta


def attach_multi(model: nn.Module, n: int, rank: int) -> list[nn.Parameter]:
    params = []
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in ALL:
                wrapped = MultiLora(child, n, rank, 2.0 * rank)
                setattr(module, child_name, wrapped)
                params += [wrapped.A, wrapped.B]
    return params


def detach_multi(model: nn.Module) -> None:
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, MultiLora):
                setattr(module, child_name, child.base)


class StepBench:
    """One PEFT LoRA (rank ``rank``, all seven projections) trained on a task with the engine's pieces."""

    def __init__(self, model, tokenizer, task, rank: int, batch: int, seed: int = 0):
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        self.model, self.tokenizer = model, tokenizer
        self.peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                     target_modules=ALL, task_type="CAUSAL_LM"))
        self.params = [p for p in self.peft.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-3)
        self.train = encode_task(tokenizer, task).training_split("train")
        self.lengths = [len(s.input_ids) for s in self.train]
        self.order = bucketed_batch_order(self.lengths, batch, 10_000, seed)
        self.pad, self.i = pad_token_id(tokenizer), 0
        self.peft.train()

    def batch(self) -> tuple[dict, int]:
        indices = self.order[self.i % len(self.order)]
        self.i += 1
        batch = collate([self.train[j] for j in indices], self.pad)
        return batch, int(batch["attention_mask"].sum())

    def step(self, precision: str, share: bool = True) -> tuple[float, int]:
        batch, tokens = self.batch()
        start = clock()
        with attention_for(self.peft, precision), prefix_sharing(share):
            with autocast(precision):
                loss = batch_loss(self.peft, batch)
            loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return clock() - start, tokens

    def close(self) -> None:
        self.peft.unload()


def multi_step(model, tokenizer, task, n: int, rank: int, batch: int, precision: str, reps: int) -> float:
    """Seconds per adapter-step with ``n`` LoRAs trained in one pass on ``n`` batches of equal width."""
    params = attach_multi(model, n, rank)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    train = encode_task(tokenizer, task).training_split("train")
    pad = pad_token_id(tokenizer)
    times = []
    try:
        for r in range(reps):
            rows = [train[(r * n * batch + j) % len(train)] for j in range(n * batch)]
            b = collate(rows, pad)  # one width for all n blocks: the multi-LoRA layout
            start = clock()
            with attention_for(model, precision):
                with autocast(precision):
                    loss = batch_loss(model, b)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append((clock() - start) / n)
    finally:
        detach_multi(model)
    return statistics.median(times)


def pool_adapter_rate(model_path: Path, task_dir: Path, steps: int, precision: str, limit: int) -> dict:
    """Build one pool adapter end to end (train, validate, score own task, save): adapter-steps/minute."""
    from lora_recycle.minihub.pool import plan_pool
    from lora_recycle.minihub.trainer import HubTrainer, Job, TrainerSetup

    plan = replace(plan_pool([task_dir.name], 1, steps, seed=0)[0], patience=None)  # every step, for the rate
    with tempfile.TemporaryDirectory() as tmp:
        trainer = HubTrainer(TrainerSetup(model_path, "bench/base", "cpu", precision, limit, Path(tmp)))
        trainer.load()
        start = clock()
        trainer.run(Job(Path(tmp) / "adapter", task_dir, plan=plan))
        seconds = clock() - start
    return {"seconds": seconds, "steps": steps, "adapter_steps_per_minute": 60 * steps / seconds,
            "rank": plan.rank, "targets": plan.targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--task", default="country_name_fr", help="a mini-hub task (built into a temp dir)")
    parser.add_argument("--batch", type=int, default=BATCH_SIZE, help="rows per step (default: the pool build's)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per precision (after 1 warm-up)")
    parser.add_argument("--adapter-steps", type=int, default=12, help="steps of the end-to-end pool adapter")
    parser.add_argument("--eval-limit", type=int, default=100, help="own-task test rows of that adapter")
    parser.add_argument("--multi", type=int, default=4, help="LoRAs per pass in the multi-LoRA trial (0: skip)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="cpu: process CPU time (use with --threads 1 when other jobs share the cores)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)

    from lora_recycle.minihub.tasks import build_task

    cache = default_cache_dir()
    path = model_dir(args.model, cache)
    # (precision, shared prefix): the two precisions on the full forward, then the build's setting
    variants = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16_shared_prefix": ("bf16", True)}
    with tempfile.TemporaryDirectory() as tmp:
        task_dir = build_task(args.task, Path(tmp) / "tasks", seed=0)
        task = load_task(task_dir)
        model, tokenizer = load_base_model(path)
        config = model.config
        n_params = non_embedding_params(model)
        bench = StepBench(model, tokenizer, task, args.rank, args.batch)
        padding = padding_share(bench.lengths, bench.order[:100])
        times = {v: [] for v in variants}
        tokens = {v: [] for v in variants}
        flops = {v: [] for v in variants}
        for p, share in variants.values():
            bench.step(p, share)  # warm-up
        for _ in range(args.steps):  # round-robin: every variant sees the same machine load
            for v, (p, share) in variants.items():
                seconds, n_tokens = bench.step(p, share)
                times[v].append(seconds)
                tokens[v].append(n_tokens)
                flops[v].append(matmul_flops(DTYPES[p], int(statistics.mean(tokens[v])), config.hidden_size,
                                             config.intermediate_size))
        bench.close()
        result = {"model": args.model, "clock": args.clock, "non_embedding_params": n_params, "batch": args.batch,
                  "rank": args.rank,
                  "threads": torch.get_num_threads(), "native_bf16": native_bf16("cpu"),
                  "padding_share": round(padding, 4)}
        for v in variants:
            step = statistics.median(times[v])
            tok = statistics.mean(tokens[v])
            throughput = statistics.median(flops[v])
            floor = 6 * n_params * tok / throughput
            result[v] = {"step_seconds": round(step, 4), "tokens_per_step": round(tok, 1),
                         "matmul_gflops": round(throughput / 1e9, 1), "floor_seconds": round(floor, 4),
                         "ratio_to_floor": round(step / floor, 3)}
        best = min(("fp32", "bf16"), key=lambda p: result[p]["step_seconds"])
        result["bf16_speedup"] = round(result["fp32"]["step_seconds"] / result["bf16"]["step_seconds"], 3)
        result["shared_prefix_speedup"] = round(result["bf16"]["step_seconds"]
                                                / result["bf16_shared_prefix"]["step_seconds"], 3)
        build = "bf16_shared_prefix" if best == "bf16" else best  # what the pool build runs
        result["build_setting"] = build
        if args.multi > 1:
            single = result[build]["step_seconds"]
            per_adapter = multi_step(model, tokenizer, task, args.multi, args.rank, args.batch, best, args.steps)
            result["multi_lora"] = {"adapters_per_pass": args.multi, "against": build,
                                    "seconds_per_adapter_step": round(per_adapter, 4),
                                    "ratio_to_one_lora": round(per_adapter / single, 3)}
        del model
        rate = pool_adapter_rate(path, task_dir, args.adapter_steps, best, args.eval_limit)
        in_steps = args.adapter_steps * result[build]["step_seconds"]
        rate["share_outside_steps"] = round(max(0.0, 1 - in_steps / rate["seconds"]), 3)
        rate["precision"] = best
        result["pool_build"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in rate.items()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model}: {n_params / 1e6:.1f}M non-embedding params, batch {args.batch}, rank {args.rank}, "
          f"{result['threads']} threads, padding {100 * padding:.1f}%")
    for v in variants:
        r = result[v]
        print(f"  {v}: {r['step_seconds']:.3f} s/step, {r['tokens_per_step']:.0f} tokens, matmul "
              f"{r['matmul_gflops']:.0f} GFLOP/s, floor {r['floor_seconds']:.3f} s -> ratio {r['ratio_to_floor']:.2f}")
    if "multi_lora" in result:
        m = result["multi_lora"]
        print(f"  multi-LoRA x{m['adapters_per_pass']} (vs {m['against']}): {m['seconds_per_adapter_step']:.3f} s "
              f"per adapter-step = {m['ratio_to_one_lora']:.2f}x one LoRA")
    b = result["pool_build"]
    print(f"  pool adapter end to end ({b['precision']}, {b['steps']} steps): {b['seconds']:.1f} s = "
          f"{b['adapter_steps_per_minute']:.1f} adapter-steps/min; {100 * b['share_outside_steps']:.0f}% outside steps")


if __name__ == "__main__":
    main()

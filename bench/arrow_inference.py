"""Routed inference cost: Arrow over k LoRAs against the base model and against one merged LoRA.

Side by side in one run (round-robin, median of repeats), as tokens per second and as a ratio to the
base model:
- base model alone; a merged LoRA folded into the weights costs exactly this;
- one merged LoRA served as an adapter (PEFT, unmerged, rank r on all seven projections), which is
  how a LoRA server runs a merge;
- PEFT's Arrow router over k experts (top_k 3), for each k given.
Two workloads: prefill (one forward over batch x tokens) and greedy decoding (new tokens per second).
Example: .venv/bin/python bench/arrow_inference.py --model ~/.cache/lora-recycle/models/smollm2-135m-instruct --k 5 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.minihub.base_model import build_tiny_model
from lora_recycle.models.loading import load_base_model
from lora_recycle.routing.arrow import ArrowSettings, routed, write_arrow_dir
from lora_recycle.routing.pool import prepare_arrow_pool

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapters(model_dir: Path, root: Path, n: int, rank: int) -> list[Path]:
    """``n`` PEFT LoRAs of one rank on all seven projections, non-zero B, deterministic."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        base = AutoModelForCausalLM.from_pretrained(str(model_dir))
        torch.manual_seed(i)
        model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=MODULES,
                                                init_lora_weights=False))
        model.save_pretrained(str(root / f"a{i}"))
        paths.append(root / f"a{i}")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="A local base model directory (default: a random small Llama).")
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 30])
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        root = Path(tmp)
        model_dir = args.model or build_tiny_model(root / "model", hidden=args.hidden, layers=args.layers)
        paths = make_adapters(model_dir, root, max(args.k), args.rank)
        ids = torch.randint(10, 1000, (args.batch, args.tokens))
        mask = torch.ones_like(ids)
        prompt = ids[:, :16]

        def prefill(model):
            return lambda: model(input_ids=ids, attention_mask=mask)

        def decode(model):
            return lambda: model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                          max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                          pad_token_id=0)

        from peft import PeftModel

        base, _ = load_base_model(model_dir)
        lora_host, _ = load_base_model(model_dir)
        single = PeftModel.from_pretrained(lora_host, str(paths[0])).eval()
        arrow_models = {}
        contexts = []
        for k in args.k:
            host, _ = load_base_model(model_dir)
            pool = prepare_arrow_pool([read_peft_adapter(p) for p in paths[:k]], [])
            out = write_arrow_dir(pool, root / f"arrow{k}", "bench", "arrow", ArrowSettings(top_k=args.top_k), [])
            context = routed(host, out)
            arrow_models[f"arrow k={k}"] = context.__enter__()
            contexts.append(context)
        models = {"base": base, f"one LoRA (rank {args.rank}, unmerged)": single, **arrow_models}
        where = args.model or f"random Llama, hidden {args.hidden}, {args.layers} layers"
        print(f"{where}, rank {args.rank}, top_k {args.top_k}, "
              f"{torch.get_num_threads()} threads; prefill {args.batch}x{args.tokens} tokens, decode "
              f"{args.batch}x{args.new_tokens} new tokens; median of {args.repeats} (round-robin)")
        for workload, make, tokens in (("prefill", prefill, args.batch * args.tokens),
                                       ("decode", decode, args.batch * args.new_tokens)):
            times: dict[str, list[float]] = {name: [] for name in models}
            runs = {name: make(m) for name, m in models.items()}
            for fn in runs.values():
                fn()  # warm-up (Arrow builds its prototypes on the first forward)
            for _ in range(args.repeats):  # round-robin: load from other processes hits every row alike
                for name, fn in runs.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(t) for name, t in times.items()}
            print(f"\n| {workload} | tokens/s | ratio to base | ratio to one LoRA |\n| --- | --- | --- | --- |")
            lora_name = next(n for n in models if n.startswith("one LoRA"))
            for name, seconds in medians.items():
                print(f"| {name} | {tokens / seconds:,.0f} | {medians['base'] / seconds:.2f} | "
                      f"{medians[lora_name] / seconds:.2f} |")
        for context in contexts:
            context.__exit__(None, None, None)


if __name__ == "__main__":
    main()

"""A fixed-coefficient merge (TIES by default) of k LoRAs on a large base: seconds and peak memory, this tree
against another git revision, side by side in one run.

It writes a random Llama-shaped base in bf16 safetensors (hidden 2048, intermediate 5632; default 4 layers,
0.28B parameters, two shards and an index, SmolLM2's tokenizer) and k random PEFT LoRAs on all seven
projections, then runs the console command ``merge --method ties --adapters A B C ... --out DIR`` with each
revision's code, alternating, and reports wall seconds, the child's peak RSS and whether the two exports hold the
same tensors. A per-module merge needs only the adapters and, to refuse absurd inputs, each target weight's
shape and ||W||_F: since the base's skeleton (``models/checkpoint.py``) it no longer loads the model, whose
float32 copy (the default ``--dtype``) was the peak. The time is the exact export's SVDs either way.
Example (about 9 minutes on 2 cores):
    .venv/bin/python bench/fixed_merge.py --baseline-ref 8493f64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from adaptive_merge import tree_for
from safetensors.torch import load_file, save_file

from lora_recycle.adapters import LoraAdapter, LoraModule, write_peft_adapter
from lora_recycle.minihub.base_model import ensure_tokenizer, write_model_record

PROJECTIONS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
               "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
BASE_ID = "bench/llama-fixed-merge"


def shapes(hidden: int, intermediate: int, kv: int) -> dict[str, tuple[int, int]]:
    """(out, in) of each projection; ``kv`` is the key/value width (grouped-query attention)."""
    return {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, hidden),
            "gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden), "down_proj": (hidden, intermediate)}


def write_base(out: Path, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> int:
    """A random bf16 Llama in two safetensors shards with an index; returns its parameter count."""
    from transformers import AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(ensure_tokenizer(None))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         tie_word_embeddings=True, torch_dtype="bfloat16", bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out.mkdir(parents=True)
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_model_record(out, BASE_ID)
    gen = torch.Generator().manual_seed(0)

    def normal(*size: int) -> torch.Tensor:
        return (torch.randn(*size, generator=gen) * 0.02).to(torch.bfloat16)

    kv = hidden // heads * kv_heads
    shards: list[dict[str, torch.Tensor]] = [{"model.embed_tokens.weight": normal(len(tokenizer), hidden)}, {}]
    for layer in range(layers):
        tensors = shards[layer * 2 // layers]
        for name, (rows, cols) in shapes(hidden, intermediate, kv).items():
            tensors[f"model.layers.{layer}.{PROJECTIONS[name]}.{name}.weight"] = normal(rows, cols)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{layer}.{norm}.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    shards[1]["model.norm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    names = [f"model-0000{i + 1}-of-00002.safetensors" for i in range(2)]
    for name, tensors in zip(names, shards, strict=True):
        save_file(tensors, out / name, metadata={"format": "pt"})
    weight_map = {key: name for name, tensors in zip(names, shards, strict=True) for key in tensors}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return sum(t.numel() for tensors in shards for t in tensors.values())


def write_adapters(root: Path, k: int, rank: int, hidden: int, intermediate: int, layers: int, kv: int) -> list[Path]:
    """k random rank-``rank`` LoRAs on every projection of every layer (seeded; alpha = 2 x rank)."""
    gen = torch.Generator().manual_seed(1)
    dirs = []
    for i in range(k):
        modules = {}
        for layer in range(layers):
            for name, (rows, cols) in shapes(hidden, intermediate, kv).items():
                a = torch.randn(rank, cols, generator=gen) / cols ** 0.5
                b = torch.randn(rows, rank, generator=gen) * 1e-3
                modules[f"model.layers.{layer}.{PROJECTIONS[name]}.{name}"] = LoraModule(a, b, 2.0)
        dirs.append(write_peft_adapter(LoraAdapter(modules, f"lora{i:02d}"), root / f"lora{i:02d}", BASE_ID,
                                       servable=False))
    return dirs


RUN = "import sys; from lora_recycle.cli import main; sys.exit(main(sys.argv[1:]))"


def timed_merge(src: Path, model: Path, adapters: list[Path], method: str, out: Path) -> dict:
    """One ``merge`` in a child process with ``src`` first on the path: wall seconds and the child's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = ["merge", "--model", str(model), "--adapters", *map(str, adapters), "--method", method, "--out", str(out),
            "--overwrite"]
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", RUN, *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"merge failed under {src}:\n{child.stderr.read()[-2000:]}")
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 2**20}


def max_difference(a: Path, b: Path) -> float:
    left, right = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    if left.keys() != right.keys():
        return float("inf")
    return max(float((left[key].float() - right[key].float()).abs().max()) for key in left)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--method", default="ties")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-ref", default=None, help="git revision whose code runs the same merge")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx512_bf16", "amx_bf16", "avx2")}
                   ) if Path("/proc/cpuinfo").is_file() else []
    print(f"CPU flags: {' '.join(flags) or 'unknown'}; {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="fixed-merge-") as tmp:
        work = Path(tmp)
        kv = args.hidden // args.heads * args.kv_heads
        params = write_base(work / "base", args.hidden, args.intermediate, args.layers, args.heads, args.kv_heads)
        adapters = write_adapters(work / "loras", args.k, args.rank, args.hidden, args.intermediate, args.layers, kv)
        print(f"base: {params / 1e9:.2f}B parameters in bf16 ({params * 2 / 2**30:.1f} GiB on disk); "
              f"{args.k} LoRAs of rank {args.rank} on {7 * args.layers} modules; method {args.method}")
        trees = {"this tree": root / "src"}
        if args.baseline_ref:
            trees[f"baseline {args.baseline_ref}"] = tree_for(args.baseline_ref, root, work) / "src"
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.repeats):
            for name, src in trees.items():
                runs[name].append(timed_merge(src, work / "base", adapters, args.method,
                                              work / f"out-{name.replace(' ', '-')}"))
        for name, rows in runs.items():
            print(f"{name:>24}: {statistics.median(r['seconds'] for r in rows):6.1f} s, peak RSS "
                  f"{max(r['peak_rss_gb'] for r in rows):5.2f} GiB (median of {len(rows)})")
        if args.baseline_ref:
            new, old = (statistics.median(r["seconds"] for r in rows) for rows in runs.values())
            outs = [work / f"out-{name.replace(' ', '-')}" for name in trees]
            print(f"speed-up x{old / new:.2f}; largest |difference| between the two exports "
                  f"{max_difference(*outs):.3g}")
            subprocess.run(["git", "-C", str(root), "worktree", "prune"], check=False)


if __name__ == "__main__":
    main()

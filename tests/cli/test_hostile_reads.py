"""Hostile inputs of issue 30 (items 1-6), through the installed console script: what is validated is what is
merged, a folder walk visits each real folder once, rows, templates and prompts are capped, pattern work is
bounded per adapter, huge factors and NaN logits are errors, and numeric flags and foreign adapters are one line.

Every run is bounded in time (its subprocess timeout) and memory (its address space); the attacks once took
minutes and up to 17.9 GB. docs/hostile-inputs.md has each attack's before and after.
"""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_console_script import assert_error_line, assert_usage_error, console

MEMORY = 3 << 30  # address space of one run; a tiny-model run maps ~1.5 GB
LOOKAHEAD = r"(?=.*?.*?.*?.*?\d[a-z])(?#{})"  # a legal key shape; each match costs ~1 ms on a module name


def hostile(*args, timeout: float = 60) -> object:
    """``lora-recycle ARGS`` with at most ``MEMORY`` bytes of address space and ``timeout`` seconds."""
    return console(*args, timeout=timeout,
                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY)))


def edited_copy(source: Path, target: Path, tensors=None, **config) -> Path:
    """A copy of the adapter ``source`` with its tensors passed through ``tensors`` and config fields replaced."""
    shutil.copytree(source, target)
    if tensors is not None:
        weights = target / "adapter_model.safetensors"
        save_file(tensors(load_file(weights)), weights)
    if config:
        path = target / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return target


def catalog(db: Path) -> dict[str, dict]:
    listing = console("pool", "list", "--db", db, "--json", timeout=60)
    assert listing.returncode == 0, listing.stderr
    return {row["id"]: row for row in json.loads(listing.stdout)}


def scan(source: Path, model: Path, db: Path, *extra) -> dict:
    result = hostile("pool", "scan", source, "--base-model", model, "--db", db, "--no-require-license", "--json",
                     *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def merge_args(model: Path, out: Path, *adapters: Path, method: str = "average") -> list:
    return ["merge", "--model", model, "--adapters", *adapters, "--method", method, "--out", out]


# -- 1. two keys for one factor ------------------------------------------------------------------------------


def _second_spelling(variant: str):
    """Tensors with one factor copied x300 under a second key naming the same module factor."""
    def edit(tensors: dict) -> dict:
        key = sorted(k for k in tensors if ".lora_A." in k)[0]
        other = key.replace("lora_A.weight", "lora_A.default.weight") if variant == "adapter-name" \
            else key.removeprefix("base_model.model.")
        return {**tensors, other: tensors[key] * 300}
    return edit


@pytest.mark.parametrize("variant", ["adapter-name", "no-prefix"])
def test_two_keys_for_one_factor_are_refused_at_scan_and_when_given(tmp_path, tiny_model_dir, colour_task_dir,
                                                                    adapter_dirs, variant):
    pool = tmp_path / "pool"
    twice = edited_copy(adapter_dirs["all_r4"], pool / "twice", _second_spelling(variant))
    shutil.copytree(adapter_dirs["qv_r8"], pool / "good")
    summary = scan(pool, tiny_model_dir, tmp_path / "pool.db")
    rows = catalog(tmp_path / "pool.db")
    assert rows["twice"]["reasons"] == ["ambiguous_key"] and rows["good"]["status"] == "accepted"
    assert summary["reasons"] == {"ambiguous_key": 1}
    out = tmp_path / "merged"
    line = assert_error_line(hostile(*merge_args(tiny_model_dir, out, twice)), "adapter twice", str(twice),
                             "ambiguous_key", "lora_A of module model.layers.0.")
    assert not out.exists()
    assert line == assert_error_line(hostile("evaluate", "--model", tiny_model_dir, "--task", colour_task_dir,
                                             "--adapter", twice))


def test_mlx_keys_with_and_without_the_language_model_prefix_are_ambiguous():
    from lora_recycle.adapters.formats import mlx_factor
    from lora_recycle.adapters.mlx_io import mlx_to_peft
    from lora_recycle.adapters.untrusted import AdapterProblem

    a = torch.zeros(64, 4)
    tensors = {"model.layers.0.self_attn.q_proj.lora_a": a, "language_model.model.layers.0.self_attn.q_proj.lora_a": a}
    with pytest.raises(AdapterProblem, match="both lora_A of module model.layers.0.self_attn.q_proj") as caught:
        mlx_to_peft(tensors, {"lora_parameters": {"rank": 4, "scale": 2.0}}, "x")
    assert caught.value.code == "ambiguous_key" and mlx_factor("language_model.m.lora_b") == ("m", "B")


# -- 2. symlink fan-out --------------------------------------------------------------------------------------


def _diamond(root: Path, adapter: Path, levels: int = 19) -> Path:
    """``levels`` folders whose two links ``a`` and ``b`` both point at the next: 2^18 paths to the adapter."""
    chain = root / "chain"
    for level in range(levels):
        (chain / f"d{level:02d}").mkdir(parents=True)
    for level in range(levels - 1):
        for link in ("a", "b"):
            (chain / f"d{level:02d}" / link).symlink_to(f"../d{level + 1:02d}")
    shutil.copytree(adapter, chain / f"d{levels - 1:02d}" / "adapter")
    return chain


def test_a_diamond_of_links_catalogues_each_adapter_once(tmp_path, tiny_model_dir, adapter_dirs):
    pool = tmp_path / "pool"
    _diamond(pool, adapter_dirs["all_r4"])
    shutil.copytree(adapter_dirs["qv_r8"], pool / "zz-sibling")
    summary = scan(pool, tiny_model_dir, tmp_path / "pool.db")  # was: 28,012 copies, then killed at 120 s
    assert (summary["seen"], summary["accepted"]) == (2, 2)
    assert sorted(catalog(tmp_path / "pool.db")) == ["chain/d18/adapter", "zz-sibling"]


def test_a_source_above_the_folder_cap_is_one_line_and_catalogues_nothing(tmp_path, tiny_model_dir, adapter_dirs):
    pool = tmp_path / "pool"
    _diamond(pool, adapter_dirs["all_r4"])
    db = tmp_path / "pool.db"
    assert_usage_error(hostile("pool", "scan", pool, "--base-model", tiny_model_dir, "--db", db,
                               "--max-folders", "10"), f"pool source {pool}", "more than 10 folders", "--max-folders")
    assert not db.exists() and list(tmp_path.glob("pool.db*")) == []  # no empty catalog left behind
    scan(pool, tiny_model_dir, db)  # a catalog that existed before a refused scan is kept as it was
    before = catalog(db)
    assert before and hostile("pool", "scan", pool, "--base-model", tiny_model_dir, "--db", db,
                              "--max-folders", "10").returncode == 2
    assert catalog(db) == before


# -- 3. unbounded prompts ------------------------------------------------------------------------------------


def _task(directory: Path, template: str, rows: list[dict], system: str | None = None) -> Path:
    directory.mkdir(parents=True)
    spec = {"name": "t", "type": "generation", "template": template, **({"system": system} if system else {})}
    (directory / "task.yaml").write_text(json.dumps(spec))  # JSON is YAML
    (directory / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


SMALL = [{"input": "apple", "target": "red"}] * 3


def test_a_50_mb_row_is_refused_before_it_is_read(tmp_path, tiny_model_dir):
    task = _task(tmp_path / "task", "Q: {input}", SMALL)
    with open(task / "train.jsonl", "a") as handle:  # was: 17.9 GB and a traceback
        handle.write(json.dumps({"input": "word " * 10_000_000, "target": "x"}) + "\n")
    assert_usage_error(hostile("evaluate", "--model", tiny_model_dir, "--task", task, "--split", "train"),
                       f"{task / 'train.jsonl'}:4", "longer than 1048576 bytes")


@pytest.mark.parametrize("template, field", [
    ("{input} {input:>300000000}", "{input:>300000000}"),  # was: 13.6 GB
    ("Q: {input!r}", "{input!r}"),
    ("Q: {input.upper}", "{input.upper}"),
    ("Q: {input[0]}", "{input[0]}"),
    ("Q: {input} {other}", "{other}"),
])
def test_template_fields_are_plain(tmp_path, tiny_model_dir, template, field):
    task = _task(tmp_path / "task", template, SMALL)
    assert_usage_error(hostile("evaluate", "--model", tiny_model_dir, "--task", task, "--split", "train"),
                       str(task / "task.yaml"), "field template", field, "not a plain {input}")


def test_prompts_are_capped_in_characters_then_in_tokens(tmp_path, tiny_model_dir, adapter_dirs):
    wide = _task(tmp_path / "wide", "{input} {input} {input}", [*SMALL, {"input": "x" * 400_000, "target": "y"}])
    assert_usage_error(hostile("evaluate", "--model", tiny_model_dir, "--task", wide, "--split", "train"),
                       f"{wide / 'train.jsonl'}:4", "1200002 characters", "1048576 cap")
    long = _task(tmp_path / "long", "Q: {input}", [{"input": "word " * 600, "target": "y"}, *SMALL])  # a train row
    for args in (["evaluate", "--split", "train"], ["merge", "--adapters", adapter_dirs["all_r4"], "--method", "ours",
                                                    "--steps", "1", "--out", tmp_path / "merged"]):
        assert_error_line(hostile(args[0], "--model", tiny_model_dir, "--task", long, *args[1:]),
                          f"{long / 'train.jsonl'}:1", "tokens, longer than the model's context of 512 tokens")
    assert not (tmp_path / "merged").exists()


# -- 4. slow but shape-legal patterns ------------------------------------------------------------------------


def test_pattern_work_is_bounded_per_adapter(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    slow = {LOOKAHEAD.format(i): 4 for i in range(1024)}  # within every per-key rule, and the key cap
    pool = tmp_path / "pool"
    edited_copy(adapter_dirs["all_r4"], pool / "slow", rank_pattern=slow, alpha_pattern={k: 8 for k in slow})
    edited_copy(adapter_dirs["all_r4"], pool / "many", rank_pattern={LOOKAHEAD.format(i): 4 for i in range(3000)})
    shutil.copytree(adapter_dirs["qv_r8"], pool / "good")
    scan(pool, tiny_model_dir, tmp_path / "pool.db", "--time-limit", "5")  # was: 95.7 s under --time-limit 5
    rows = {i: row["reasons"] for i, row in catalog(tmp_path / "pool.db").items()}
    assert rows == {"slow": ["bad_pattern"], "many": ["bad_pattern"], "good": []}
    assert_error_line(hostile("evaluate", "--model", tiny_model_dir, "--task", colour_task_dir, "--adapter",
                              pool / "slow", timeout=30), "adapter slow", "bad_pattern", "per-adapter pattern budget")
    assert_error_line(hostile(*merge_args(tiny_model_dir, tmp_path / "merged", pool / "many"), timeout=30),
                      "adapter many", "rank_pattern has 3000 keys (limit 1024)")
    assert not (tmp_path / "merged").exists()


def test_the_pattern_budget_is_shared_by_both_fields():
    from lora_recycle.adapters.lora_config import lora_numbers
    from lora_recycle.adapters.untrusted import AdapterProblem

    ticks = iter(range(10_000))
    numbers = lora_numbers({"r": 4, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"k_proj": 8}}, "cfg")
    numbers.rank_pattern.budget._clock = numbers.alpha_pattern.budget._clock = lambda: next(ticks)  # 1 s a match
    assert numbers.rank_pattern.budget is numbers.alpha_pattern.budget
    numbers.module_rank("model.layers.0.self_attn.q_proj", "cfg")  # 1 s spent
    with pytest.raises(AdapterProblem, match="alpha_pattern took over 2 s") as caught:
        numbers.module_alpha("model.layers.0.self_attn.q_proj", "cfg")  # 2 s spent: the next match is refused
        numbers.module_alpha("model.layers.0.self_attn.k_proj", "cfg")
    assert caught.value.code == "bad_pattern"


# -- 5. huge finite factors and non-finite logits ------------------------------------------------------------


@pytest.fixture()
def huge(tmp_path, adapter_dirs) -> Path:
    """Finite but absurd: every lora_B x 1e19 and lora_alpha 1e6."""
    return edited_copy(adapter_dirs["all_r4"], tmp_path / "huge",
                       lambda t: {k: v * 1e19 if "lora_B" in k else v for k, v in t.items()}, lora_alpha=1e6)


@pytest.mark.parametrize("method", ["average", "task_arithmetic"])
def test_huge_factors_are_refused_as_merge_inputs(tmp_path, tiny_model_dir, adapter_dirs, huge, method):
    out = tmp_path / "merged"  # average was: exit 0, an export reaching 1.1e22; task_arithmetic: an SVD traceback
    assert_error_line(hostile(*merge_args(tiny_model_dir, out, adapter_dirs["qv_r8"], huge, method=method)),
                      f"adapter huge ({huge})", "outlier", "||delta||_F / ||W||_F")
    assert not out.exists()


def test_huge_factors_are_refused_by_evaluate_and_as_general_adapters(tmp_path, tiny_model_dir, colour_task_dir,
                                                                      adapter_dirs, huge):
    assert_error_line(hostile("evaluate", "--model", tiny_model_dir, "--task", colour_task_dir, "--adapter", huge),
                      "adapter huge", "outlier")
    out = tmp_path / "routed"
    assert_error_line(hostile("merge", "--model", tiny_model_dir, "--adapters", adapter_dirs["all_r4"],
                              adapter_dirs["qv_r8"], "--method", "arrow_gks", "--general-adapters", huge, "--out", out),
                      "adapter general:huge", "outlier")
    assert not out.exists()


@pytest.mark.parametrize("metric", ["loglik", "exact_match"])
def test_nonfinite_logits_are_an_error_not_an_accuracy(tmp_path, tiny_model_dir, colour_task_dir, metric):
    model = tmp_path / "overflowing"
    shutil.copytree(tiny_model_dir, model)
    weights = load_file(model / "model.safetensors")
    weights["model.layers.0.mlp.down_proj.weight"] *= 1e38  # finite, but its products overflow to inf
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    assert_error_line(hostile("evaluate", "--model", model, "--task", colour_task_dir, "--metric", metric),
                      f"{colour_task_dir / 'test.jsonl'}:", "logits are NaN or infinite", "no score reported")


def test_merge_inputs_must_fit_the_model(tiny_model):
    from lora_recycle.adapters import LoraAdapter, LoraModule
    from lora_recycle.adapters.untrusted import AdapterProblem
    from lora_recycle.errors import UserError
    from lora_recycle.recipe.merge import merge_adapters
    from lora_recycle.recipe.presets import preset

    model, tokenizer = tiny_model
    path = "model.layers.0.self_attn.q_proj"
    big = LoraAdapter({path: LoraModule(torch.ones(1, 64), torch.full((64, 1), 1e3), 1.0)}, "big")
    with pytest.raises(AdapterProblem, match=f"adapter big: module {path} has .* above the 100"):
        merge_adapters(model, tokenizer, None, [big], preset("average"))
    narrow = LoraAdapter({path: LoraModule(torch.ones(1, 32), torch.ones(32, 1), 1.0)}, "narrow")
    with pytest.raises(UserError, match=r"adapter narrow: module .* has shape \(32, 32\), the base model's is"):
        merge_adapters(model, tokenizer, None, [narrow], preset("ties"))


def test_an_export_whose_update_overflows_its_dtype_is_not_written(tmp_path):
    from lora_recycle.adapters import LoraAdapter, LoraModule, write_peft_adapter
    from lora_recycle.errors import UserError

    module = LoraModule(torch.full((1, 32), 1e20), torch.full((32, 1), 1e20), 1.0)  # each factor fits float32
    adapter = LoraAdapter({"model.layers.0.self_attn.q_proj": module})
    with pytest.raises(UserError, match="beyond float32's 3.4e\\+38; nothing written"):
        write_peft_adapter(adapter, tmp_path / "out", "tiny-llama")
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


# -- 6. flags and shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, needle", [
    ("--coef", "nan", "finite number in [-100.0, 100.0]"),
    ("--coef", "1e39", "in [-100.0, 100.0]"),
    ("--coef", "-inf", "finite number"),
    ("--lr", "inf", "finite number greater than 0"),
    ("--init", "nan", "or a finite number"),
])
def test_numeric_flags_must_be_finite(tmp_path, tiny_model_dir, adapter_dirs, flag, value, needle):
    method = "ours" if flag in ("--lr", "--init") else "task_arithmetic"  # were: LinAlgError, overflow tracebacks
    out = tmp_path / "merged"
    assert_usage_error(hostile(*merge_args(tiny_model_dir, out, adapter_dirs["all_r4"], method=method), flag, value),
                       flag, needle)
    assert not out.exists()


@pytest.fixture(scope="module")
def hidden32(tmp_path_factory, peft_adapter_factory) -> tuple[Path, Path]:
    """``(base model of hidden size 32, an adapter trained on it)``; the tiny test model's hidden size is 64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tmp_path_factory.mktemp("models") / "hidden32"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(base)
    return base, peft_adapter_factory(base, tmp_path_factory.mktemp("adapters") / "narrow", 6)


@pytest.mark.parametrize("method", ["average", "ties", "tsv", "ours"])
def test_an_adapter_of_another_hidden_size_is_one_line(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs,
                                                       hidden32, method):
    out = tmp_path / "merged"  # ties, tsv: ValueError tracebacks; ours: a RuntimeError traceback
    args = merge_args(tiny_model_dir, out, adapter_dirs["all_r4"], hidden32[1], method=method)
    assert_error_line(hostile(*args, "--task", colour_task_dir, "--steps", "1") if method == "ours" else
                      hostile(*args), f"adapter narrow ({hidden32[1]})", "shape_mismatch", "base (64, 128)")
    assert not out.exists()


def test_a_catalog_of_another_base_is_one_line_at_merge(tmp_path, tiny_model_dir, hidden32):
    shutil.copytree(hidden32[1], tmp_path / "pool" / "narrow")
    scan(tmp_path / "pool", hidden32[0], tmp_path / "pool.db", "--max-outlier-ratio", "1e6")  # its base is tiny
    out = tmp_path / "merged"
    assert_error_line(hostile("merge", "--model", tiny_model_dir, "--db", tmp_path / "pool.db", "--ids", "narrow",
                              "--method", "ties", "--out", out), "adapter narrow: module model.layers.",
                      "the base model's is")
    assert not out.exists()


def test_an_adapter_on_lm_head_is_one_line(tmp_path, tiny_model_dir, colour_task_dir, adapter_dirs):
    head = edited_copy(adapter_dirs["all_r4"], tmp_path / "head", lambda t: {
        **t, "base_model.model.lm_head.lora_A.weight": torch.zeros(4, 64),
        "base_model.model.lm_head.lora_B.weight": torch.zeros(49152, 4)})
    out = tmp_path / "merged"  # was: "not a decoder-layer module path" ValueError traceback
    line = assert_error_line(hostile(*merge_args(tiny_model_dir, out, head)), "adapter head", "unknown_module",
                             "lm_head is not a module")
    assert not out.exists()
    assert line == assert_error_line(hostile("evaluate", "--model", tiny_model_dir, "--task", colour_task_dir,
                                             "--adapter", head))  # was: exit 0, the LoRA folded into lm_head

"""Validation: every corpus adapter lands with exactly its expected reasons; pickles never run."""

from __future__ import annotations

import pickle
import tracemalloc

import pytest
import torch
from pool_corpus import EXPECTED, Evil, huge_header_file
from safetensors import safe_open

from lora_recycle.adapters import read_adapter
from lora_recycle.pool import (
    Catalog,
    HeaderError,
    ValidationPolicy,
    normalise_model_name,
    read_safetensors_header,
    scan_pool,
    validate_adapter,
)
from lora_recycle.pool.base_spec import projection_shapes


def test_every_adapter_gets_exactly_its_reasons(scanned_db, marker):
    with Catalog(scanned_db, create=False) as catalog:
        rows = {row["id"]: row for row in catalog.rows()}
    assert set(rows) == set(EXPECTED)
    for adapter_id, reasons in EXPECTED.items():
        assert rows[adapter_id]["reasons"] == reasons, (adapter_id, rows[adapter_id]["details"])
        assert rows[adapter_id]["status"] == ("rejected" if reasons else "accepted")
    assert not marker.exists()


def test_hostile_pickle_never_runs_even_when_pickle_is_allowed(corpus, base_spec, marker, tmp_path):
    with Catalog(tmp_path / "pool.db") as catalog:
        scan_pool([corpus], base_spec, catalog, ValidationPolicy(allow_pickle=True))
        evil, plain = catalog.get("broken/pickle-evil"), catalog.get("broken/pickle-plain")
    assert not marker.exists()
    assert evil["reasons"] == ["not_safetensors"]
    assert "weights-only" in evil["details"]["not_safetensors"]
    # a benign pickle is read weights-only once the user opts in
    assert plain["status"] == "accepted" and plain["format"] == "peft-pickle"


def test_the_hostile_pickle_really_is_hostile(tmp_path):
    # Guards the test above: unpickling this payload (our own, with a private marker) does run code.
    other_marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Evil(other_marker))).close()
    assert other_marker.exists()


def test_outlier_ratio_is_the_dense_ratio(corpus, base_dir, base_spec):
    result = validate_adapter(corpus / "alice/all-seven", base_spec, ValidationPolicy())
    adapter = read_adapter(corpus / "alice/all-seven")
    ratios = []
    with safe_open(base_dir / "model.safetensors", framework="pt") as weights:
        for path, module in adapter.modules.items():
            W = weights.get_tensor(f"{path}.weight").double()
            ratios.append(float(module.delta(torch.float64).norm() / W.norm()))
    assert result.max_delta_ratio == pytest.approx(max(ratios), rel=1e-6)


def test_outlier_bound_is_configurable(corpus, base_spec):
    strict = validate_adapter(corpus / "alice/all-seven", base_spec, ValidationPolicy(max_outlier_ratio=0.01))
    assert list(strict.reasons) == ["outlier"]
    lax = validate_adapter(corpus / "broken/outlier", base_spec, ValidationPolicy(max_outlier_ratio=1e6))
    assert lax.accepted


def test_license_is_only_required_when_asked(corpus, base_spec):
    policy = ValidationPolicy(require_license=False)
    assert validate_adapter(corpus / "broken/no-license", base_spec, policy).accepted
    assert list(validate_adapter(corpus / "broken/two-reasons", base_spec, policy).reasons) == ["base_mismatch"]


def test_aliases_accept_another_base_name(corpus, base_dir):
    from lora_recycle.pool import load_base_spec

    spec = load_base_spec(base_dir, aliases=("meta-llama/Meta-Llama-3.1-8B-Instruct",))
    assert validate_adapter(corpus / "broken/other-base", spec, ValidationPolicy()).accepted


@pytest.mark.parametrize(
    "name, same",
    [
        ("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", True),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", True),
        ("/models/Llama-3.1-8B-Instruct/", True),
        ("mlx-community/Llama-3.1-8B-Instruct-4bit", True),
        ("meta-llama/Llama-3.1-8B", False),
        ("Qwen/Qwen2.5-7B-Instruct", False),
    ],
)
def test_model_names_normalise(name, same):
    assert (normalise_model_name(name) == normalise_model_name("meta-llama/Llama-3.1-8B-Instruct")) == same


def test_hostile_header_is_refused_without_allocating(tmp_path):
    path = huge_header_file(tmp_path / "x.safetensors", 8 << 30)
    tracemalloc.start()
    with pytest.raises(HeaderError, match="cap"):
        read_safetensors_header(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_header_offsets_beyond_the_file_are_corrupt(tmp_path):
    header = b'{"a":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,40000000000]}}'
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(HeaderError, match="truncated"):
        read_safetensors_header(path)


def test_header_agrees_with_safetensors(corpus):
    path = corpus / "alice/all-seven/adapter_model.safetensors"
    ours = read_safetensors_header(path)
    with safe_open(path, framework="pt") as handle:
        theirs = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    assert {key: info.shape for key, info in ours.items()} == theirs


def test_projection_shapes_match_the_saved_model(base_dir, base_spec):
    header = read_safetensors_header(base_dir / "model.safetensors")
    for path, shape in base_spec.shapes.items():
        assert header[f"{path}.weight"].shape == shape
    assert projection_shapes({"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2,
                              "num_key_value_heads": 1, "head_dim": 8})["k_proj"] == (8, 8)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_tensors_read_without_torch_equal_torchs(tmp_path, dtype):
    """The scan reads factors and base weights with numpy (bf16 by its bits): the same float64 values as torch's,
    and a base weight's norm read in blocks equals torch's to round-off."""
    from safetensors.torch import save_file

    from lora_recycle.pool.header import read_float64, squared_norm

    g = torch.Generator().manual_seed(0)
    tensors = {"w": (torch.randn(37, 29, generator=g) * 3).to(dtype), "v": torch.randn(5, generator=g).to(dtype)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, path)
    header = read_safetensors_header(path)
    with open(path, "rb") as handle:
        for key, tensor in tensors.items():
            assert torch.equal(torch.from_numpy(read_float64(handle, header[key])), tensor.double())
            for block in (2, 64, 1 << 26):  # blocks smaller than a row, several rows, the whole tensor
                norm = squared_norm(handle, header[key], block_bytes=block) ** 0.5
                assert norm == pytest.approx(float(tensor.double().norm()), rel=1e-12)

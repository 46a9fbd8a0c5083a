"""Validate one adapter directory against the base model (DESIGN section 3).

Config and safetensors header first (no tensor is read until every shape is known to fit the base
model), tensors second, one module at a time. Every problem becomes a reason code; an adapter with no
reason is accepted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora_recycle.adapters.card import read_card_data
from lora_recycle.adapters.formats import (
    MLX_WEIGHTS_NAME,
    WEIGHTS_NAME,
    check_lora_config,
    mlx_factor,
    mlx_lora_settings,
    read_adapter_config,
)
from lora_recycle.adapters.lora_config import LoraNumbers, check_alpha, check_rank, lora_numbers, lora_scale
from lora_recycle.adapters.paths import ambiguous_factor, canonical_path
from lora_recycle.adapters.untrusted import AdapterProblem
from lora_recycle.errors import UserError
from lora_recycle.pool.base_spec import BaseModelSpec
from lora_recycle.pool.deadline import Deadline, ValidationTimeout
from lora_recycle.pool.header import FLOAT_DTYPES, MAX_HEADER_BYTES, HeaderError, read_float64, read_safetensors_header
from lora_recycle.pool.records import REASONS, ModuleInfo, ValidationResult
from lora_recycle.pool.sources import CARD_NAME, MARKER_NAMES, PICKLE_NAMES

DEFAULT_MAX_RANK = 1024  # above it a module is ``rank_too_large``; its r x r float64 Gram matrices stay <= 8 MB
DEFAULT_TIME_LIMIT_S = 30.0  # seconds of validation per adapter before it is a ``timeout``
# Key fragments of adapter content that is not a plain W + s B A update.
_NON_LORA_MARKERS = (
    "lora_magnitude_vector",
    "trainable_tokens",
    "lora_embedding_",
    "modules_to_save",
    "token_adapter",
)
# Config flags of LoRA variants whose weights mean something else.
_NON_LORA_FLAGS = ("use_qalora", "trainable_token_indices", "use_bdlora")


@dataclass(frozen=True)
class ValidationPolicy:
    """How strict the pool is: ``--no-require-license``, ``--allow-pickle``, ``--max-outlier-ratio``,
    ``--min-norm`` (None: off; the authors drop adapters with ||s B A||_F <= 1 on an 8B model)."""

    require_license: bool = True
    allow_pickle: bool = False
    max_outlier_ratio: float = 1.0
    max_header_bytes: int = MAX_HEADER_BYTES
    max_rank: int = DEFAULT_MAX_RANK
    time_limit: float = DEFAULT_TIME_LIMIT_S
    min_norm: float | None = None


@dataclass(frozen=True)
class _Factor:
    key: str
    path: str
    factor: str
    shape: tuple[int, ...]  # canonical: A [r, in], B [out, r]
    transpose: bool


@dataclass(frozen=True)
class _LoraSettings:
    """PEFT's checked numbers (rank/alpha rules), or mlx-lm's absolute scale."""

    numbers: LoraNumbers | None
    mlx_scale: float | None = None
    where: str = ""


def _as_text(value: object, first: bool = False) -> str | None:
    """Card fields may be lists: join them (licenses), or take the first (base models)."""
    if isinstance(value, list):
        value = (value[0] if value else None) if first else ", ".join(str(v) for v in value if v)
    return (str(value).strip() or None) if value else None


def file_sha256(path: Path, chunk: int = 1 << 20, deadline: Deadline | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (the deadline is checked between chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if deadline is not None:
                deadline.check("hashing the weights")
    return digest.hexdigest()


def validate_adapter(
    directory: Path,
    base: BaseModelSpec,
    policy: ValidationPolicy,
    hints: dict | None = None,
    root: Path | None = None,
) -> ValidationResult:
    """Validate the adapter in ``directory``; ``hints`` may carry Hub data (``license``, ``base_model``).

    Never raises for a bad adapter: every problem, including an unexpected exception or running out of
    ``policy.time_limit``, is a reason. With ``root``, files that resolve outside it are not read.
    """
    result = ValidationResult()
    deadline = Deadline(policy.time_limit)
    try:
        if root is None or _inside_root(Path(directory), Path(root), result):
            _validate(Path(directory), base, policy, hints or {}, result, deadline)
    except ValidationTimeout as exc:
        result.reject("timeout", str(exc))
    except AdapterProblem as exc:
        result.reject(exc.code if exc.code in REASONS else "corrupt", str(exc))
    except Exception as exc:  # noqa: BLE001 - one adapter must never stop a scan
        result.reject("corrupt", f"validation failed on {type(exc).__name__}: {str(exc)[:200]}")
    return result


def _inside_root(directory: Path, root: Path, result: ValidationResult) -> bool:
    """False (with ``outside_source``) if any adapter file resolves outside ``root`` (e.g. a symlink out)."""
    real_root = os.path.realpath(root)
    for name in (*MARKER_NAMES, CARD_NAME):
        path = directory / name
        if os.path.lexists(path) and not _within(os.path.realpath(path), real_root):
            result.reject("outside_source", f"{name} resolves outside {root}")
            return False
    return True


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _validate(
    directory: Path, base: BaseModelSpec, policy: ValidationPolicy, hints: dict, result: ValidationResult,
    deadline: Deadline,
) -> None:
    try:
        result.card = read_card_data(directory)
    except AdapterProblem as exc:
        result.reject(exc.code, str(exc))
    result.license = _as_text(result.card.get("license")) or _as_text(hints.get("license"))
    if policy.require_license and not result.license:
        result.reject("no_license", "no license in the model card")
    try:
        config = read_adapter_config(directory)
    except UserError as exc:
        result.reject(getattr(exc, "code", "corrupt"), str(exc))
        _locate_weights(directory, result, hints)
        return
    is_mlx = (directory / MLX_WEIGHTS_NAME).is_file() or "lora_parameters" in config
    result.format = "mlx" if is_mlx else "peft"
    result.base_model = (
        _as_text(config.get("model") if is_mlx else config.get("base_model_name_or_path"))
        or _as_text(result.card.get("base_model"), first=True)
        or _as_text(hints.get("base_model"), first=True)
    )
    if result.base_model and not base.accepts(result.base_model):
        result.reject("base_mismatch", f"adapter is for {result.base_model}, the pool is for {base.name}")
    settings = _lora_settings(config, is_mlx, str(directory), result, policy)
    deadline.check("reading the config")
    weights = _locate_weights(directory, result, hints)
    if weights is None:
        return
    with _open_weights(weights, result, policy) as tensors:
        if tensors is None:
            return
        factors = _map_factors(tensors.header, is_mlx, result)
        modules = _check_shapes(factors, base, result, settings, policy, deadline)
        if modules and not {"corrupt", "shape_mismatch", "rank_too_large", "ambiguous_key"} & result.reasons.keys():
            # hashed only now: the header, its layout against the file size and the shapes bound what is read
            result.sha256 = file_sha256(weights, deadline=deadline)
            _check_tensors(modules, tensors, base, policy, result, deadline)


def _lora_settings(
    config: dict, is_mlx: bool, where: str, result: ValidationResult, policy: ValidationPolicy
) -> _LoraSettings | None:
    """Per-module rank/alpha/scale rules from the config; None (with a reason) if unusable.

    Variants that are not plain LoRA get ``unsupported_type`` but keep their settings, so the catalog
    still records their ranks. Numbers must be finite and in range (``bad_config``), ranks at most the
    policy's cap (``rank_too_large``), pattern keys valid and safe regexes (``bad_pattern``).
    """
    if is_mlx:
        kind = str(config.get("fine_tune_type", "lora")).lower()
        if kind != "lora":
            result.reject("unsupported_type", f"{where}: fine_tune_type {kind} is not LoRA")
        try:
            rank, scale = mlx_lora_settings({**config, "fine_tune_type": "lora"}, where)
            rank = check_rank(rank, "lora_parameters.rank", where, policy.max_rank)
            scale = check_alpha(scale, "lora_parameters.scale", where)
        except AdapterProblem as exc:
            result.reject(exc.code, str(exc))
            return None
        except UserError as exc:
            result.reject("corrupt", str(exc))
            return None
        result.rank, result.alpha = rank, scale * rank
        return _LoraSettings(None, scale, where)
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if key in config and (isinstance(value, bool) or not isinstance(value, int | float)):
            result.reject("corrupt", f"{where}: field {key} must be a number, got {value!r}")
            return None
    try:
        numbers = lora_numbers(config, where, policy.max_rank)
    except AdapterProblem as exc:
        result.reject(exc.code, str(exc))
        return None
    try:
        check_lora_config(config, where)
    except UserError as exc:
        result.reject("unsupported_type", str(exc))
    flags = [flag for flag in _NON_LORA_FLAGS if config.get(flag)]
    if flags:
        result.reject("unsupported_type", f"{where}: {flags[0]} is set; not a plain LoRA")
    result.rank, result.alpha, result.use_rslora = numbers.rank, numbers.alpha, numbers.use_rslora
    return _LoraSettings(numbers, None, where)


def _locate_weights(directory: Path, result: ValidationResult, hints: dict) -> Path | None:
    """The weights file to read (not read yet); records ``not_safetensors`` / ``corrupt`` when there is none."""
    for name in (WEIGHTS_NAME, MLX_WEIGHTS_NAME, *PICKLE_NAMES):
        if (directory / name).is_file():
            path = directory / name
            result.weights_file, result.size = path, path.stat().st_size
            return path
    if any(name in PICKLE_NAMES for name in hints.get("remote_files", ())):
        result.reject("not_safetensors", "the Hub repo has only pickle weights (not downloaded)")
    else:
        result.reject("corrupt", f"{directory}: no adapter weights file")
    return None


@dataclass
class _Weights:
    """Uniform access to tensors, as float64 arrays, from a safetensors file or a weights-only pickle."""

    header: dict[str, tuple[str, tuple[int, ...]]]
    get: Callable[[str], np.ndarray]


@contextmanager
def _open_weights(path: Path, result: ValidationResult, policy: ValidationPolicy) -> Iterator[_Weights | None]:
    """Header first (capped, checked against the file size); tensors stay memory-mapped until read."""
    if path.name in PICKLE_NAMES:
        yield _load_pickle(path, result, policy)
        return
    try:
        header = read_safetensors_header(path, policy.max_header_bytes)
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except (HeaderError, OSError) as exc:
        result.reject("corrupt", f"{path.name}: {exc}")
        yield None
        return
    with handle:
        shapes = {key: (info.dtype, info.shape) for key, info in header.items()}
        yield _Weights(shapes, lambda key: read_float64(handle, header[key]))


def _load_pickle(path: Path, result: ValidationResult, policy: ValidationPolicy) -> _Weights | None:
    if not policy.allow_pickle:
        result.reject("not_safetensors", f"{path.name}: pickle weights are never unpickled without --allow-pickle")
        return None
    import torch

    try:
        # weights_only=True refuses any pickle that would build objects or call functions.
        tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # noqa: BLE001 - every failure here means "not loadable safely"
        result.reject("not_safetensors", f"{path.name}: refused by the weights-only loader ({type(exc).__name__})")
        return None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        result.reject("corrupt", f"{path.name}: not a mapping of tensor names to tensors")
        return None
    result.format = f"{result.format}-pickle"
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
    header = {k: (dtypes.get(t.dtype, str(t.dtype)), tuple(t.shape)) for k, t in tensors.items()}
    return _Weights(header, lambda key: tensors[key].double().numpy())


def _map_factors(
    header: dict[str, tuple[str, tuple[int, ...]]], is_mlx: bool, result: ValidationResult
) -> list[_Factor]:
    """Parse every key into a LoRA factor; other content is ``unsupported_type``, two keys for one factor
    ``ambiguous_key``."""
    ambiguous = ambiguous_factor(header, mlx_factor if is_mlx else canonical_path)
    if ambiguous is not None:
        result.reject("ambiguous_key", ambiguous)
    factors = []
    for key, (dtype, shape) in header.items():
        parsed = mlx_factor(key) if is_mlx else canonical_path(key)
        if parsed is None or any(marker in key for marker in _NON_LORA_MARKERS):
            result.reject("unsupported_type", f"tensor {key} is not a LoRA factor")
            continue
        if dtype not in FLOAT_DTYPES:
            result.reject("unsupported_type", f"tensor {key} has dtype {dtype} (quantised LoRA factors)")
            continue
        if is_mlx and len(shape) == 2:
            shape = shape[::-1]
        factors.append(_Factor(key, parsed[0], parsed[1], tuple(shape), is_mlx))
    return factors


def _check_shapes(
    factors: list[_Factor],
    base: BaseModelSpec,
    result: ValidationResult,
    settings: _LoraSettings | None,
    policy: ValidationPolicy,
    deadline: Deadline,
) -> dict[str, dict[str, _Factor]]:
    """Pair A with B per module, check both against the base model, and record each good module.

    Returns ``path -> {"A": factor, "B": factor}`` for the modules whose shapes fit.
    """
    by_path: dict[str, dict[str, _Factor]] = {}
    for factor in factors:
        if factor.path not in base.shapes:
            result.reject("unknown_module", f"tensor {factor.key}: {factor.path} is not a module of {base.name}")
            continue
        by_path.setdefault(factor.path, {})[factor.factor] = factor
    if not factors:
        result.reject("empty", "no LoRA tensors")
    good: dict[str, dict[str, _Factor]] = {}
    for path in sorted(by_path):
        deadline.check(f"checking {path}")
        pair = by_path[path]
        if set(pair) != {"A", "B"}:
            result.reject("shape_mismatch", f"module {path} lacks lora_{'B' if 'A' in pair else 'A'}")
            continue
        a_shape, b_shape = pair["A"].shape, pair["B"].shape
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1] or a_shape[0] == 0:
            result.reject("shape_mismatch", f"module {path}: A {a_shape} and B {b_shape} do not pair")
        elif a_shape[0] > policy.max_rank:
            result.reject("rank_too_large", f"module {path}: rank {a_shape[0]} is above the rank cap {policy.max_rank}")
        elif (b_shape[0], a_shape[1]) != base.shapes[path]:
            result.reject(
                "shape_mismatch", f"module {path}: delta {(b_shape[0], a_shape[1])}, base {base.shapes[path]}"
            )
        elif settings is not None:
            module = _module_info(path, a_shape[0], result, settings)
            expected = settings.numbers.module_rank(path, settings.where) if settings.numbers else result.rank
            if settings.mlx_scale is None and expected != module.rank:
                result.reject("shape_mismatch", f"module {path}: rank {module.rank}, config says {expected}")
            elif settings.mlx_scale is not None and result.rank != module.rank:
                result.reject("shape_mismatch", f"module {path}: rank {module.rank}, config says {result.rank}")
            else:
                result.modules.append(module)
                good[path] = pair
    return good


def _module_info(path: str, rank: int, result: ValidationResult, settings: _LoraSettings) -> ModuleInfo:
    if settings.mlx_scale is not None:  # mlx-lm's scale is absolute; alpha is its PEFT equivalent
        return ModuleInfo(path, rank, settings.mlx_scale * rank, settings.mlx_scale)
    alpha = settings.numbers.module_alpha(path, settings.where)
    return ModuleInfo(path, rank, alpha, lora_scale(alpha, rank, result.use_rslora))


def _check_tensors(
    modules: dict[str, dict[str, _Factor]],
    weights: _Weights,
    base: BaseModelSpec,
    policy: ValidationPolicy,
    result: ValidationResult,
    deadline: Deadline,
) -> None:
    """Read one module at a time: finiteness, all-zero B, and ||delta||_F / ||W||_F in factored form.

    Memory is a small multiple of the largest tensor plus two r x r float64 Gram matrices (r is capped).
    """
    all_zero, worst, total = True, None, 0.0
    scales = {m.path: m.scale for m in result.modules}
    for path, pair in modules.items():
        deadline.check(f"reading {path}")
        try:
            A, B = (weights.get(pair[f].key) for f in ("A", "B"))
        except (HeaderError, OSError, RuntimeError, ValueError) as exc:
            result.reject("corrupt", f"tensor of {path}: {exc}")
            return
        # numpy for these tiny r x r products: torch's thread pool costs ~15 ms a call on a busy 2-CPU box
        if pair["A"].transpose:
            A, B = A.T, B.T
        if not (np.isfinite(A).all() and np.isfinite(B).all()):
            result.reject("nonfinite", f"module {path} has NaN or Inf")
            continue
        all_zero = all_zero and not B.any()
        # ||s B A||_F^2 = s^2 tr((B^T B)(A A^T)) without building the [out, in] product.
        squared = max(float(((B.T @ B) * (A @ A.T)).sum()), 0.0)
        total += scales[path] ** 2 * squared
        w_norm = base.weight_norm(path)
        if w_norm:
            ratio = abs(scales[path]) * squared**0.5 / w_norm
            worst = ratio if worst is None else max(worst, ratio)
    result.max_delta_ratio = worst
    if "nonfinite" not in result.reasons:
        result.delta_norm = total**0.5
        check_min_norm(result, policy.min_norm, all_zero)
    if all_zero and "nonfinite" not in result.reasons:
        result.reject("empty", "every lora_B is zero")
    if worst is not None and worst > policy.max_outlier_ratio:
        result.reject("outlier", f"||delta||_F / ||W||_F = {worst:.3g} above {policy.max_outlier_ratio}")


def check_min_norm(result: ValidationResult, min_norm: float | None, all_zero: bool = False) -> None:
    """Reject as ``near_empty`` an adapter whose whole update has ||s B A||_F <= ``min_norm`` (None: off)."""
    if min_norm is not None and not all_zero and result.delta_norm is not None and result.delta_norm <= min_norm:
        result.reject("near_empty", f"||s B A||_F = {result.delta_norm:.3g} is at most --min-norm {min_norm:g}")

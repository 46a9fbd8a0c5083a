"""Arrow routing (and GenKnowSub) through PEFT's own implementation, as a recycling baseline.

Arrow (Ostapenko et al. 2024) routes every token, in every routed linear layer, to the ``top_k``
library LoRAs whose top right singular vector aligns best with the token's hidden state; GenKnowSub
(``use_gks``) first subtracts the average of "general" LoRAs from every expert. Both are built by
``peft.tuners.lora.arrow.create_arrow_model``; this module only prepares what it loads (see
``routing.pool`` for the module and rank rule), writes it as a directory PEFT reloads, and attaches
it to a loaded base model for scoring. Routing is not one adapter: it cannot be exported merged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lora_recycle import __version__
from lora_recycle.errors import UserError
from lora_recycle.escaping import table_cell
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.user_files import read_json

if TYPE_CHECKING:  # torch: the writers import their modules when they run (reading a spec needs none of it)
    from lora_recycle.adapters.lora import LoraAdapter
    from lora_recycle.routing.pool import ArrowPool, ModuleRule

ARROW_CONFIG_NAME = "arrow_config.json"
FORMAT_VERSION = 1  # of arrow_config.json


def _setting_default(name: str):
    """The default of a ``MergeSettings`` field: Arrow's defaults are declared there, once."""
    return next(f.default for f in fields(MergeSettings) if f.name == name)


@dataclass(frozen=True)
class ArrowSettings:
    """PEFT ``ArrowConfig`` fields plus our pool rule; ``rng_seed`` seeds the prototypes' power iteration."""

    top_k: int = _setting_default("top_k")
    router_temperature: float = _setting_default("router_temperature")
    rng_seed: int = 0
    use_gks: bool = False
    arrow_modules: ModuleRule = _setting_default("arrow_modules")

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise UserError(f"--top-k {self.top_k}: must be at least 1")
        if not self.router_temperature > 0:
            raise UserError(f"--router-temperature {self.router_temperature}: must be greater than 0")

    @classmethod
    def from_settings(cls, settings: MergeSettings) -> ArrowSettings:
        """The Arrow part of a ``MergeSettings`` (``rng_seed`` None means the run's seed)."""
        return cls(top_k=settings.top_k, router_temperature=settings.router_temperature,
                   rng_seed=settings.seed if settings.rng_seed is None else settings.rng_seed,
                   use_gks=settings.method == "arrow_gks", arrow_modules=settings.arrow_modules)

    def peft_config(self, n_experts: int) -> dict:
        """Keyword arguments of ``peft.ArrowConfig``; ``top_k`` is capped at the number of experts."""
        return {"top_k": min(self.top_k, n_experts), "router_temperature": self.router_temperature,
                "use_gks": self.use_gks, "rng_seed": self.rng_seed}


def _adapter_dir_name(index: int) -> str:
    return f"{index:02d}"


def _with_alpha_for_rank(adapter: LoraAdapter, rank: int) -> LoraAdapter:
    """Metadata whose ``lora_alpha`` gives the adapter's most common scale at ``rank`` (fewer alpha patterns)."""
    from collections import Counter

    rslora = bool(adapter.metadata.get("use_rslora", False))
    scale = Counter(m.scale for m in adapter.modules.values()).most_common(1)[0][0]
    alpha = scale * (rank**0.5 if rslora else rank)
    return replace(adapter, metadata={"lora_alpha": alpha, "use_rslora": rslora})


def write_arrow_dir(pool: ArrowPool, out_dir: str | Path, base_model: str, method: str, settings: ArrowSettings,
                    sources: list[dict], record: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``out_dir``: ``experts/NN`` and ``general/NN`` PEFT adapters, ``arrow_config.json``, a README.

    Each adapter keeps its own factors and scales (``rank_pattern``-free, ``alpha_pattern`` where a
    module's scale differs), so PEFT's GenKnowSub averages the same factors it would on the originals.
    Written atomically (``outputs.atomic_dir``): a non-empty ``out_dir`` needs ``overwrite``, and a killed run
    leaves nothing that loads.
    """
    from lora_recycle.adapters.export import write_record
    from lora_recycle.adapters.peft_io import write_peft_adapter
    from lora_recycle.outputs import atomic_dir

    with atomic_dir(out_dir, overwrite) as partial:
        experts = []
        for i, adapter in enumerate(pool.experts):
            rel = f"experts/{_adapter_dir_name(i)}"
            write_peft_adapter(_with_alpha_for_rank(adapter, pool.rank), partial / rel, base_model, servable=False)
            experts.append(rel)
        general = []
        for i, adapter in enumerate(pool.general):
            rel = f"general/{_adapter_dir_name(i)}"
            write_peft_adapter(_with_alpha_for_rank(adapter, pool.rank), partial / rel, base_model, servable=False)
            general.append(rel)
        spec = {"format_version": FORMAT_VERSION, "lora_recycle_version": __version__, "method": method,
                "base_model": base_model, "arrow_config": settings.peft_config(len(experts)),
                "requested_top_k": settings.top_k, "module_rule": settings.arrow_modules,
                "task_adapters": experts, "general_adapters": general,
                "expert_ids": [a.adapter_id for a in pool.experts], "general_ids": [a.adapter_id for a in pool.general],
                "pool": pool.summary()}
        (partial / ARROW_CONFIG_NAME).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        write_record(partial, method, {"base_model": base_model, "sources": sources, "routing": spec,
                                       **(record or {})})
        (partial / "README.md").write_text(readme_text(spec, sources), encoding="utf-8")
    return Path(out_dir)


def readme_text(spec: dict, sources: list[dict]) -> str:
    """The output's README: what it is, how to load it with PEFT, what it costs at inference."""
    cfg = spec["arrow_config"]
    pool = spec["pool"]
    general = "[str(root / p) for p in spec[\"general_adapters\"]]" if spec["general_adapters"] else "None"
    lines = [
        f"# Arrow-routed LoRA library ({spec['method']})", "",
        f"Made by lora-recycle {spec['lora_recycle_version']} for `{spec['base_model']}`: "
        f"{len(spec['task_adapters'])} task LoRAs"
        + (f" and {len(spec['general_adapters'])} general LoRAs (GenKnowSub)" if spec["general_adapters"] else "")
        + f", routed per token by PEFT's Arrow (top_k = {cfg['top_k']}, temperature {cfg['router_temperature']}, "
        f"rng_seed {cfg['rng_seed']}).", "",
        "This is **not one adapter**: routing picks different LoRAs for every token, so it cannot be merged "
        "into a single LoRA or into the base weights, and servers that take one LoRA per request (vLLM, "
        "SGLang, llama.cpp) cannot serve it. Every routed layer computes all experts' low-rank products "
        f"for every token ({len(spec['task_adapters'])} experts x rank {pool['rank']}), plus the routing.", "",
        f"Routed modules: {pool['routed_modules']} ({', '.join(pool['module_types'])}); module rule "
        f"`{spec['module_rule']}`; ranks zero-padded to {pool['rank']} (exact)."
        + (f" Dropped adapters: {', '.join(pool['dropped'])}." if pool["dropped"] else ""), "",
        "## Load it with PEFT", "", "```python", "import json, pathlib",
        "from transformers import AutoModelForCausalLM", "from peft import ArrowConfig",
        "from peft.tuners.lora.arrow import create_arrow_model", "",
        'root = pathlib.Path("path/to/this/folder")',
        f'spec = json.loads((root / "{ARROW_CONFIG_NAME}").read_text())',
        'base = AutoModelForCausalLM.from_pretrained(spec["base_model"])',
        "model = create_arrow_model(base, [str(root / p) for p in spec[\"task_adapters\"]],",
        "                           ArrowConfig(**spec[\"arrow_config\"]),",
        f"                           general_adapter_paths={general})",
        "```", "",
        "Or score it with `lora-recycle evaluate --model BASE --task TASK --adapter path/to/this/folder`.", "",
        "| expert | adapter | license |", "| --- | --- | --- |",
    ]
    licenses = {s.get("id"): s.get("license") for s in sources}
    rows = [(rel, i, "") for rel, i in zip(spec["task_adapters"], spec["expert_ids"], strict=True)]
    rows += [(rel, i, " (general)") for rel, i in zip(spec["general_adapters"], spec["general_ids"], strict=True)]
    for rel, adapter_id, role in rows:
        license_name = licenses.get(adapter_id) or "unknown"
        lines.append(f"| {rel} | {table_cell(adapter_id)}{role} | {table_cell(license_name)} |")
    return "\n".join(lines) + "\n"


def is_arrow_dir(path: str | Path) -> bool:
    """True for a directory written by ``write_arrow_dir``."""
    return (Path(path) / ARROW_CONFIG_NAME).is_file()


def read_arrow_spec(path: str | Path) -> dict:
    """The parsed ``arrow_config.json`` of an Arrow directory, checked for the fields loading needs."""
    from lora_recycle.outputs import incomplete_reason

    if (incomplete := incomplete_reason(path)) is not None:
        raise UserError(f"{path}: {incomplete}")
    config_file = Path(path) / ARROW_CONFIG_NAME
    spec = read_json(config_file)
    if not isinstance(spec, dict):
        raise UserError(f"{config_file}: expected a JSON object")
    for key in ("arrow_config", "task_adapters", "general_adapters"):
        if key not in spec:
            raise UserError(f"{config_file}: missing field {key!r}")
    if not spec["task_adapters"]:
        raise UserError(f"{config_file}: field 'task_adapters' is empty")
    for rel in [*spec["task_adapters"], *spec["general_adapters"]]:
        if not (Path(path) / rel / "adapter_config.json").is_file():
            raise UserError(f"{config_file}: adapter {rel} not found in {path}")
    return spec


def build_arrow_model(model, arrow_dir: str | Path):
    """Wrap ``model`` in place with PEFT's Arrow router over the adapters of ``arrow_dir``; returns the PeftModel."""
    from peft import ArrowConfig
    from peft.tuners.lora.arrow import create_arrow_model

    root = Path(arrow_dir)
    spec = read_arrow_spec(root)
    general = [str(root / p) for p in spec["general_adapters"]] or None
    return create_arrow_model(model, [str(root / p) for p in spec["task_adapters"]],
                              ArrowConfig(**spec["arrow_config"]), general_adapter_paths=general)


@contextmanager
def routed(model, arrow_dir: str | Path) -> Iterator:
    """The base ``model`` with Arrow routing attached for the block; yields the transformers model to score.

    The LoRA layers are unloaded afterwards, leaving the same base modules and tensors as before.
    """
    peft_model = build_arrow_model(model, arrow_dir)
    try:
        yield peft_model.base_model.model
    finally:
        peft_model.base_model.unload()
        if hasattr(model, "peft_config"):
            del model.peft_config


def routed_precision(precision: str, is_routed: bool) -> str:
    """The precision a merge-or-route cell runs in: fp32 when routed (PEFT's Arrow router fails under
    autocast), else ``precision``."""
    return "fp32" if is_routed else precision


@contextmanager
def scoring_model(model, adapter: LoraAdapter | str | Path | None) -> Iterator:
    """``model`` ready to score: routed for an Arrow directory, else the LoRA (object or directory) folded in."""
    if isinstance(adapter, str | Path) and is_arrow_dir(adapter):
        with routed(model, adapter) as scored:
            yield scored
        return
    from lora_recycle.adapters import read_peft_adapter
    from lora_recycle.models.fold import folded

    lora = read_peft_adapter(adapter) if isinstance(adapter, str | Path) else adapter
    with folded(model, lora):
        yield model


def settings_record(settings: ArrowSettings) -> dict:
    """The settings as a JSON-ready dict."""
    return asdict(settings)

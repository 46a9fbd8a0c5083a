"""The adapter pool: find adapters (folders, HF cache, Hub), validate them, keep a SQLite catalog.

Typical use::

    base = load_base_spec("models/Llama-3.1-8B-Instruct", base_name="meta-llama/Llama-3.1-8B-Instruct")
    with Catalog("pool.db") as catalog:
        summary = scan_pool(["adapters/"], base, catalog, ValidationPolicy())
        print(pool_stats(catalog))
    adapters = load_pool_adapters("pool.db", ["org/adapter-a", "org/adapter-b"])
"""

from typing import TYPE_CHECKING

from lora_recycle.lazy import lazy_namespace

if TYPE_CHECKING:
    from lora_recycle.pool.base_spec import BaseModelSpec, load_base_spec, normalise_model_name
    from lora_recycle.pool.catalog import FORMAT_VERSION, Catalog
    from lora_recycle.pool.header import HeaderError, read_safetensors_header
    from lora_recycle.pool.hub import HubAdapter, HubClient, fetch_hub_adapters
    from lora_recycle.pool.loading import load_pool_adapters, read_checked_adapter
    from lora_recycle.pool.records import REASONS, AdapterRecord, ModuleInfo, ValidationResult
    from lora_recycle.pool.scan import ScanSummary, scan_pool
    from lora_recycle.pool.sources import Candidate, iter_source
    from lora_recycle.pool.stats import pool_stats
    from lora_recycle.pool.validate import ValidationPolicy, validate_adapter

# public name -> module that defines it (imported on first use: see lora_recycle.lazy)
_EXPORTS = {
    "BaseModelSpec": "lora_recycle.pool.base_spec",
    "load_base_spec": "lora_recycle.pool.base_spec",
    "normalise_model_name": "lora_recycle.pool.base_spec",
    "FORMAT_VERSION": "lora_recycle.pool.catalog",
    "Catalog": "lora_recycle.pool.catalog",
    "HeaderError": "lora_recycle.pool.header",
    "read_safetensors_header": "lora_recycle.pool.header",
    "HubAdapter": "lora_recycle.pool.hub",
    "HubClient": "lora_recycle.pool.hub",
    "fetch_hub_adapters": "lora_recycle.pool.hub",
    "load_pool_adapters": "lora_recycle.pool.loading",
    "read_checked_adapter": "lora_recycle.pool.loading",
    "REASONS": "lora_recycle.pool.records",
    "AdapterRecord": "lora_recycle.pool.records",
    "ModuleInfo": "lora_recycle.pool.records",
    "ValidationResult": "lora_recycle.pool.records",
    "ScanSummary": "lora_recycle.pool.scan",
    "scan_pool": "lora_recycle.pool.scan",
    "Candidate": "lora_recycle.pool.sources",
    "iter_source": "lora_recycle.pool.sources",
    "pool_stats": "lora_recycle.pool.stats",
    "ValidationPolicy": "lora_recycle.pool.validate",
    "validate_adapter": "lora_recycle.pool.validate",
}

__all__ = [
    "FORMAT_VERSION",
    "REASONS",
    "AdapterRecord",
    "BaseModelSpec",
    "Candidate",
    "Catalog",
    "HeaderError",
    "HubAdapter",
    "HubClient",
    "ModuleInfo",
    "ScanSummary",
    "ValidationPolicy",
    "ValidationResult",
    "fetch_hub_adapters",
    "iter_source",
    "load_base_spec",
    "load_pool_adapters",
    "normalise_model_name",
    "pool_stats",
    "read_checked_adapter",
    "read_safetensors_header",
    "scan_pool",
    "validate_adapter",
]

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())

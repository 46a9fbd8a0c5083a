"""The adapter pool: find adapters (folders, HF cache, Hub), validate them, keep a SQLite catalog.

Typical use::

    base = load_base_spec("models/Llama-3.1-8B-Instruct", base_name="meta-llama/Llama-3.1-8B-Instruct")
    with Catalog("pool.db") as catalog:
        summary = scan_pool(["adapters/"], base, catalog, ValidationPolicy())
        print(pool_stats(catalog))
    adapters = load_pool_adapters("pool.db", ["org/adapter-a", "org/adapter-b"])
"""

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

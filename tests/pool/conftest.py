"""Session fixtures for the pool tests: a tiny saved Llama and a corpus of good and broken adapters."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from pool_corpus import BASE_NAME, AdapterFactory, build_corpus, build_tiny_base


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """The base model directory; its name is what the adapters' configs call it."""
    return build_tiny_base(tmp_path_factory.mktemp("models") / BASE_NAME)


@pytest.fixture(scope="session")
def factory(base_dir) -> AdapterFactory:
    return AdapterFactory(base_dir)


@pytest.fixture(scope="session")
def marker(tmp_path_factory) -> Path:
    """Created only if the hostile pickle ever runs."""
    return tmp_path_factory.mktemp("marker") / "PICKLE_RAN"


@pytest.fixture(scope="session")
def corpus(factory, marker, tmp_path_factory) -> Path:
    """The folder tree of adapters whose expected outcomes are ``pool_corpus.EXPECTED`` (read-only)."""
    return build_corpus(factory, tmp_path_factory.mktemp("pool"), marker)


@pytest.fixture(scope="session")
def base_spec(base_dir):
    from lora_recycle.pool import load_base_spec

    return load_base_spec(base_dir)


@pytest.fixture(scope="session")
def scanned_db(corpus, base_spec, tmp_path_factory) -> Path:
    """The corpus scanned once with the default policy (tests must not modify it)."""
    from lora_recycle.pool import Catalog, scan_pool

    db = tmp_path_factory.mktemp("db") / "pool.db"
    with Catalog(db) as catalog:
        scan_pool([corpus], base_spec, catalog)
    return db

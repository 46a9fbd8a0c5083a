"""Fetching from the Hub, offline: a fake client serves repos from local folders (a network double)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from pool_corpus import BASE_NAME, lay_out_hf_cache

from lora_recycle.errors import UserError
from lora_recycle.pool import Catalog, fetch_hub_adapters, scan_pool


class FakeHub:
    """Serves ``repo_id -> folder`` like the Hub: listing by filter, model info, downloads to a cache.

    ``unreachable`` repos are listed but fail on access (gated, deleted).
    """

    def __init__(self, base_id: str, repos: dict[str, Path], card_data: dict[str, dict], unreachable=()) -> None:
        self.base_id, self.repos, self.card_data = base_id, repos, card_data
        self.unreachable = tuple(unreachable)
        self.downloads: list[tuple[str, str]] = []

    def list_models(self, *, filter: str, limit: int | None = None):
        assert filter == f"base_model:adapter:{self.base_id}"
        ids = sorted([*self.repos, *self.unreachable])
        return [SimpleNamespace(id=i) for i in ids[:limit]]

    def model_info(self, repo_id: str):
        if repo_id not in self.repos:
            raise OSError("401 Client Error: gated repo")
        files = [SimpleNamespace(rfilename=p.name) for p in sorted(self.repos[repo_id].iterdir())]
        return SimpleNamespace(id=repo_id, sha=f"{abs(hash(repo_id)):040d}"[:40], siblings=files,
                               card_data=self.card_data.get(repo_id))  # fmt: skip

    def hf_hub_download(self, repo_id: str, filename: str, *, revision: str | None, cache_dir: str) -> str:
        self.downloads.append((repo_id, filename))
        data = {filename: (self.repos[repo_id] / filename).read_bytes()}
        snapshot = lay_out_hf_cache(Path(cache_dir), repo_id, data, sha=revision, ref=False)
        return str(snapshot / filename)


@pytest.fixture()
def hub_repos(corpus, tmp_path) -> dict[str, Path]:
    remote = tmp_path / "remote"
    repos = {
        "alice/good": corpus / "alice/all-seven",
        "bob/pickle-only": corpus / "broken/pickle-plain",
        "carol/card-only-license": corpus / "broken/no-license",
    }
    out = {}
    for repo_id, source in repos.items():
        target = remote / repo_id
        shutil.copytree(source, target)
        (target / "training_args.bin").write_bytes(b"not to be downloaded")
        (target / "optimizer.pt").write_bytes(b"not to be downloaded")
        out[repo_id] = target
    return out


def test_fetch_downloads_three_files_and_scans(hub_repos, base_spec, tmp_path):
    cards = {"carol/card-only-license": {"license": "mit"}}
    hub = FakeHub(BASE_NAME, hub_repos, cards, unreachable=["dave/gone"])
    fetched = fetch_hub_adapters(BASE_NAME, tmp_path / "cache", client=hub)
    errors = {a.repo_id: a.error for a in fetched if a.error}
    assert list(errors) == ["dave/gone"]
    assert {name for _, name in hub.downloads} <= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
    }
    assert ("bob/pickle-only", "adapter_config.json") in hub.downloads

    hints = {a.repo_id: a.hint() for a in fetched if not a.error}
    with Catalog(tmp_path / "pool.db") as catalog:
        scan_pool([tmp_path / "cache"], base_spec, catalog, hub_hints=hints)
        rows = {row["id"]: row for row in catalog.rows()}
    assert rows["alice/good"]["status"] == "accepted" and rows["alice/good"]["source_kind"] == "hub"
    assert rows["bob/pickle-only"]["reasons"] == ["not_safetensors"]
    assert rows["carol/card-only-license"]["status"] == "accepted"  # license from the Hub's card data
    assert rows["carol/card-only-license"]["license"] == "mit"
    assert rows["alice/good"]["contributor"] == "alice"


def test_fetch_respects_limit(hub_repos, tmp_path):
    hub = FakeHub(BASE_NAME, hub_repos, {})
    fetched = fetch_hub_adapters(BASE_NAME, tmp_path / "cache", client=hub, limit=1)
    assert [a.repo_id for a in fetched] == ["alice/good"]


def test_listing_failure_is_a_user_error(tmp_path):
    class Offline:
        def list_models(self, **kwargs):
            raise ConnectionError("offline")

    with pytest.raises(UserError, match="could not list adapters of org/base"):
        fetch_hub_adapters("org/base", tmp_path, client=Offline())

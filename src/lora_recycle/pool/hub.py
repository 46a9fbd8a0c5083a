"""Fetch a base model's adapters from the Hugging Face Hub into a local cache, three files each.

The Hub client is injectable (anything with ``list_models``, ``model_info`` and ``hf_hub_download`` like
``huggingface_hub.HfApi``), so the fetch logic is tested offline with a fake that serves a local folder.
The token comes from ``HF_TOKEN`` through huggingface_hub itself and is never printed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from lora_recycle.adapters.formats import CONFIG_NAME, WEIGHTS_NAME
from lora_recycle.errors import UserError
from lora_recycle.pool.sources import CARD_NAME

# Only these are ever downloaded: never pickles, optimizer states or training scripts.
WANTED_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)


class HubClient(Protocol):
    """The slice of ``huggingface_hub.HfApi`` that fetching uses."""

    def list_models(self, *, filter: str, limit: int | None = None) -> Iterable[Any]: ...

    def model_info(self, repo_id: str) -> Any: ...

    def hf_hub_download(self, repo_id: str, filename: str, *, revision: str | None, cache_dir: str) -> str: ...


@dataclass(frozen=True)
class HubAdapter:
    """One listed Hub adapter: its commit, card data, which files it has and which we downloaded."""

    repo_id: str
    sha: str | None
    license: str | None
    base_model: str | list | None
    remote_files: tuple[str, ...]
    downloaded: tuple[str, ...]
    error: str | None = None

    def hint(self) -> dict:
        """What validation and the cache scan need to know that the downloaded files do not say."""
        return {"sha": self.sha, "license": self.license, "base_model": self.base_model,
                "remote_files": list(self.remote_files)}  # fmt: skip


def default_client() -> HubClient:
    """``huggingface_hub.HfApi()``; it reads ``HF_TOKEN`` from the environment by itself."""
    from huggingface_hub import HfApi

    return HfApi()


def _card_field(card: Any, name: str) -> Any:
    if card is None:
        return None
    if isinstance(card, dict):
        return card.get(name)
    return getattr(card, name, None)


def list_adapter_ids(client: HubClient, base_model_id: str, limit: int | None = None) -> list[str]:
    """Repo ids of the Hub's adapters of ``base_model_id`` (the ``base_model:adapter:<id>`` filter)."""
    try:
        return [m.id for m in client.list_models(filter=f"base_model:adapter:{base_model_id}", limit=limit)]
    except Exception as exc:  # noqa: BLE001 - network / HTTP failures all mean "cannot list"
        raise UserError(f"could not list adapters of {base_model_id} on the Hub ({type(exc).__name__})") from None


def fetch_adapter(client: HubClient, repo_id: str, cache_dir: Path) -> HubAdapter:
    """Download an adapter's config, safetensors weights and card (whichever exist) at one commit."""
    try:
        info = client.model_info(repo_id)
        files = tuple(sorted(s.rfilename for s in (info.siblings or [])))
        card = getattr(info, "card_data", None)
        downloaded = []
        for name in WANTED_FILES:
            if name in files:
                client.hf_hub_download(repo_id, name, revision=info.sha, cache_dir=str(cache_dir))
                downloaded.append(name)
    except Exception as exc:  # noqa: BLE001 - one unreachable repo must not stop the fetch
        return HubAdapter(repo_id, None, None, None, (), (), error=f"{type(exc).__name__}: {exc}")
    return HubAdapter(repo_id, info.sha, _card_field(card, "license"), _card_field(card, "base_model"),
                      files, tuple(downloaded))  # fmt: skip


def fetch_hub_adapters(
    base_model_id: str,
    cache_dir: str | Path,
    client: HubClient | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> list[HubAdapter]:
    """List the Hub's adapters of ``base_model_id`` and download three files of each into ``cache_dir``."""
    client = client or default_client()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    repo_ids = list_adapter_ids(client, base_model_id, limit)
    bar = tqdm(repo_ids, desc="fetching adapters", unit="adapter", file=sys.stderr, disable=not progress)
    return [fetch_adapter(client, repo_id, cache_dir) for repo_id in bar]

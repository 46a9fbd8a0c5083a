"""Find candidate adapter directories in a folder tree or a Hugging Face cache, fully offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lora_recycle.adapters.mlx_io import MLX_WEIGHTS_NAME
from lora_recycle.adapters.peft_io import CONFIG_NAME, PICKLE_WEIGHTS_NAME, WEIGHTS_NAME
from lora_recycle.errors import UserError

SourceKind = Literal["directory", "hf_cache", "hub"]
PICKLE_NAMES = (PICKLE_WEIGHTS_NAME, "adapter_model.pt")
WEIGHT_NAMES = (WEIGHTS_NAME, MLX_WEIGHTS_NAME, *PICKLE_NAMES)
CARD_NAME = "README.md"
# Any of these files makes a directory an adapter candidate (a broken one is still recorded).
MARKER_NAMES = (CONFIG_NAME, *WEIGHT_NAMES)


@dataclass(frozen=True)
class Candidate:
    """A directory that looks like an adapter, with its catalog id and where it was found.

    ``contributor`` is set when the source itself says who uploaded it (a Hub org or user).
    """

    adapter_id: str
    path: Path
    source_kind: SourceKind
    source: str
    contributor: str | None = None
    revision: str | None = None


def is_adapter_dir(directory: Path) -> bool:
    """True if ``directory`` holds an adapter config or adapter weights."""
    return any((directory / name).is_file() for name in MARKER_NAMES)


def _walk_adapter_dirs(root: Path) -> Iterator[Path]:
    """Adapter directories under ``root`` (any depth, sorted, hidden folders skipped).

    Symlinked folders are followed unless they point back up their own path (a loop); nothing is
    remembered per folder, so memory does not grow with the tree.
    """
    stack = [root]
    while stack:
        directory = stack.pop()
        if is_adapter_dir(directory):
            yield directory
        try:
            entries = [e for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name, reverse=True):
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if (os.path.realpath(directory) + os.sep).startswith(target + os.sep):
                    continue
            stack.append(directory / entry.name)


def iter_directory_tree(root: Path) -> Iterator[Candidate]:
    """Adapters in a folder tree; ids are folder paths relative to ``root`` (its name if it is one)."""
    for directory in _walk_adapter_dirs(root):
        relative = directory.relative_to(root).as_posix()
        adapter_id = root.resolve().name if relative == "." else relative
        yield Candidate(adapter_id, directory, "directory", str(root))


def _repo_dirs(root: Path) -> list[Path]:
    if root.name.startswith("models--"):
        return [root]
    hub = root / "hub" if (root / "hub").is_dir() and not any(root.glob("models--*")) else root
    return sorted(p for p in hub.glob("models--*") if p.is_dir())


def is_hf_cache(root: Path) -> bool:
    """True if ``root`` is (or contains) a Hugging Face hub cache: ``models--org--name`` folders."""
    return bool(_repo_dirs(root))


def repo_id_of(repo_dir: Path) -> str:
    """``models--org--name`` -> ``org/name``."""
    return "/".join(repo_dir.name.split("--")[1:])


def snapshot_dir(repo_dir: Path, prefer: str | None = None) -> Path | None:
    """The snapshot to read: ``prefer`` if present, else the one ``refs/main`` names, else the newest."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    for sha in (prefer, ref.read_text(encoding="utf-8").strip() if ref.is_file() else None):
        if sha and (snapshots / sha).is_dir():
            return snapshots / sha
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name)) if candidates else None


def iter_hf_cache(root: Path, revisions: dict[str, str] | None = None) -> Iterator[Candidate]:
    """Adapters in a Hugging Face cache; ids are Hub repo ids (plus a subfolder when nested).

    ``revisions`` maps repo id -> commit sha to read instead of ``refs/main`` (what ``fetch`` just got).
    """
    revisions = revisions or {}
    for repo_dir in _repo_dirs(root):
        repo_id = repo_id_of(repo_dir)
        snapshot = snapshot_dir(repo_dir, revisions.get(repo_id))
        if snapshot is None:
            continue
        owner = repo_id.split("/", 1)[0] if "/" in repo_id else None
        for directory in _walk_adapter_dirs(snapshot):
            relative = directory.relative_to(snapshot).as_posix()
            adapter_id = repo_id if relative == "." else f"{repo_id}/{relative}"
            yield Candidate(adapter_id, directory, "hf_cache", str(root), owner, snapshot.name)


def iter_source(source: str | Path, revisions: dict[str, str] | None = None) -> Iterator[Candidate]:
    """Candidates of one source: a Hugging Face cache if it looks like one, else a folder tree."""
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"pool source {root}: not a directory")
    if is_hf_cache(root):
        yield from iter_hf_cache(root, revisions)
    else:
        yield from iter_directory_tree(root)

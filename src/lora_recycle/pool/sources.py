"""Find candidate adapter directories in a folder tree or a Hugging Face cache, fully offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lora_recycle.adapters.formats import CONFIG_NAME, MLX_WEIGHTS_NAME, PICKLE_WEIGHTS_NAME, WEIGHTS_NAME
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
    root: Path | None = None  # files must resolve inside this directory (a Hub cache source), when set
    refused: str | None = None  # why the source itself refuses this candidate (``outside_source``)


MAX_TREE_DEPTH = 32
# Folders one source may hold (links followed): a Hugging Face cache of 10,000 adapters has about 40,000.
MAX_TREE_FOLDERS = 100_000


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # permission denied, too many symlink levels, ...
        return False


def is_adapter_dir(directory: Path) -> bool:
    """True if ``directory`` holds an adapter config or adapter weights."""
    return any(_is_file(directory / name) for name in MARKER_NAMES)


def _subdirectories(directory: Path) -> list[tuple[str, tuple[int, int]]]:
    """``(name, (device, inode))`` of the visible sub-folders, symlinks followed; unreadable entries skipped.

    One broken entry (a symlink loop, a dangling link, no permission) never hides its siblings.
    """
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_dir():
                continue
            stat = os.stat(entry.path)
        except OSError:
            continue
        found.append((entry.name, (stat.st_dev, stat.st_ino)))
    return sorted(found)


@dataclass
class FolderWalk:
    """The folders one source's walk has reached, by ``(device, inode)``, and its cap (``--max-folders``)."""

    source: Path
    max_folders: int = MAX_TREE_FOLDERS
    seen: set[tuple[int, int]] = field(default_factory=set)

    def first_visit(self, identity: tuple[int, int]) -> bool:
        """True the first time a folder is reached; UserError once more than ``max_folders`` were."""
        if identity in self.seen:
            return False
        self.seen.add(identity)
        if len(self.seen) > self.max_folders:
            raise UserError(
                f"pool source {self.source}: more than {self.max_folders} folders (symlinks followed); scan a "
                "narrower folder, or raise --max-folders"
            )
        return True


def _walk_adapter_dirs(root: Path, walk: FolderWalk) -> Iterator[Path]:
    """Adapter directories under ``root`` (sorted, hidden folders skipped, at most MAX_TREE_DEPTH deep).

    Symlinked folders are followed, but every real folder is walked once, under the first path that reaches
    it (depth-first, sorted): a loop, a second link to a folder, or a diamond of links that would reach one
    folder by 2^n paths adds nothing. ``walk`` counts the folders against its cap.
    """
    try:
        stat = os.stat(root)
    except OSError:
        return
    if not walk.first_visit((stat.st_dev, stat.st_ino)):
        return
    stack = [(root, 0)]
    while stack:
        directory, depth = stack.pop()
        if is_adapter_dir(directory):
            yield directory
        if depth >= MAX_TREE_DEPTH:
            continue
        fresh = [name for name, identity in _subdirectories(directory) if walk.first_visit(identity)]
        stack.extend((directory / name, depth + 1) for name in reversed(fresh))


def iter_directory_tree(root: Path, max_folders: int = MAX_TREE_FOLDERS) -> Iterator[Candidate]:
    """Adapters in a folder tree; ids are folder paths relative to ``root`` (its name if it is one)."""
    for directory in _walk_adapter_dirs(root, FolderWalk(root, max_folders)):
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


class OutsideSource(Exception):
    """A cache ref or a Hub hint names a path outside the repo's own snapshots."""


def _read_ref(ref: Path) -> str | None:
    if not _is_file(ref):
        return None
    try:
        with open(ref, "rb") as handle:
            return handle.read(256).decode("utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _named_snapshot(snapshots: Path, sha: str, what: str) -> Path | None:
    """``snapshots/sha`` if it is a snapshot of this repo; OutsideSource if ``sha`` escapes ``snapshots``."""
    inside = os.path.realpath(snapshots) + os.sep
    if sha in (".", "..") or "/" in sha or "\\" in sha or "\0" in sha:
        raise OutsideSource(f"{what} names {sha[:80]!r}, not a snapshot of this repo")
    path = snapshots / sha
    if not path.is_dir():
        return None
    if not os.path.realpath(path).startswith(inside):
        raise OutsideSource(f"{what} names {sha[:80]!r}, which resolves outside {snapshots}")
    return path


def snapshot_dir(repo_dir: Path, prefer: str | None = None) -> Path | None:
    """The snapshot to read: ``prefer`` if present, else the one ``refs/main`` names, else the newest.

    Raises OutsideSource when ``prefer`` or ``refs/main`` names anything but a folder of ``snapshots/``.
    """
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    for sha, what in ((prefer, "the fetched revision"), (_read_ref(repo_dir / "refs" / "main"), "refs/main")):
        if sha:
            found = _named_snapshot(snapshots, sha, what)
            if found is not None:
                return found
    inside = os.path.realpath(snapshots) + os.sep
    candidates = [p for p in snapshots.iterdir() if p.is_dir() and os.path.realpath(p).startswith(inside)]
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name)) if candidates else None


def iter_hf_cache(
    root: Path, revisions: dict[str, str] | None = None, max_folders: int = MAX_TREE_FOLDERS
) -> Iterator[Candidate]:
    """Adapters in a Hugging Face cache; ids are Hub repo ids (plus a subfolder when nested).

    ``revisions`` maps repo id -> commit sha to read instead of ``refs/main`` (what ``fetch`` just got).
    """
    revisions = revisions or {}
    walk = FolderWalk(root, max_folders)
    for repo_dir in _repo_dirs(root):
        repo_id = repo_id_of(repo_dir)
        owner = repo_id.split("/", 1)[0] if "/" in repo_id else None
        try:
            snapshot = snapshot_dir(repo_dir, revisions.get(repo_id))
        except OutsideSource as exc:
            yield Candidate(repo_id, repo_dir, "hf_cache", str(root), owner, refused=str(exc))
            continue
        if snapshot is None:
            continue
        for directory in _walk_adapter_dirs(snapshot, walk):
            relative = directory.relative_to(snapshot).as_posix()
            adapter_id = repo_id if relative == "." else f"{repo_id}/{relative}"
            yield Candidate(adapter_id, directory, "hf_cache", str(root), owner, snapshot.name, root=root)


def iter_source(
    source: str | Path, revisions: dict[str, str] | None = None, max_folders: int = MAX_TREE_FOLDERS
) -> Iterator[Candidate]:
    """Candidates of one source: a Hugging Face cache if it looks like one, else a folder tree.

    Paths are absolute and resolved, so the catalog stays valid from any working directory. A source of more
    than ``max_folders`` folders is a UserError.
    """
    if not Path(source).is_dir():
        raise UserError(f"pool source {source}: not a directory")
    root = Path(source).expanduser().resolve()
    if is_hf_cache(root):
        yield from iter_hf_cache(root, revisions, max_folders)
    else:
        yield from iter_directory_tree(root, max_folders)

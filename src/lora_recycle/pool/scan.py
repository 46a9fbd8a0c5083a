"""Scan pool sources into the catalog: incremental (unchanged files are not re-read) and idempotent."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tqdm import tqdm

from lora_recycle.adapters.formats import CONFIG_NAME
from lora_recycle.adapters.untrusted import MAX_CONFIG_BYTES
from lora_recycle.pool.base_spec import BaseModelSpec
from lora_recycle.pool.catalog import Catalog, catalog_write_error
from lora_recycle.pool.records import AdapterRecord
from lora_recycle.pool.sources import CARD_NAME, MARKER_NAMES, MAX_TREE_FOLDERS, Candidate, iter_source
from lora_recycle.pool.validate import ValidationPolicy, ValidationResult, validate_adapter

# Bump when validation rules change, so every adapter is re-validated once.
VALIDATOR_VERSION = 4  # 3: records the adapter norm ||s B A||_F (delta_norm); 4: ambiguous_key


@dataclass
class ScanSummary:
    """Counts of one scan: ``validated`` adapters were (re)read, ``unchanged`` ones were skipped."""

    seen: int = 0
    validated: int = 0
    unchanged: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    conflicts: list[str] = field(default_factory=list)  # candidates not catalogued: their id is another's

    def to_dict(self) -> dict:
        return {**asdict(self), "reasons": dict(sorted(self.reasons.items()))}


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def id_conflict(catalog: Catalog, candidate: Candidate, claimed: dict[str, Path]) -> str | None:
    """Why ``candidate`` may not take its id (another folder of this scan, or a catalogued folder that still
    exists, has it), or None. A catalogued folder that is gone (a pool moved elsewhere) yields its id."""
    other = claimed.get(candidate.adapter_id)
    if other is None:
        row = catalog.get(candidate.adapter_id)
        other = Path(row["path"]) if row is not None and os.path.isdir(row["path"]) else None
    if other is None or _same_folder(other, candidate.path):
        return None
    return (f"adapter id {candidate.adapter_id!r}: {candidate.path} is not catalogued, {other} has that id "
            "(scan both folders' parent as one source, or rename one)")


def policy_key(base: BaseModelSpec, policy: ValidationPolicy) -> str:
    """A short hash of everything a validation outcome depends on besides the adapter's own files."""
    data = {"validator": VALIDATOR_VERSION, "base": base.fingerprint(), "policy": asdict(policy)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_HASHED_NAMES = (CONFIG_NAME, CARD_NAME)  # small files whose content is hashed, not just stat-ed


def file_fingerprint(candidate: Candidate) -> str:
    """Path, revision and (name, size, mtime_ns) of the adapter's files, plus a content hash of the small ones.

    Changes when any file does, even one rewritten with the same size and mtime (config and card; the
    weights are re-hashed against the catalog's sha256 whenever they are loaded).
    """
    files = []
    for name in (*MARKER_NAMES, CARD_NAME):
        try:
            stat = os.stat(candidate.path / name)  # follows the HF cache's symlinks to the blobs
        except OSError:
            continue
        entry = [name, stat.st_size, stat.st_mtime_ns]
        if name in _HASHED_NAMES and stat.st_size <= MAX_CONFIG_BYTES:
            entry.append(_small_file_hash(candidate.path / name))
        files.append(entry)
    return json.dumps([str(candidate.path), candidate.revision, files])


def _small_file_hash(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read(MAX_CONFIG_BYTES + 1)).hexdigest()[:32]
    except OSError:
        return None


def contributor_of(candidate: Candidate, card: dict) -> str | None:
    """Hub org/user, else the card's ``contributor`` / ``author``, else the first folder of the id."""
    if candidate.contributor:
        return candidate.contributor
    for key in ("contributor", "author"):
        value = card.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    first, sep, _ = candidate.adapter_id.partition("/")
    return first if sep else None


def record_of(candidate: Candidate, result: ValidationResult, fingerprint: str, policy: str) -> AdapterRecord:
    """The catalog record of a validated candidate."""
    learned = {f.name: getattr(result, f.name) for f in fields(ValidationResult)}
    learned.update(reasons=dict(result.reasons), modules=list(result.modules),
                   weights_file=str(result.weights_file) if result.weights_file else None)
    return AdapterRecord(id=candidate.adapter_id, source_kind=candidate.source_kind, source=candidate.source,
                         path=str(candidate.path), revision=candidate.revision, fingerprint=fingerprint,
                         policy=policy, contributor=contributor_of(candidate, result.card), **learned)


def _validate_candidate(
    candidate: Candidate, base: BaseModelSpec, policy: ValidationPolicy, hints: dict
) -> ValidationResult:
    """Validation of one candidate; a candidate its source already refused is a rejection without reading."""
    if candidate.refused is not None:
        result = ValidationResult()
        result.reject("outside_source", candidate.refused)
        return result
    return validate_adapter(candidate.path, base, policy, hints, root=candidate.root)


def _put(catalog: Catalog, candidate: Candidate, result: ValidationResult, fingerprint: str, key: str) -> None:
    """Record the result; if the record cannot be stored as is, store a bare ``corrupt`` rejection instead."""
    try:
        catalog.put(record_of(candidate, result, fingerprint, key))
    except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError, ValueError, TypeError) as exc:
        bare = ValidationResult()
        bare.reject("corrupt", _clean(f"could not be catalogued ({type(exc).__name__}: {str(exc)[:200]})"))
        for code, detail in result.reasons.items():
            bare.reject(code, _clean(detail))
        names = {name: _clean(getattr(candidate, name)) for name in ("adapter_id", "source")}
        cleaned = Candidate(**{**asdict(candidate), **names, "path": Path(_clean(str(candidate.path)))})
        catalog.put(record_of(cleaned, bare, fingerprint, key))
        result.reasons = bare.reasons


def _clean(text: str) -> str:
    """Text SQLite can store: undecodable file-name bytes become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")


def scan_pool(
    sources: Iterable[str | Path],
    base: BaseModelSpec,
    catalog: Catalog,
    policy: ValidationPolicy | None = None,
    hub_hints: dict[str, dict] | None = None,
    progress: bool = False,
    max_folders: int = MAX_TREE_FOLDERS,
) -> ScanSummary:
    """Validate every adapter of ``sources`` into ``catalog``; adapters whose files are unchanged are skipped.

    ``hub_hints`` maps Hub repo id -> ``{"license", "base_model", "remote_files", "sha"}`` from a fetch.
    Every source is walked first (a source of more than ``max_folders`` folders is a UserError before anything
    is catalogued); adapters are then read one at a time, so memory does not grow with the pool.
    """
    policy = policy or ValidationPolicy()
    hub_hints = hub_hints or {}
    key = policy_key(base, policy)
    revisions = {repo: hint["sha"] for repo, hint in hub_hints.items() if hint.get("sha")}
    walked = [list(iter_source(source, revisions, max_folders)) for source in sources]  # before any write
    catalog.set_meta("base_model", base.name)
    catalog.set_meta("num_layers", str(base.num_layers))
    summary = ScanSummary()
    claimed: dict[str, Path] = {}  # id -> folder, in this scan: the same folder name in two sources must not clash
    bar = tqdm(desc="scanning adapters", unit="adapter", file=sys.stderr, disable=not progress)
    try:
        for candidates in walked:
            for candidate in candidates:
                summary.seen += 1
                bar.update(1)
                fingerprint = file_fingerprint(candidate)
                if catalog.is_current(candidate.adapter_id, fingerprint, key):
                    summary.unchanged += 1
                    claimed[candidate.adapter_id] = candidate.path
                    continue
                conflict = id_conflict(catalog, candidate, claimed)
                if conflict is not None:
                    summary.conflicts.append(conflict)
                    summary.reasons["id_conflict"] += 1
                    continue
                claimed[candidate.adapter_id] = candidate.path
                repo_id = candidate.adapter_id if candidate.source_kind == "hf_cache" else None
                hints = hub_hints.get(repo_id or "", {})
                if hints:
                    candidate = Candidate(**{**asdict(candidate), "source_kind": "hub"})
                result = _validate_candidate(candidate, base, policy, hints)
                _put(catalog, candidate, result, fingerprint, key)
                summary.validated += 1
                summary.accepted += result.accepted
                summary.rejected += not result.accepted
                summary.reasons.update(result.reasons.keys())
    except sqlite3.OperationalError as exc:
        error = catalog_write_error(catalog.path, exc)
        if error is None:
            raise
        raise error from None
    finally:
        bar.close()
    return summary

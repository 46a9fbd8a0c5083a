"""Load adapters for merging: accepted adapters of a pool catalog (``merge --db POOL.db --ids ...``), and
folders given directly (``--adapters``, ``--adapter``, ``--target-lora``, ``--general-adapters``), which
go through the scan's own validation first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lora_recycle.adapters.untrusted import AdapterProblem
from lora_recycle.errors import UserError
from lora_recycle.outputs import incomplete_reason
from lora_recycle.pool.base_spec import BaseModelSpec
from lora_recycle.pool.catalog import Catalog
from lora_recycle.pool.scan import file_fingerprint
from lora_recycle.pool.sources import Candidate
from lora_recycle.pool.validate import ValidationPolicy, validate_adapter

if TYPE_CHECKING:
    from lora_recycle.adapters.lora import LoraAdapter

# A folder given by name is the user's choice: its card's license is not asked for and its config may call
# the base model by another name; everything else (shapes against the base model, ranks, patterns, keys,
# finiteness, ||delta||_F / ||W||_F) is checked as `pool scan` checks it.
GIVEN_POLICY = ValidationPolicy(require_license=False)
_NOT_CHECKED_WHEN_GIVEN = ("no_license", "base_mismatch")


def load_pool_adapters(db_path: str | Path, ids: Sequence[str]) -> list[LoraAdapter]:
    """Read the accepted adapters ``ids`` (in that order) from the pool catalog ``db_path``.

    Refuses unknown or rejected ids, and adapters whose files changed since the scan (size, mtime, config
    and card content, weights sha256), with a UserError. Factors must be finite.
    """
    from lora_recycle.adapters.reader import read_adapter  # torch (imported here, not with this module)

    if not ids:
        raise UserError("no adapter ids given")
    with Catalog(db_path, create=False) as catalog:
        rows = {row["id"]: row for row in catalog.rows(ids=list(ids))}
    unknown = [adapter_id for adapter_id in ids if adapter_id not in rows]
    if unknown:
        raise UserError(f"--db {db_path}: unknown adapter id(s): {', '.join(unknown)}")
    adapters = []
    for adapter_id in ids:
        row = rows[adapter_id]
        if row["status"] != "accepted":
            raise UserError(f"adapter {adapter_id} was rejected ({', '.join(row['reasons'])}); it cannot be used")
        candidate = Candidate(adapter_id, Path(row["path"]), row["source_kind"], row["source"], None, row["revision"])
        if file_fingerprint(candidate) != row["fingerprint"]:
            raise UserError(f"adapter {adapter_id}: files in {row['path']} changed since the scan; re-run pool scan")
        allow_pickle = str(row["format"]).endswith("-pickle")  # the user opted in when scanning
        # the weights are parsed from the very bytes whose sha256 must equal the one recorded at scan time
        adapter = read_adapter(row["path"], allow_pickle=allow_pickle, adapter_id=adapter_id,
                               expected_sha256=row["sha256"])
        adapter.metadata.update(
            license=row["license"], contributor=row["contributor"], source=row["source"], sha256=row["sha256"]
        )
        adapters.append(adapter)
    return adapters


def read_checked_adapter(
    directory: str | Path, base: BaseModelSpec, adapter_id: str | None = None, policy: ValidationPolicy = GIVEN_POLICY,
    sha256: str | None = None,
) -> LoraAdapter:
    """Read an adapter folder given directly, through the pool's validation against ``base``.

    The weights are parsed from the very bytes that were validated (their sha256), so what is checked is
    what is merged. A rejection is an ``AdapterProblem`` with its reason code, naming the adapter and folder.
    ``sha256``: the folder passed ``check_adapter_folder`` already, with weights of that hash.
    """
    directory = Path(directory)
    adapter_id = adapter_id or directory.name
    if sha256 is None:
        sha256 = check_adapter_folder(directory, base, adapter_id, policy)
    from lora_recycle.adapters.reader import read_adapter  # torch: only for an adapter that passed

    return read_adapter(directory, allow_pickle=policy.allow_pickle, adapter_id=adapter_id, expected_sha256=sha256)


def check_adapter_folder(
    directory: str | Path, base: BaseModelSpec, adapter_id: str | None = None, policy: ValidationPolicy = GIVEN_POLICY
) -> str:
    """The pool's validation of one adapter folder given directly (no torch); returns its weights' sha256.

    A rejection is an ``AdapterProblem`` with its reason code, naming the adapter and folder.
    """
    directory = Path(directory)
    adapter_id = adapter_id or directory.name
    if not directory.is_dir():
        raise UserError(f"{directory}: adapter directory not found")
    if (incomplete := incomplete_reason(directory)) is not None:
        raise UserError(f"{directory}: {incomplete}")
    result = validate_adapter(directory, base, policy)
    reasons = {code: detail for code, detail in result.reasons.items() if code not in _NOT_CHECKED_WHEN_GIVEN}
    if reasons:
        code, detail = next(iter(reasons.items()))
        detail = detail.removeprefix(f"{directory}: ")
        more = f" (also {', '.join(list(reasons)[1:])})" if len(reasons) > 1 else ""
        raise AdapterProblem(code, f"adapter {adapter_id} ({directory}) is refused, {code}: {detail}{more}")
    return result.sha256

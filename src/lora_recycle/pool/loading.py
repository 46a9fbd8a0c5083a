"""Load accepted adapters of a pool catalog for merging (``merge --db POOL.db --ids ...``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.adapters.reader import read_adapter
from lora_recycle.errors import UserError
from lora_recycle.pool.catalog import Catalog
from lora_recycle.pool.scan import file_fingerprint
from lora_recycle.pool.sources import Candidate


def load_pool_adapters(db_path: str | Path, ids: Sequence[str]) -> list[LoraAdapter]:
    """Read the accepted adapters ``ids`` (in that order) from the pool catalog ``db_path``.

    Refuses unknown or rejected ids, and adapters whose files changed since the scan (size, mtime, config
    and card content, weights sha256), with a UserError. Factors must be finite.
    """
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

"""The pool catalog: one SQLite file (WAL) with every adapter seen, its modules, rejections and scores."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from lora_recycle.adapters.paths import coordinates
from lora_recycle.errors import UserError
from lora_recycle.pool.records import AdapterRecord

FORMAT_VERSION = 1
_SQLITE_IOERR_WRITE = 778  # sqlite3.SQLITE_IOERR_WRITE from Python 3.11; a write refused by a file-size limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS adapters (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
    source_kind TEXT NOT NULL, source TEXT NOT NULL, path TEXT NOT NULL, revision TEXT,
    format TEXT, license TEXT, contributor TEXT, base_model TEXT,
    rank INTEGER, alpha REAL, use_rslora INTEGER NOT NULL DEFAULT 0,
    target_modules TEXT NOT NULL DEFAULT '[]',
    weights_file TEXT, sha256 TEXT, size INTEGER, max_delta_ratio REAL, delta_norm REAL,
    fingerprint TEXT NOT NULL, policy TEXT NOT NULL, scanned_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS modules (
    adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
    path TEXT NOT NULL, layer INTEGER NOT NULL, sublayer TEXT NOT NULL, module_type TEXT NOT NULL,
    rank INTEGER NOT NULL, alpha REAL NOT NULL, scale REAL NOT NULL,
    PRIMARY KEY (adapter_id, path)
);
CREATE TABLE IF NOT EXISTS rejections (
    adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
    reason TEXT NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (adapter_id, reason)
);
CREATE TABLE IF NOT EXISTS scores (
    adapter_id TEXT NOT NULL, task_hash TEXT NOT NULL, kind TEXT NOT NULL,
    value REAL NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (adapter_id, task_hash, kind)
);
CREATE INDEX IF NOT EXISTS adapters_status ON adapters(status);
"""
_ADAPTER_COLUMNS = (
    "id", "status", "source_kind", "source", "path", "revision", "format", "license", "contributor",
    "base_model", "rank", "alpha", "use_rslora", "target_modules", "weights_file", "sha256", "size",
    "max_delta_ratio", "delta_norm", "fingerprint", "policy", "scanned_at",
)  # fmt: skip


def catalog_write_error(path: Path, exc: sqlite3.Error) -> UserError | None:
    """One line for a catalog write the disk refused (full: SQLITE_FULL; a file-size limit: an I/O write error),
    or None for any other error. Each adapter is written in one transaction, so the catalog stays consistent."""
    from lora_recycle.outputs import disk_full_error

    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code in (sqlite3.SQLITE_FULL, _SQLITE_IOERR_WRITE) or str(exc) in ("database or disk is full", "disk I/O error"):
        return disk_full_error(f"--db {path}", Path(path), str(exc), None,
                               "the adapters catalogued before it are kept; free some space and scan again")
    return None


def layer_targets(paths: list[str]) -> dict[int, list[str]]:
    """``layer -> sorted module types`` touched in that layer."""
    by_layer: dict[int, set[str]] = {}
    for path in paths:
        c = coordinates(path)
        by_layer.setdefault(c.layer, set()).add(c.module_type)
    return {layer: sorted(types) for layer, types in sorted(by_layer.items())}


class Catalog:
    """A pool catalog file; use as a context manager. ``create=False`` refuses a missing file."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError(f"--db {self.path}: pool catalog not found (run `lora-recycle pool scan` first)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.row_factory = sqlite3.Row
            self._refuse_foreign_file()  # before any PRAGMA or table touches someone else's database
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"--db {self.path}: not a pool catalog ({exc})") from None

    def _refuse_foreign_file(self) -> None:
        """An SQLite file with tables but no pool catalog in it (an experiment's results, an app's data) is refused.

        A catalog of another format version is left to the version check, which names it.
        """
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables or {"meta", "adapters"} <= tables:
            return
        version = self._stored_version(tables)
        if "runs" not in tables and version is not None and version != FORMAT_VERSION:
            return
        self.db.close()
        kind = "an experiment results database" if "runs" in tables else "an SQLite file that is not a pool catalog"
        raise UserError(f"--db {self.path}: {kind} (tables: {', '.join(sorted(tables)[:5])}); "
                        "give a new file or an existing pool catalog")

    def _stored_version(self, tables: set[str]) -> int | None:
        if "meta" not in tables:
            return None
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
            return int(row[0]) if row else None
        except (sqlite3.DatabaseError, ValueError, TypeError):
            return None

    def _init_schema(self) -> None:
        version = None
        has_meta = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        if has_meta:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
            version = int(row[0]) if row else None
        if version is not None and version != FORMAT_VERSION:
            raise UserError(f"--db {self.path}: catalog format_version {version}, this version reads {FORMAT_VERSION}")
        with self.db:
            self.db.executescript(_SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(adapters)")}
            if "delta_norm" not in columns:  # catalogs written before norms were recorded
                self.db.execute("ALTER TABLE adapters ADD COLUMN delta_norm REAL")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self.db.execute("SELECT key, value FROM meta")}

    def is_current(self, adapter_id: str, fingerprint: str, policy: str) -> bool:
        """True if the adapter was recorded from the same files (size, mtime) under the same policy."""
        row = self.db.execute("SELECT fingerprint, policy FROM adapters WHERE id = ?", (adapter_id,)).fetchone()
        return row is not None and row["fingerprint"] == fingerprint and row["policy"] == policy

    def put(self, record: AdapterRecord) -> None:
        """Insert or replace one adapter with its modules and rejections, atomically."""
        paths = [m.path for m in record.modules]
        values = {
            **{name: getattr(record, name, None) for name in _ADAPTER_COLUMNS},
            "status": record.status,
            "use_rslora": int(record.use_rslora),
            "target_modules": json.dumps(layer_targets(paths)),
            "scanned_at": time.time(),
        }
        with self.db:
            self.db.execute("DELETE FROM adapters WHERE id = ?", (record.id,))
            placeholders = ", ".join("?" for _ in _ADAPTER_COLUMNS)
            self.db.execute(
                f"INSERT INTO adapters ({', '.join(_ADAPTER_COLUMNS)}) VALUES ({placeholders})",
                [values[name] for name in _ADAPTER_COLUMNS],
            )
            self.db.executemany(
                "INSERT INTO modules VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(record.id, m.path, *_coords(m.path), m.rank, m.alpha, m.scale) for m in record.modules],
            )
            self.db.executemany(
                "INSERT INTO rejections VALUES (?, ?, ?)",
                [(record.id, code, detail) for code, detail in record.reasons.items()],
            )

    def get(self, adapter_id: str) -> dict | None:
        """One adapter as a plain dict (see ``rows``), or None if unknown."""
        rows = self.rows(ids=[adapter_id])
        return rows[0] if rows else None

    def rows(self, status: str | None = None, ids: list[str] | None = None) -> list[dict]:
        """Adapters as dicts sorted by id: catalog columns plus ``reasons``, ``details``, ``ranks``."""
        query, params = "SELECT * FROM adapters", []
        clauses = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if ids is not None:
            clauses.append(f"id IN ({', '.join('?' for _ in ids)})")
            params.extend(ids)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = [dict(row) for row in self.db.execute(query + " ORDER BY id", params)]
        for row in rows:
            row["use_rslora"] = bool(row["use_rslora"])
            layers = json.loads(row.pop("target_modules"))
            row["layer_targets"] = {int(k): v for k, v in layers.items()}
            row["target_modules"] = sorted({t for types in layers.values() for t in types})
            details = self.db.execute(
                "SELECT reason, detail FROM rejections WHERE adapter_id = ? ORDER BY reason", (row["id"],)
            )
            row["details"] = {r["reason"]: r["detail"] for r in details}
            row["reasons"] = sorted(row["details"])
            ranks = self.db.execute(
                "SELECT DISTINCT rank FROM modules WHERE adapter_id = ? ORDER BY rank", (row["id"],)
            )
            row["ranks"] = [r[0] for r in ranks]
        return rows

    def modules(self, adapter_id: str) -> list[dict]:
        """The adapter's modules in (layer, sublayer, type) order."""
        query = "SELECT * FROM modules WHERE adapter_id = ? ORDER BY layer, sublayer, module_type"
        return [dict(row) for row in self.db.execute(query, (adapter_id,))]

    def counts(self) -> dict[str, int]:
        """``accepted`` and ``rejected`` adapter counts."""
        found = dict(self.db.execute("SELECT status, COUNT(*) FROM adapters GROUP BY status").fetchall())
        return {"accepted": found.get("accepted", 0), "rejected": found.get("rejected", 0)}

    def put_scores(self, task_hash: str, kind: str, values: dict[str, float]) -> None:
        """Cache per-task scores (``kind`` e.g. ``evaluation`` or ``cosine``) for adapters."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
                [(adapter_id, task_hash, kind, float(value), now) for adapter_id, value in values.items()],
            )

    def get_scores(self, task_hash: str, kind: str, ids: list[str] | None = None) -> dict[str, float]:
        """Cached scores ``adapter_id -> value`` for a task and kind (only those present)."""
        rows = self.db.execute(
            "SELECT adapter_id, value FROM scores WHERE task_hash = ? AND kind = ?", (task_hash, kind)
        ).fetchall()
        scores = {row[0]: row[1] for row in rows}
        return scores if ids is None else {i: scores[i] for i in ids if i in scores}


def _coords(path: str) -> tuple[int, str, str]:
    c = coordinates(path)
    return c.layer, c.sublayer, c.module_type


def accepted_ids(db_path: str | Path) -> list[str]:
    """Ids of every accepted adapter in the catalog."""
    if not Path(db_path).is_file():
        raise UserError(f"{db_path}: pool catalog not found (create it with `lora-recycle pool scan`)")
    with Catalog(db_path, create=False) as catalog:
        return sorted(row["id"] for row in catalog.rows(status="accepted"))

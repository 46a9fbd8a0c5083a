"""The results file: one SQLite database (WAL), one row per finished run, written in one transaction.

A run is either in the ``runs`` table completely or not at all, and ``run_hash`` is UNIQUE, so a
runner killed at any moment loses at most the run in flight and a restart never duplicates rows.
Only the driver process writes; workers return plain dictionaries.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lora_recycle.errors import UserError

FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    run_hash TEXT NOT NULL UNIQUE,
    config_hash TEXT NOT NULL,
    experiment TEXT NOT NULL,
    kind TEXT NOT NULL,
    task TEXT NOT NULL,
    seed INTEGER NOT NULL,
    method TEXT NOT NULL,
    k INTEGER,
    with_target INTEGER NOT NULL,
    pool TEXT NOT NULL,
    random_init INTEGER NOT NULL,
    exclude_top INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    accuracy_norm REAL,
    n_test INTEGER NOT NULL,
    correct TEXT NOT NULL,
    spec TEXT NOT NULL,
    metrics TEXT NOT NULL,
    selected TEXT NOT NULL,
    scores TEXT NOT NULL,
    coefficients TEXT,
    timings TEXT NOT NULL,
    versions TEXT NOT NULL,
    worker TEXT,
    finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_cell ON runs (kind, method, task, seed);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY,
    run_hash TEXT NOT NULL,
    label TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
"""

RUN_COLUMNS = ("run_hash", "config_hash", "experiment", "kind", "task", "seed", "method", "k", "with_target", "pool",
               "random_init", "exclude_top", "accuracy", "accuracy_norm", "n_test", "correct", "spec", "metrics",
               "selected", "scores", "coefficients", "timings", "versions", "worker", "finished_at")
JSON_COLUMNS = ("spec", "metrics", "selected", "scores", "coefficients", "timings", "versions")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine a run's numbers."""
    import platform

    import peft
    import torch
    import transformers

    from lora_recycle import __version__

    return {"lora_recycle": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _refuse_foreign_file(conn: sqlite3.Connection, path: Path) -> None:
    """A non-empty SQLite file without the results tables (a pool catalog, say) is not ours to read or extend."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables or {"meta", "runs"} <= tables:
        return
    conn.close()
    kind = "a pool catalog" if "adapters" in tables else "an SQLite file of something else"
    raise UserError(f"{path}: {kind}, not a lora-recycle results database")


def _not_writable(path: Path) -> str | None:
    """Why the database at ``path`` cannot be written here (a read-only file or folder), or None."""
    if path.exists() and not os.access(path, os.W_OK):
        return f"the file is read-only: {os.strerror(errno.EACCES)}"
    if not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} is read-only: {os.strerror(errno.EACCES)}"
    return None


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes, also to a WAL database in a read-only folder (which cannot get its -shm
    file: it is then opened as immutable, which is safe as no process can write there either)."""
    uri = path.absolute().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if _not_writable(path) is None:
            raise
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=60, isolation_level=None)


class ResultsStore:
    """Open (or create) a results database; use as a context manager. ``read_only`` never writes to it (the
    report and status may read a results file in a folder they cannot write)."""

    def __init__(self, path: str | Path, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError(f"{self.path}: results database not found")
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"{self.path}: cannot create its folder ({exc.strerror}: {exc.filename})") from None
            if (why := _not_writable(self.path)) is not None:
                raise UserError(f"{self.path}: cannot write the results database ({why}); `report` and "
                                "`experiment status` can still read it")
        try:
            if read_only:
                self.conn = _connect_read_only(self.path)
            else:
                self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            _refuse_foreign_file(self.conn, self.path)
            if not read_only:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
            if create and not read_only:
                self.conn.executescript(SCHEMA)
            meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not a lora-recycle results database ({exc})") from None
        version = meta.get("format_version")
        if version is None and create:
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (_now(),))
        elif version is None or int(version) > FORMAT_VERSION:
            raise UserError(f"{self.path}: results format version {version} is not supported "
                            f"(this lora-recycle reads version {FORMAT_VERSION})")

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def finished_hashes(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT run_hash FROM runs")}

    def record(self, row: dict[str, Any]) -> bool:
        """Insert one finished run in one transaction; False if its hash was already recorded."""
        values = dict(row)
        values.setdefault("finished_at", _now())
        for key in JSON_COLUMNS:
            if key in values and values[key] is not None and not isinstance(values[key], str):
                values[key] = json.dumps(values[key], sort_keys=True, default=str)
        for key in ("with_target", "random_init"):
            values[key] = int(bool(values[key]))
        placeholders = ", ".join("?" for _ in RUN_COLUMNS)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = self.conn.execute(
                f"INSERT OR IGNORE INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({placeholders})",
                [values.get(c) for c in RUN_COLUMNS],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return cursor.rowcount == 1

    def record_failure(self, run_hash: str, label: str, error: str) -> None:
        self.conn.execute("INSERT INTO failures (run_hash, label, error, failed_at) VALUES (?, ?, ?, ?)",
                          (run_hash, label, error, _now()))

    def delete(self, hashes: Iterable[str]) -> int:
        """Remove the runs (and recorded failures) with these hashes in one transaction; returns runs removed."""
        wanted = sorted(set(hashes))
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            removed = 0
            for start in range(0, len(wanted), 500):  # SQLite caps the parameters of one statement
                chunk = wanted[start:start + 500]
                marks = ", ".join("?" for _ in chunk)
                removed += self.conn.execute(f"DELETE FROM runs WHERE run_hash IN ({marks})", chunk).rowcount
                self.conn.execute(f"DELETE FROM failures WHERE run_hash IN ({marks})", chunk)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return removed

    def run_seconds(self) -> dict[str, float]:
        """``{run_hash: total seconds}`` of every recorded run (NaN where its timings lack a total)."""
        query = "SELECT run_hash, json_extract(timings, '$.total') FROM runs"
        return {h: float("nan") if t is None else float(t) for h, t in self.conn.execute(query)}

    def run_labels(self) -> dict[str, str]:
        """``{run_hash: "task seed N: method"}`` of every recorded run (one light query, no JSON decoded)."""
        query = "SELECT run_hash, task, seed, method FROM runs"
        return {h: f"{task} seed {seed}: {method}" for h, task, seed, method in self.conn.execute(query)}

    def rows(self, hashes: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every recorded run (or those with the given hashes) with JSON columns decoded."""
        rows = [self._decode(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY id")]
        if hashes is not None:
            wanted = set(hashes)
            rows = [r for r in rows if r["run_hash"] in wanted]
        return rows

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        data = dict(row)
        for key in JSON_COLUMNS:
            if data.get(key) is not None:
                data[key] = json.loads(data[key])
        data["with_target"] = bool(data["with_target"])
        data["random_init"] = bool(data["random_init"])
        return data

"""The registry: datasets, fine-tune jobs and trained models in one embedded SQLite file under the data dir.

Each row keeps its searchable keys as columns and the rest as one JSON document, so a record's shape can grow
without migrations. One connection, guarded by a lock, is shared by the request threads and the job runner;
every write is its own transaction, so a crash leaves either the old or the new row, never half of one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (id TEXT PRIMARY KEY, created REAL NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, created REAL NOT NULL, status TEXT NOT NULL, dataset_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, created REAL NOT NULL, doc TEXT NOT NULL);
"""

# table -> (key column, key field of the document)
TABLES = {"datasets": ("id", "id"), "jobs": ("id", "job_id"), "models": ("name", "name")}


class Registry:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, table: str, doc: dict[str, Any]) -> None:
        """Insert or replace a record; ``doc`` holds its key, ``created`` (jobs: status, dataset_id)."""
        column, key = TABLES[table]
        columns = {column: doc[key], "created": doc["created"], "doc": json.dumps(doc)}
        if table == "jobs":
            columns |= {"status": doc["status"], "dataset_id": doc["dataset_id"]}
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})", tuple(columns.values())
            )

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT doc FROM {table} WHERE {TABLES[table][0]} = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def all(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT doc FROM {table} ORDER BY created").fetchall()
        return [json.loads(r[0]) for r in rows]

    def delete(self, table: str, key: str) -> bool:
        with self._lock:
            cursor = self._db.execute(f"DELETE FROM {table} WHERE {TABLES[table][0]} = ?", (key,))
        return cursor.rowcount > 0

    def jobs_using(self, dataset_id: str, statuses: tuple[str, ...]) -> list[str]:
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM jobs WHERE dataset_id = ? AND status IN ({marks})", (dataset_id, *statuses)
            ).fetchall()
        return [r[0] for r in rows]

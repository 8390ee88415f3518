"""Judgments kept across runs, so that CI judges only what changed.

A judgment is stored under a key that covers everything that decides it:
- the model's identity: the sha256 of the whole GGUF (ra_lite.file_hash, hashed once per file
  version), never its path or name;
- every generation setting that changes the verdict: think budget, temperature, top-p and seed
  (greedy decoding reads neither, so a greedy key leaves them out), repetition guard, response
  orders and speculation (speculation keeps the output distribution, but like any change of
  batch shape it changes llama.cpp's float sums, so it is kept apart);
- the exact request: principle, prompt, and the responses with their names in their order (the
  order decides the official masking);
- the runtime: llama-cpp-python's version and FORMAT, bumped whenever ra-lite's prompt, grammar
  or decoder change what a model would answer.
Not in the key: the context size (it decides only whether a request fits, and errors are never
stored), threads, the parallel slot count and GPU offload (they change float sums, not the
distribution: a greedy judgment can differ in a late digit of a probability, not in kind).

Storage is an SQLite database (stdlib sqlite3) in WAL mode, under ra-lite's cache directory
(`<RA_LITE_HOME or ~/.cache/ra-lite>/judgment-cache/judgments.sqlite3`): safe for several
processes (two CI jobs on one runner) and for the server's threads (one connection per thread).
Each row carries the sha256 of its record; a row that fails it is deleted and reads as a miss. A
database SQLite itself finds damaged ("file is not a database", "malformed") is renamed aside
(`*.corrupt-<time>`) and a new one is made; nothing is ever read from a damaged file. The total
size is capped (DEFAULT_MAX_BYTES, least recently used rows evicted first).

Replays (mini-RABench's teacher-forced score distributions) live in the same database under
kind "replay".
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ra_lite.errors import RaLiteError

FORMAT = 3                  # 3: response orders and speculation (2: think_end, 1: first)
DEFAULT_MAX_BYTES = 512 << 20
EVICT_EVERY = 64            # puts between size checks
BUSY_TIMEOUT_MS = 30_000    # another process's write may hold the lock this long


def default_path() -> Path:
    from ra_lite.model_ref import ra_lite_home

    return ra_lite_home() / "judgment-cache" / "judgments.sqlite3"


def runtime_id() -> str:
    """The llama.cpp binding's version: a new build may sum floats differently."""
    from importlib import metadata

    try:
        return "llama-cpp-python " + metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "llama-cpp-python ?"


def settings_of(options) -> dict:
    """The JudgeOptions fields that decide a verdict (defined beside them, in ra_lite.options)."""
    return options.verdict_settings()


def request_key(model_sha256: str, options, request, kind: str = "judgment",
                extra: dict | None = None) -> str:
    payload = {"format": FORMAT, "runtime": runtime_id(), "kind": kind, "model": model_sha256,
               "settings": settings_of(options), "principle": request.principle,
               "prompt": request.prompt, "responses": list(request.responses.items()),
               **(extra or {})}
    # ASCII escapes: any text hashes, whatever its surrogates.
    text = json.dumps(payload, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass
class CacheStats:
    path: str
    entries: int
    bytes: int
    max_bytes: int
    hits: int                    # over the database's life
    misses: int
    by_model: dict[str, int] = field(default_factory=dict)   # model sha256 -> entries
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float | None:
        looked = self.hits + self.misses
        return self.hits / looked if looked else None

    def to_dict(self) -> dict:
        return {**self.__dict__, "hit_rate": self.hit_rate}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL, record TEXT NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries (last_used);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
SCHEMA_VERSION = 1


class JudgmentCache:
    """The store (see the module docstring). Thread-safe; one instance per process is enough.

    hits / misses count this instance's lookups (what a run's summary reports)."""

    def __init__(self, path: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 notify=None):
        self.path = Path(path) if path is not None else default_path()
        self.max_bytes = max_bytes
        self._notify = notify or (lambda message: None)
        self._local = threading.local()
        self._lock = threading.Lock()           # set-aside and counters
        self._generation = 0                    # bumped when the file is set aside
        self._puts = 0
        self.hits = self.misses = 0
        self._unflushed = [0, 0]

    # --- connections ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "generation", None) == self._generation and local.conn is not None:
            return local.conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RaLiteError(f"cannot create the judgment cache directory {self.path.parent} "
                              f"({e.strerror or e})",
                              "set RA_LITE_HOME to a writable directory, or pass --no-cache"
                              ) from None
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")     # WAL: a crash loses at most the last
        conn.executescript(_SCHEMA)
        version = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if version is None:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            conn.close()
            raise sqlite3.DatabaseError(f"schema {version[0]}, expected {SCHEMA_VERSION}")
        local.conn, local.generation = conn, self._generation
        return conn

    def _run(self, operation):
        """operation(conn) on this thread's connection; a damaged database is set aside and the
        operation retried once on a new one."""
        for attempt in (1, 2):
            try:
                try:
                    return operation(self._connect())
                except UnicodeDecodeError as e:     # a damaged page read back as text
                    raise sqlite3.DatabaseError(f"damaged text in the file ({e.reason})") from None
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.OperationalError) and \
                        ("locked" in str(e) or "busy" in str(e)):
                    raise RaLiteError(f"the judgment cache {self.path} stayed locked for "
                                      f"{BUSY_TIMEOUT_MS // 1000} s by another process",
                                      "retry, or pass --no-cache") from None
                if attempt == 2 or not _damaged(e):
                    raise RaLiteError(f"the judgment cache {self.path} failed ({e})",
                                      "pass --no-cache, or run `ra-lite cache clear`") from None
                self._set_aside(e)

    def _set_aside(self, error: Exception) -> None:
        with self._lock:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
                self._local.conn = None
            if not self.path.exists():
                return
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(self.path) + suffix)
                if source.exists():
                    source.replace(Path(str(aside) + suffix))
            self._generation += 1
        self._notify(f"judgment cache: {self.path} was damaged ({error}); set it aside as "
                     f"{aside.name} and started a new one")

    # --- entries ------------------------------------------------------------------------------
    def get_record(self, key: str) -> dict | None:
        """The stored record, or None (a miss; a row that fails its checksum is dropped)."""
        def read(conn):
            row = conn.execute("SELECT record, digest FROM entries WHERE key = ?",
                               (key,)).fetchone()
            if row is None:
                return None
            record, digest = row
            if hashlib.sha256(record.encode("utf-8")).hexdigest() != digest:
                conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                return None
            conn.execute("UPDATE entries SET last_used = ? WHERE key = ?", (time.time(), key))
            return json.loads(record)

        try:
            record = self._run(read)
        except (ValueError, TypeError):
            record = None
        with self._lock:
            if record is None:
                self.misses += 1
                self._unflushed[1] += 1
            else:
                self.hits += 1
                self._unflushed[0] += 1
        return record

    def put_record(self, key: str, record: dict, *, kind: str, model: str) -> None:
        text = json.dumps(record, ensure_ascii=False)
        data = text.encode("utf-8")
        now = time.time()
        self._run(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, kind, model, text, hashlib.sha256(data).hexdigest(), len(data), now, now)))
        with self._lock:
            self._puts += 1
            check = self._puts % EVICT_EVERY == 1
        if check:
            self._evict()

    def _evict(self) -> None:
        def evict(conn):
            total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
            if total <= self.max_bytes:
                return
            target = int(self.max_bytes * 0.9)
            for key, size in conn.execute(
                    "SELECT key, size FROM entries ORDER BY last_used").fetchall():
                if total <= target:
                    break
                conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                total -= size
        self._run(evict)

    def flush_counters(self) -> None:
        """Add this instance's hits and misses to the database's lifetime counts."""
        with self._lock:
            hits, misses = self._unflushed
            self._unflushed = [0, 0]
        if not hits and not misses:
            return

        def add(conn):
            for name, value in (("hits", hits), ("misses", misses)):
                conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                             "value = value + excluded.value", (name, value))
        self._run(add)

    def stats(self) -> CacheStats:
        self.flush_counters()

        def read(conn):
            entries, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            by_model = dict(conn.execute("SELECT model, COUNT(*) FROM entries GROUP BY model"))
            by_kind = dict(conn.execute("SELECT kind, COUNT(*) FROM entries GROUP BY kind"))
            return CacheStats(str(self.path), entries, size, self.max_bytes,
                              meta.get("hits", 0), meta.get("misses", 0), by_model, by_kind)
        return self._run(read)

    def clear(self) -> int:
        """Delete every entry (and the lifetime counters); returns how many there were."""
        def clear(conn):
            n = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            conn.execute("DELETE FROM entries")
            conn.execute("DELETE FROM meta WHERE name IN ('hits', 'misses')")
            conn.execute("VACUUM")
            return n
        with self._lock:
            self._unflushed = [0, 0]
        return self._run(clear)

    def close(self) -> None:
        try:
            self.flush_counters()
        except RaLiteError:
            pass
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """SQLite's word for a damaged file (a plain DatabaseError: "file is not a database",
    "database disk image is malformed"), or our own schema check failing."""
    if type(error) is sqlite3.DatabaseError:
        return True
    text = str(error).lower()
    return any(word in text for word in ("malformed", "not a database", "corrupt", "disk image",
                                         "could not decode"))


class ModelCache:
    """A JudgmentCache seen from one model: judgments and replays by request and options."""

    def __init__(self, cache: JudgmentCache, model_sha256: str):
        self.cache, self.model = cache, model_sha256

    def lookup(self, request, options):
        """The cached Judgment (marked cached) or None."""
        from ra_lite.judgment import Judgment

        record = self.cache.get_record(request_key(self.model, options, request))
        if record is None:
            return None
        try:
            judgment = Judgment.from_record(record)
        except (KeyError, TypeError, ValueError):
            return None          # written by an incompatible version: a miss
        judgment.cached = True
        return judgment

    def store(self, request, options, judgment) -> None:
        record = judgment.to_record()
        record["cached"] = False
        self.cache.put_record(request_key(self.model, options, request), record,
                              kind="judgment", model=self.model)

    def lookup_replay(self, request, options, reference_sha256: str) -> dict | None:
        return self.cache.get_record(request_key(self.model, options, request, "replay",
                                                 {"reference": reference_sha256}))

    def store_replay(self, request, options, reference_sha256: str, record: dict) -> None:
        self.cache.put_record(request_key(self.model, options, request, "replay",
                                          {"reference": reference_sha256}), record,
                              kind="replay", model=self.model)


def for_model(model, cache: JudgmentCache | None, notify=None) -> ModelCache | None:
    """The cache bound to a local model (a path, registry name or None for the embedded one),
    without loading it; None when there is no cache."""
    if cache is None:
        return None
    from ra_lite.file_hash import remembered_sha256
    from ra_lite.pull import resolve_model

    path, _ = resolve_model(model)
    return ModelCache(cache, remembered_sha256(path))

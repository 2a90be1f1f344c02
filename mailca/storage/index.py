"""``index.json``: every certificate version ever issued, one JSON object per version.

:class:`Index` is the ONLY writer of ``index.json`` and the one place that answers "which
version of a lineage is current".  A lineage is (name, key type); its current version is the
one with the highest ``version`` number, whatever its status (a revoked certificate stays
current - and live - until a new one is issued).  Older versions are superseded.

Entries stay plain dicts (the on-disk objects, byte-compatible with earlier releases): the
listing paths (``status`` over 10,000 certificates) read them without building an object
per certificate.  Callers change the index only through :class:`Index` methods
(:meth:`Index.add`, :meth:`Index.extend`, :meth:`Index.mark_revoked`) and write it with
:meth:`Index.save`, which needs the store lock.
"""

from __future__ import annotations

import json
from typing import Iterable, NamedTuple

__all__ = ["INDEX_VERSION", "Index", "Lineage", "encode_index", "current_by_lineage", "live_targets", "lineages_for_host"]

INDEX_VERSION = 1


def _version(e: dict) -> int:
    return e.get("version", 0)


def current_by_lineage(entries: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """(name, key type) -> the current (newest) entry of that lineage, whatever its status.
    One pass over the entries."""
    cur: dict[tuple[str, str], dict] = {}
    for e in entries:
        k = (e.get("name"), e.get("key_type"))
        best = cur.get(k)
        if best is None or _version(e) > _version(best):
            cur[k] = e
    return cur


def live_targets(entries: Iterable[dict]) -> dict[str, str]:
    """Lineage dir (relative to the store) -> ``archive/NNNN`` of its current version: where
    the ``live`` link must point.  One pass (recovery and doctor call it once per run)."""
    best: dict[str, tuple[int, str]] = {}
    for e in entries:
        lineage, _, vname = e["path"].rpartition("/archive/")
        v = _version(e)
        if lineage not in best or v > best[lineage][0]:
            best[lineage] = (v, "archive/" + vname)
    return {k: v[1] for k, v in best.items()}


class Lineage(NamedTuple):  # a NamedTuple: cheaper to define than a dataclass on the issue path
    """One lineage: (name, key type) and its indexed versions, oldest first.  The current
    version is the newest, whatever its status; the others are superseded."""

    name: str
    key_type: str
    versions: tuple[dict, ...]

    @property
    def current(self) -> dict:
        return self.versions[-1]

    @property
    def superseded(self) -> tuple[dict, ...]:
        return self.versions[:-1]

    @property
    def rel_dir(self) -> str:
        """The lineage directory, relative to the store (certs/<name>/<key type>)."""
        return self.current["path"].rpartition("/archive/")[0]

    @property
    def live_target(self) -> str:
        """Where its ``live`` link must point: ``archive/NNNN`` of the current version."""
        return "archive/" + self.current["path"].rpartition("/archive/")[2]


def encode_index(index: dict) -> bytes:
    """index.json with one certificate per line: readable and diffable, and encoded by
    json's C encoder (``indent=`` would switch to the pure-Python one, ~50x slower)."""
    head = {k: v for k, v in index.items() if k != "certs"}
    dumps = json.JSONEncoder(sort_keys=True, separators=(", ", ": ")).encode
    lines = [dumps(e) for e in index.get("certs", [])]
    body = ",\n ".join(lines)
    head_s = dumps(head)[1:-1]
    return ("{" + (head_s + ",\n" if head_s else "") + ' "certs": [\n ' + body + "\n]}\n").encode()


class Index:
    """The index of one store, as loaded (or a fresh one).  Cheap: wraps the loaded data.

    Read it with :meth:`load`, ask :meth:`current`/:meth:`lineages`, change it with the
    mutators and write it with :meth:`save` (under ``store.lock()``)."""

    __slots__ = ("store", "_data")

    def __init__(self, store, data: dict | None = None):
        self.store = store
        self._data = data if data is not None else {"version": INDEX_VERSION, "certs": []}

    # ---------------------------------------------------------------- reading
    @classmethod
    def load(cls, store) -> "Index":
        """The store's index (the same object for the whole of one locked operation)."""
        return cls(store, store.load_index())

    @property
    def entries(self) -> list[dict]:
        """Every version ever issued, oldest first (do not modify the dicts: use the methods)."""
        return self._data["certs"]

    def __len__(self) -> int:
        return len(self._data["certs"])

    def lineage(self, name: str, key_type: str) -> Lineage | None:
        """The lineage (name, key_type) with its versions, or None if it was never issued."""
        found = [(i, e) for i, e in enumerate(self._data["certs"])
                 if e.get("name") == name and e.get("key_type") == key_type]
        if not found:
            return None
        # by version; of two entries with one number (a damaged index) the first listed is current,
        # as in current_by_lineage()
        found.sort(key=lambda ie: (_version(ie[1]), -ie[0]))
        return Lineage(name, key_type, tuple(e for _, e in found))

    def current(self, name: str, key_type: str) -> dict | None:
        """The current (newest) entry of the lineage (name, key_type), whatever its status."""
        lin = self.lineage(name, key_type)
        return lin.current if lin is not None else None

    def lineages(self) -> dict[tuple[str, str], dict]:
        """(name, key type) -> current entry, for every lineage."""
        return current_by_lineage(self._data["certs"])

    def live_targets(self) -> dict[str, str]:
        """Lineage dir (relative) -> ``archive/NNNN`` the live link must point at."""
        return live_targets(self._data["certs"])

    def highest_version(self, name: str, key_type: str) -> int:
        cur = self.current(name, key_type)
        return int(_version(cur)) if cur is not None else 0

    def paths(self) -> set[str]:
        return {e["path"] for e in self._data["certs"]}

    # --------------------------------------------------------------- changing
    def add(self, entry: dict) -> None:
        self._data["certs"].append(entry)

    def extend(self, entries: Iterable[dict]) -> None:
        self._data["certs"].extend(entries)

    @staticmethod
    def mark_revoked(entry: dict, *, at: str, reason: str) -> None:
        """Mark one entry (an object of this index) revoked at ``at`` (ISO Z) for ``reason``."""
        entry["status"] = "revoked"
        entry["revoked_at"] = at
        entry["revocation_reason"] = reason

    # ---------------------------------------------------------------- writing
    def save(self, *, durable: bool = True) -> None:
        """Write ``index.json`` atomically (temp file, fsync, os.replace, fsync dir), 0600.
        The only write of index.json in mailca.  Needs the store lock."""
        from . import fsguard
        from .store import atomic_write

        self.store.require_lock()
        fsguard.check_components(self.store.path, self.store.index_path)  # never written through a link
        self._data["version"] = INDEX_VERSION
        atomic_write(self.store.index_path, encode_index(self._data), 0o600, durable=durable)
        self.store.remember_index(self._data)

    @classmethod
    def rebuild(cls, store, entries: Iterable[dict] = ()) -> "Index":
        """Write a new index holding ``entries`` (a new store, or a rebuild from the archive)."""
        idx = cls(store, {"version": INDEX_VERSION, "certs": list(entries)})
        idx.save()
        return idx


def lineages_for_host(store, host: str) -> list[dict]:
    """Current index entries (one per key type) of the lineage(s) serving ``host``.

    ``host`` is a lineage name (the first name given to ``mailca issue``) or any DNS name in
    a current certificate.  Revoked lineages are skipped.  Raises if there is none."""
    from ..core.names import normalize_dns_name
    from ..errors import StoreError, UsageError

    name = normalize_dns_name(host, allow_wildcard=True, what="host")
    store.require_ca()
    live = [e for e in Index.load(store).lineages().values() if e.get("status") != "revoked"]
    by_name = [e for e in live if e.get("name") == name]
    if not by_name:
        lineage_names = sorted({e["name"] for e in live if name in e.get("names", [])})
        if len(lineage_names) > 1:
            raise UsageError(f"{host!r} is in several certificates ({', '.join(lineage_names)}); name one of those")
        by_name = [e for e in live if lineage_names and e["name"] == lineage_names[0]]
    if not by_name:
        raise StoreError(f"no certificate for {host!r} in {store.path}; issue one with 'mailca issue {name}'")
    for e in by_name:
        # what callers print or install (configs naming live/, TLSA digests of its files) must
        # not come from a lineage directory someone else can write or has linked elsewhere
        store.check_lineage(e["name"], e["key_type"])
    return sorted(by_name, key=lambda e: e["key_type"])

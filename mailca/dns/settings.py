"""Remembered publishing settings: what the scheduled job ('mailca auto') needs to publish a
host's TLSA records and to ask DNS before a switch, kept in ``<store>/dane-publish.json``
so the timer's argv carries no secret (the TSIG key stays in its own file; only its path
is kept).  Written by 'mailca dane publish HOST ... --remember' after the primary accepted
the update (so only settings that worked are remembered); atomic, under the store lock,
shape-checked on every read (:func:`mailca.storage.schema.check_dane_settings`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from ..storage.schema import check_dane_settings

__all__ = ["SETTINGS_FILE", "HostSettings", "load", "remember", "forget"]

SETTINGS_FILE = "dane-publish.json"


@dataclass(frozen=True)
class HostSettings:
    host: str
    server: str  # ADDR@PORT of the zone's primary
    tsig_key_file: str  # absolute path; the secret is read from it on every run, never stored here
    zone: str | None
    ttl: int
    ports: tuple[int, ...]
    usage: str
    ta: str
    ta_selector: str
    resolver: str | None  # ADDR@PORT of the validating resolver (None: printed-time rule)
    ns_port: int

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ports"] = list(self.ports)
        d.pop("host")
        return d


def _path(store):
    return store.path / SETTINGS_FILE


def _read(store) -> dict:
    p = _path(store)
    if not p.exists():
        return {"version": 1, "hosts": {}}
    return check_dane_settings(store.read_json(p, fix="run 'mailca dane publish HOST ... --remember' again"), p)


def load(store) -> list[HostSettings]:
    """Every remembered host, sorted by name."""
    data = _read(store)
    return [HostSettings(host=h, **{**s, "ports": tuple(s["ports"])}) for h, s in sorted(data["hosts"].items())
            if isinstance(s, dict)]


def remember(store, settings: HostSettings) -> None:
    s = settings
    rec = s.as_dict()
    rec["tsig_key_file"] = os.path.abspath(rec["tsig_key_file"])
    with store.lock():
        data = _read(store)
        data["hosts"][s.host] = rec
        check_dane_settings(data, _path(store))
        store.write_file(_path(store), (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), private=True)


def forget(store, host: str) -> bool:
    with store.lock():
        data = _read(store)
        if host not in data["hosts"]:
            return False
        del data["hosts"][host]
        store.write_file(_path(store), (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), private=True)
    return True

"""``ca/ca.json``: the CA's state (domains, organization, profile snapshot, key type).

The one place that reads or writes ``ca.json``.  :func:`load_castate` parses it once per
process (again only if the file changed) and checks its shape, so every caller - loading the
CA, the renewal policy, ``dane``/``postfix`` (which only need the domains), ``ca
renew-intermediate`` (is the root key encrypted?) - gets the same typed :class:`CAState` and
the same one-line error for a missing or corrupt file.  Reading it needs no cryptography import.
"""

from __future__ import annotations

import json
import os
import weakref
from typing import NamedTuple

from ..errors import StoreError

__all__ = ["CA_META", "CAState", "load_castate", "write_castate"]

CA_META = "ca.json"


class CAState(NamedTuple):  # a NamedTuple: cheaper to define than a dataclass on the issue path
    """What ``ca.json`` says.  ``raw`` is the whole JSON object as read (for --json output and
    for fields a later version adds)."""

    domains: tuple[str, ...]
    organization: str = ""
    permitted_ip_ranges: tuple[str, ...] = ()
    profile_name: str = "default"
    profile_data: dict | None = None
    key_type: str = ""
    created: str = ""
    root_encrypted: bool = True
    raw: dict = {}  # never mutated: from_dict() always passes the object read

    def profile(self):
        """The profile snapshot taken at ``init`` (a :class:`mailca.core.profiles.Profile`)."""
        from ..core.profiles import build_profile

        if self.profile_data:
            return build_profile(self.profile_name, self.profile_data, merged=True)
        return build_profile(self.profile_name, {})

    @classmethod
    def from_dict(cls, meta: dict) -> "CAState":
        """Check the shape of a ca.json object (ValueError naming what is wrong)."""
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        doms = meta.get("domains")
        if not isinstance(doms, list) or not doms:
            raise ValueError("no domains")
        pdata = meta.get("profile_data")
        if pdata is not None and not isinstance(pdata, dict):
            raise ValueError("profile_data is not an object")
        ranges = meta.get("permitted_ip_ranges") or []
        if not isinstance(ranges, list):
            raise ValueError("permitted_ip_ranges is not a list")
        return cls(
            domains=tuple(str(d) for d in doms),
            organization=str(meta.get("organization", "")),
            permitted_ip_ranges=tuple(str(r) for r in ranges),
            profile_name=str(meta.get("profile") or "default"),
            profile_data=pdata or None,
            key_type=str(meta.get("key_type", "")),
            created=str(meta.get("created", "")),
            root_encrypted=bool(meta.get("root_encrypted", True)),
            raw=meta,
        )


# store -> ((inode, size, mtime_ns), CAState): parsed once per process while the file is unchanged
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def load_castate(store) -> CAState:
    """Read and check ``ca/ca.json`` (StoreError with one line if it is missing or corrupt)."""
    from . import fsguard, schema

    p = store.ca_file(CA_META)
    try:
        fsguard.check_components(store.path, p)  # no link followed inside the store
        st = os.stat(p)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = _cache.get(store)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        raw = fsguard.read_bytes(p)  # bounded, O_NOFOLLOW
    except FileNotFoundError:
        store.require_ca()  # says what is missing (no store, no CA, or only ca.json)
        raise StoreError(f"{p} is missing; restore it from a backup") from None
    except PermissionError:
        raise StoreError(f"cannot read {p}: permission denied (run as the store's owner)") from None
    except OSError as exc:
        raise StoreError(f"{p} is corrupt ({exc.strerror or exc}); restore it from a backup") from None
    try:
        state = CAState.from_dict(schema.check_ca_meta(fsguard.parse_json(raw), p))
    except (ValueError, TypeError, RecursionError) as exc:
        raise StoreError(f"{p} is corrupt ({exc}); restore it from a backup") from None
    _cache[store] = (stamp, state)
    return state


def write_castate(store, meta: dict) -> CAState:
    """Write ``ca.json`` (under the store lock, atomically; same layout as ever)."""
    state = CAState.from_dict(meta)
    store.write_file(store.ca_file(CA_META), (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    _cache.pop(store, None)
    return state

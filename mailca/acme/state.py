"""ACME state in the store, under ``acme/``: accounts, orders, authorizations, certificates
(serial -> account), external account bindings and the nonce key.

One JSON file per object (``acme/<kind>/<id>.json``), written with the store's guarantees:
``Store.write_file`` (temp file, fsync, rename, fsync dir) under ``Store.lock()`` plus a
process-wide thread lock (the store lock is re-entrant per ``Store`` object, so the server's
threads serialise on :attr:`AcmeState.tlock` first).  A kill -9 leaves every file either old
or new, never torn; orders, authorizations and nonces therefore survive a restart.

Used nonces are kept in ``acme/nonces-used.json`` (written atomically, not fsynced: a process
crash cannot lose it, only a power cut could forget the last seconds of used nonces).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import struct
import threading
import time
from pathlib import Path

from ..errors import UsageError
from ..storage.store import Store

__all__ = ["AcmeState", "b64u", "unb64u", "new_id", "NONCE_LIFETIME", "eab_new", "eab_list", "eab_revoke",
           "allowed_by", "KINDS"]

KINDS = ("accounts", "orders", "authz", "certs", "eab")
NONCE_LIFETIME = 3600  # seconds
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_id() -> str:
    return secrets.token_urlsafe(12)


class AcmeState:
    """The ``acme/`` directory of one store."""

    def __init__(self, store: Store):
        self.store = store
        self.dir = Path(store.path) / "acme"
        self.tlock = threading.RLock()
        self._used: dict[str, float] | None = None
        self._nonce_key: bytes | None = None

    # ------------------------------------------------------------ locking
    @contextlib.contextmanager
    def locked(self):
        with self.tlock, self.store.lock():
            self._ensure_dirs()
            yield self

    def _ensure_dirs(self) -> None:
        if (self.dir / "eab").is_dir() and (self.dir / "authz").is_dir():
            return
        self.store.ensure_dir(self.dir, durable=True)
        for k in KINDS:
            self.store.ensure_dir(self.dir / k, durable=True)

    # ------------------------------------------------------------ objects
    def path(self, kind: str, oid: str) -> Path:
        if kind not in KINDS or not _ID.match(oid):
            raise KeyError(oid)
        return self.dir / kind / f"{oid}.json"

    def get(self, kind: str, oid: str) -> dict | None:
        try:
            p = self.path(kind, oid)
        except KeyError:
            return None
        try:
            with open(p, "rb") as fh:
                return json.loads(fh.read(1 << 20))
        except FileNotFoundError:
            return None

    def put(self, kind: str, obj: dict, *, private: bool = False) -> None:
        """Write one object (caller holds :meth:`locked`)."""
        data = (json.dumps(obj, sort_keys=True) + "\n").encode()
        self.store.write_file(self.path(kind, obj["id"]), data, private=private)

    def all(self, kind: str) -> list[dict]:
        d = self.dir / kind
        out = []
        if not d.is_dir():
            return out
        for p in sorted(d.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(p.read_bytes()))
        return out

    # ------------------------------------------------------------ nonces
    def _key(self) -> bytes:
        if self._nonce_key is None:
            p = self.dir / "nonce.key"
            try:
                self._nonce_key = p.read_bytes()
            except FileNotFoundError:
                with self.locked():
                    if not p.exists():
                        self.store.write_file(p, secrets.token_bytes(32), private=True)
                    self._nonce_key = p.read_bytes()
        return self._nonce_key

    def new_nonce(self) -> str:
        """Stateless until used: time + random + HMAC under the store's nonce key, so a
        nonce handed out before a restart is still good after it."""
        body = struct.pack(">Q", int(time.time())) + secrets.token_bytes(10)
        return b64u(body + hmac.new(self._key(), body, hashlib.sha256).digest()[:14])

    def _load_used(self) -> dict[str, float]:
        if self._used is None:
            try:
                self._used = json.loads((self.dir / "nonces-used.json").read_bytes())
            except (FileNotFoundError, ValueError):
                self._used = {}
        return self._used

    def consume_nonce(self, nonce: str) -> bool:
        """True once per valid, unexpired nonce (caller holds :meth:`locked`)."""
        try:
            raw = unb64u(nonce)
        except (ValueError, TypeError):
            return False
        if len(raw) != 32:
            return False
        body, mac = raw[:18], raw[18:]
        if not hmac.compare_digest(hmac.new(self._key(), body, hashlib.sha256).digest()[:14], mac):
            return False
        now = time.time()
        (ts,) = struct.unpack(">Q", body[:8])
        if not (now - NONCE_LIFETIME <= ts <= now + 60):
            return False
        used = self._load_used()
        if nonce in used:
            return False
        used[nonce] = ts
        for k in [k for k, t in used.items() if t < now - NONCE_LIFETIME]:
            del used[k]
        # atomic, not fsynced: see the module docstring
        self.store.write_file(self.dir / "nonces-used.json", json.dumps(used).encode(), durable=False)
        return True


# ------------------------------------------------------------------ EAB
def _pattern(ca_domains: list[str], raw: str) -> str:
    from ..core import names as namesmod

    p = namesmod.normalize_dns_name(raw, allow_wildcard=True, what="--allow name")
    if not namesmod.within(p, ca_domains):
        raise UsageError(f"--allow {raw!r} is outside this CA's permitted domains ({', '.join(ca_domains)})")
    return p


def allowed_by(patterns: list[str], name: str) -> bool:
    """``name`` (A-label, maybe ``*.``) matches an EAB pattern: equal, or for ``*.zone`` any
    name exactly one label below ``zone`` (and ``*.zone`` itself)."""
    for p in patterns:
        if name == p:
            return True
        if p.startswith("*."):
            zone = p[2:]
            if name.endswith("." + zone) and "." not in name[: -len(zone) - 1] and not name.startswith("*."):
                return True
    return False


def eab_new(store: Store, allow: list[str], *, note: str = "") -> dict:
    """A new external account binding: {kid, hmac (base64url), allow}.  The HMAC key is
    stored 0600 and printed once."""
    from ..storage.castate import load_castate

    if not allow:
        raise UsageError("give at least one --allow NAME (e.g. --allow mail.example.org --allow '*.mx.example.org')")
    domains = list(load_castate(store).domains)
    patterns = []
    for a in allow:
        p = _pattern(domains, a)
        if p not in patterns:
            patterns.append(p)
    st = AcmeState(store)
    key = b64u(secrets.token_bytes(32))
    while key.startswith("-"):  # '--eab-hmac-key -abc' would be read as an option by certbot and lego
        key = b64u(secrets.token_bytes(32))
    rec = {"id": "kid-" + secrets.token_urlsafe(9), "hmac": key, "allow": patterns,
           "created": int(time.time()), "revoked": False, "account": None, "note": note[:200]}
    with st.locked():
        st.put("eab", rec, private=True)
    return {"kid": rec["id"], "hmac": rec["hmac"], "allow": patterns}


def eab_list(store: Store) -> list[dict]:
    return [{"kid": r["id"], "allow": r["allow"], "revoked": r.get("revoked", False), "account": r.get("account"),
             "note": r.get("note", "")} for r in AcmeState(store).all("eab")]


def eab_revoke(store: Store, kid: str) -> dict:
    st = AcmeState(store)
    with st.locked():
        rec = st.get("eab", kid)
        if rec is None:
            known = ", ".join(r["id"] for r in st.all("eab")) or "none"
            raise UsageError(f"no external account binding {kid!r}; known: {known} (see 'mailca acme eab list')")
        rec["revoked"] = True
        st.put("eab", rec, private=True)
        if rec.get("account"):
            acct = st.get("accounts", rec["account"])
            if acct is not None:
                acct["status"] = "deactivated"
                st.put("accounts", acct)
    return {"kid": kid, "revoked": True, "account": rec.get("account")}

"""Shape checks for every JSON file of the store: a corrupt or hand-edited file is one
StoreError line that names the file and the first bad field, never an AttributeError,
KeyError, OverflowError or RecursionError somewhere later.

The checks are deliberately strict about what later code relies on (types, ranges,
ISO timestamps, relative archive paths inside the store) and lenient about extra keys.
"""

from __future__ import annotations

import datetime as _dt
import re

from ..errors import StoreError

__all__ = ["check_index", "index_problem", "check_ca_meta", "check_intent", "check_meta", "entry_problem",
           "ARCHIVE_PATH", "LINEAGE_PATH", "dane_settings_problem", "check_dane_settings"]

#: an index entry's path: certs/<name>/<key type>/archive/NNNN - relative, inside the store
ARCHIVE_PATH = re.compile(r"certs/(?!\.\.?/)[^/\x00]+/(?!\.\.?/)[^/\x00]+/archive/[0-9]{4,9}\Z")
#: a journal (.intent) entry: a lineage directory certs/<name>/<key type>
#: (or the crl directory, which 'revoke' journals while it rewrites the CRL)
LINEAGE_PATH = re.compile(r"(?:certs/(?!\.\.?/)[^/\x00]+/(?!\.\.?\Z)[^/\x00]+|crl)\Z")
_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_HEX = re.compile(r"[0-9a-f]{1,64}\Z")
_STR_FIELDS = ("serial", "name", "key_type", "not_before", "not_after", "path")
MAX_VERSION = 10 ** 9 - 1


def _ts_ok(v) -> bool:
    # fromisoformat is C (strptime would cost ~0.5 s over a 10,000-entry index)
    if not isinstance(v, str) or not _TS.match(v):
        return False
    try:
        _dt.datetime.fromisoformat(v[:-1])
    except ValueError:
        return False
    return True


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def entry_problem(e) -> str | None:
    """What is wrong with one index entry, or None."""
    if not isinstance(e, dict):
        return "is not an object"
    for f in _STR_FIELDS:
        if not isinstance(e.get(f), str) or not e[f]:
            return f"lacks a string '{f}'" if f not in e else f"has a bad '{f}' ({str(e[f])[:40]!r})"
    v = e.get("version")
    if type(v) is not int or not 1 <= v <= MAX_VERSION:
        return f"has a bad 'version' ({str(v)[:40]!r}; want 1..{MAX_VERSION})"
    if not ARCHIVE_PATH.match(e["path"]):
        return f"has a path {e['path'][:80]!r} that is not certs/NAME/KEYTYPE/archive/NNNN inside the store"
    if int(e["path"].rsplit("/", 1)[1]) != v:
        return f"has version {v} but path {e['path'][:80]!r}"
    if not _HEX.match(e["serial"]):
        return f"has a serial {e['serial'][:50]!r} that is not lower-case hex"
    for f in ("not_before", "not_after"):
        if not _ts_ok(e[f]):
            return f"has a bad '{f}' ({e[f][:40]!r}; want YYYY-MM-DDTHH:MM:SSZ)"
    for f in ("issued_at", "revoked_at"):
        if e.get(f) is not None and not _ts_ok(e[f]):
            return f"has a bad '{f}' ({str(e[f])[:40]!r}; want YYYY-MM-DDTHH:MM:SSZ)"
    if e.get("status", "active") not in ("active", "revoked"):
        return f"has a bad 'status' ({str(e.get('status'))[:40]!r}; want active or revoked)"
    for f in ("names", "ips"):
        if f in e and not _str_list(e[f]):
            return f"has a bad '{f}' (want a list of strings)"
    for f in ("spki_sha256", "cert_sha256"):
        if e.get(f) is not None and not (isinstance(e[f], str) and _SHA256.match(e[f])):
            return f"has a bad '{f}' (want 64 hex digits)"
    for f in ("profile", "source", "revocation_reason"):
        if e.get(f) is not None and not isinstance(e[f], str):
            return f"has a bad '{f}' (want a string)"
    return None


def index_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("certs"), list):
        return "no 'certs' list"
    for i, e in enumerate(data["certs"]):
        p = entry_problem(e)
        if p:
            return f"entry {i} {p}"
    return None


def check_index(data, path) -> dict:
    p = index_problem(data)
    if p:
        raise StoreError(f"index {path} is corrupt ({p}); run 'mailca doctor --fix' to rebuild it from the archive "
                         "(the corrupt file is kept)")
    return data


def check_ca_meta(meta, path) -> dict:
    """ca/ca.json: an object with a non-empty list of domain strings and a profile object."""
    problem = None
    if not isinstance(meta, dict):
        problem = "not a JSON object"
    elif not isinstance(meta.get("domains"), list) or not meta["domains"] or not _str_list(meta["domains"]):
        problem = "no list of domains"
    elif not isinstance(meta.get("profile", "default"), str):
        problem = "'profile' is not a name"
    elif not isinstance(meta.get("profile_data") or {}, dict):
        problem = "'profile_data' is not an object"
    elif not _str_list(meta.get("permitted_ip_ranges", [])):
        problem = "'permitted_ip_ranges' is not a list of strings"
    elif not isinstance(meta.get("root_encrypted", True), bool):
        problem = "'root_encrypted' is not true/false"
    if problem:
        raise StoreError(f"{path} is corrupt ({problem}); restore it from a backup")
    return meta


def check_intent(data) -> tuple[list[str], list[str]]:
    """(lineages, rejected): the journal's lineage paths that are certs/NAME/KEYTYPE (or crl)
    inside the store; anything else (absolute paths, '..', other types) is rejected."""
    if not isinstance(data, list):
        return [], [repr(data)[:60]]
    good, bad = [], []
    for x in data:
        if isinstance(x, str) and LINEAGE_PATH.match(x):
            good.append(x)
        else:
            bad.append(repr(x)[:60])
    return good, bad


def check_meta(meta, path) -> dict:
    """An archive version's meta.json: an object of string values."""
    if not isinstance(meta, dict) or not all(isinstance(v, (str, int, bool, type(None), list)) for v in meta.values()):
        raise StoreError(f"{path} is corrupt (not an object of plain values); restore it from a backup")
    for f in ("name", "key_type", "profile", "source", "issued_at"):
        if f in meta and not isinstance(meta[f], str):
            raise StoreError(f"{path} is corrupt ('{f}' is not a string); restore it from a backup")
    return meta


_ADDR_PORT = re.compile(r"[0-9A-Fa-f:.]{2,45}(@[0-9]{1,5})?\Z")
_DANE_FIELDS = {
    "server": lambda v: isinstance(v, str) and bool(_ADDR_PORT.match(v)),
    "tsig_key_file": lambda v: isinstance(v, str) and v.startswith("/") and "\x00" not in v and len(v) < 4096,
    "zone": lambda v: v is None or (isinstance(v, str) and 0 < len(v) < 256),
    "ttl": lambda v: type(v) is int and 1 <= v <= 604800,
    "ports": lambda v: isinstance(v, list) and 0 < len(v) <= 16 and all(type(p) is int and 1 <= p <= 65535 for p in v),
    "usage": lambda v: v in ("3", "2", "both"),
    "ta": lambda v: v in ("intermediate", "root"),
    "ta_selector": lambda v: v in ("0", "1", "both"),
    "resolver": lambda v: v is None or (isinstance(v, str) and bool(_ADDR_PORT.match(v))),
    "ns_port": lambda v: type(v) is int and 1 <= v <= 65535,
}


def dane_settings_problem(data) -> str | None:
    """What is wrong with dane-publish.json ({"version": 1, "hosts": {HOST: settings}}), or None."""
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("hosts"), dict):
        return "want an object with version 1 and a 'hosts' object"
    for host, s in data["hosts"].items():
        if not isinstance(host, str) or not re.fullmatch(r"[a-z0-9.*_-]{1,253}", host):
            return f"host {str(host)[:60]!r} is not a DNS name"
        if not isinstance(s, dict):
            return f"hosts.{host} is not an object"
        for f, ok in _DANE_FIELDS.items():
            if f not in s or not ok(s[f]):
                return f"hosts.{host}.{f} is missing or bad ({str(s.get(f))[:60]!r})"
    return None


def check_dane_settings(data, path) -> dict:
    p = dane_settings_problem(data)
    if p:
        raise StoreError(f"{path} is corrupt ({p}); run 'mailca dane publish HOST ... --remember' again "
                         "(or remove the file to stop unattended publishing)")
    return data

"""storage.index (Index, Lineage) and storage.castate (CAState) on real stores made by the CLI."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from mailca.errors import StoreError
from mailca.storage.castate import load_castate
from mailca.storage.index import Index, current_by_lineage
from mailca.storage.store import Store


def test_index_writes_the_same_bytes_as_before_and_only_under_the_lock(tmp_path):
    store = Store(tmp_path / "s")
    entries = [{"name": "a.example.org", "key_type": "ecdsa-p256", "version": 1, "serial": "0a",
                "path": "certs/a.example.org/ecdsa-p256/archive/0001", "status": "active"},
               {"name": "b.example.org", "key_type": "rsa-2048", "version": 1, "serial": "0b", "names": ["b", "c"],
                "path": "certs/b.example.org/rsa-2048/archive/0001", "status": "revoked"}]
    with pytest.raises(RuntimeError):
        Index(store, {"certs": list(entries)}).save()  # no lock: a programming error
    assert not store.index_path.exists()
    with store.lock():
        Index.rebuild(store, entries)
    raw = store.index_path.read_bytes()
    # the on-disk format of earlier releases: one sorted-key object per line (C encoder)
    assert raw == (b'{"version": 1,\n "certs": [\n '
                   b'{"key_type": "ecdsa-p256", "name": "a.example.org", "path": "certs/a.example.org/ecdsa-p256/archive/0001", '
                   b'"serial": "0a", "status": "active", "version": 1},\n '
                   b'{"key_type": "rsa-2048", "name": "b.example.org", "names": ["b", "c"], '
                   b'"path": "certs/b.example.org/rsa-2048/archive/0001", "serial": "0b", "status": "revoked", "version": 1}'
                   b'\n]}\n')
    assert json.loads(raw)["certs"] == entries
    assert stat.S_IMODE(os.stat(store.index_path).st_mode) == 0o600


def test_lineage_current_is_the_live_version_and_revocation_goes_through_index(ca):
    for _ in range(3):
        ca.ok("issue", "mail.example.org", "--replace")
    store = Store(ca.dir)
    idx = Index.load(store)
    lin = idx.lineage("mail.example.org", "ecdsa-p256")
    assert [e["version"] for e in lin.versions] == [1, 2, 3]
    assert lin.current is idx.current("mail.example.org", "ecdsa-p256")
    assert [e["version"] for e in lin.superseded] == [1, 2]
    assert os.readlink(ca.dir / lin.rel_dir / "live") == lin.live_target == "archive/0003"
    assert current_by_lineage(idx.entries)[("mail.example.org", "ecdsa-p256")] is lin.current
    assert idx.lineage("mail.example.org", "rsa-2048") is None
    when = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with store.lock():
        idx = Index.load(store)
        e = idx.current("mail.example.org", "ecdsa-p256")
        idx.mark_revoked(e, at=when, reason="superseded")
        idx.save()
    again = Index.load(Store(ca.dir)).current("mail.example.org", "ecdsa-p256")
    assert (again["status"], again["revoked_at"], again["revocation_reason"]) == \
        ("revoked", when, "superseded")


def test_castate_is_parsed_once_and_reread_when_the_file_changes(ca):
    store = Store(ca.dir)
    st = load_castate(store)
    assert "example.org" in st.domains and st.profile().name
    assert load_castate(store) is st  # cached while the file is unchanged
    p = store.ca_file("ca.json")
    meta = json.loads(p.read_text())
    meta["domains"] = meta["domains"] + ["example.com"]
    p.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    assert "example.com" in load_castate(store).domains
    p.write_text("[]")
    with pytest.raises(StoreError, match=r"ca\.json is corrupt \(not a JSON object\)"):
        load_castate(store)
    p.unlink()
    with pytest.raises(StoreError, match="ca.json is missing"):
        load_castate(store)

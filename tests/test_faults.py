"""Fault injection: SIGKILL the real `mailca` process at random moments during issue,
issue --batch, renew, renew --new-key, crl and revoke (when those commands exist), >= 100 trials.

After every kill:
  * `mailca doctor` (its code, in-process for speed; the CLI every few trials) finds no ERROR:
    every indexed certificate has its certificate and its matching key, live links resolve;
  * no key file that existed before was changed or removed (archive versions are immutable);
  * the next run of the same command completes (exit 0) and leaves nothing pending.

The kill moment is drawn from the measured lifetime of an undisturbed run of the same command,
so that most kills land while files are being written (start-up is import-bound), not before.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import T0, base_env, iso, make_ca, run, mailca_argv

NOW = iso(T0)  # the CA (make_ca) is created at the same clock


def has_command(name: str) -> bool:
    return run(["--dir", "/nonexistent-mailca", name, "--help"]).returncode == 0


def key_hashes(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in store.glob("certs/*/*/archive/[0-9]*/key.pem")}


def check_store(store: Path, keys_before: dict[str, str], *, cli: bool = False) -> dict:
    from mailca.lifecycle.doctor import diagnose
    from mailca.storage.store import Store

    findings = diagnose(Store(store))
    errors = [f for f in findings if f.level == "error"]
    assert not errors, "\n".join(f.line() for f in errors)
    idx = json.loads((store / "index.json").read_text())
    for e in idx["certs"]:
        v = store / e["path"]
        assert (v / "cert.pem").is_file(), e["path"]
        assert (v / "key.pem").is_file(), f"indexed certificate {e['path']} lost its key"
    now = key_hashes(store)
    for path, digest in keys_before.items():
        assert now.get(path) == digest, f"key {path} was changed or removed"
    if cli:
        r = run(["--dir", store, "doctor"], env=base_env(MAILCA_NOW=NOW))
        assert r.returncode == 0 and "is consistent" in r.stdout, r.stdout + r.stderr
    return {"pending": sum(1 for f in findings if f.level == "pending"), "keys": now}


def start(store: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*mailca_argv(), "--dir", str(store), *args],
                            env=base_env(MAILCA_NOW=NOW), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(store: Path, args: list[str]) -> float:
    t = time.perf_counter()
    p = start(store, args)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, f"mailca {' '.join(args)} failed: {err.decode()}"
    return time.perf_counter() - t


def trials_for(tmp_path: Path, label: str, args_for, n: int, rng: random.Random, setup=None, verify=None) -> dict:
    store = tmp_path / label / "store"
    make_ca(store, "example.org", extra=["--no-root-passphrase"])
    for h in ("mail", "mx", "imap"):
        assert run(["--dir", store, "issue", f"{h}.example.org"], env=base_env(MAILCA_NOW=NOW)).returncode == 0
    if setup:
        setup(store)
    # the lifetime of an undisturbed run (median of 2) sets the kill window
    span = sorted(timed(store, args_for(store, -1 - i)) for i in range(2))[0]
    stats = {"trials": 0, "killed": 0, "interrupted_mid_write": 0}
    keys_before = key_hashes(store)
    for i in range(n):
        args = args_for(store, i)
        delay = rng.uniform(0.35 * span, 1.05 * span)
        before_idx = (store / "index.json").read_bytes()
        p = start(store, args)
        time.sleep(delay)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            stats["killed"] += 1
        p.wait(timeout=60)
        info = check_store(store, keys_before, cli=(i % 10 == 0))
        if p.returncode == -signal.SIGKILL and (info["pending"] or (store / "index.json").read_bytes() != before_idx
                                                or len(info["keys"]) != len(keys_before)):
            stats["interrupted_mid_write"] += 1
        keys_before = info["keys"]
        # the next run of the same command completes and finishes the interrupted one
        r = subprocess.run([*mailca_argv(), "--dir", str(store), *args], env=base_env(MAILCA_NOW=NOW),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"next run of mailca {' '.join(args)} failed after a kill at {delay:.3f}s: {r.stderr}"
        info = check_store(store, keys_before)
        assert info["pending"] == 0, "a completed run left an interrupted operation behind"
        keys_before = info["keys"]
        stats["trials"] += 1
    if verify:
        verify(store)
    return stats


# scripts/test.sh re-runs this file under faketime at three offsets with a quarter of the trials
# (MAILCA_FAULT_TRIALS_SCALE=0.25): the clock check needs the kills, not the full statistics.
SCALE = float(os.environ.get("MAILCA_FAULT_TRIALS_SCALE", "1"))


def scaled(n: int) -> int:
    return max(1, round(n * SCALE))


def test_kill9_at_random_moments(tmp_path):
    rng = random.Random(int(os.environ.get("MAILCA_FAULT_SEED", "0")) or None)
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"b{i}.example.org\n" for i in range(12)))
    plans = [
        # the same hosts every trial: each run replaces the live certificates (--replace)
        ("issue", lambda s, i: ["issue", "mail.example.org", "--san", "smtp.example.org", "--replace"], scaled(25)),
        ("batch", lambda s, i: ["issue", "--batch", str(batch), "--replace"], scaled(20)),
        ("renew", lambda s, i: ["renew", "--days-before", "3650"], scaled(25)),
        ("renew-new-key", lambda s, i: ["renew", "--new-key", "--days-before", "3650"], scaled(25)),
    ]
    if has_command("crl"):
        plans.append(("crl", lambda s, i: ["crl"], scaled(10)))
    if has_command("revoke"):
        def revoke_args(s, i):
            name = f"rv{i + 10}.example.org"
            r = run(["--dir", s, "issue", name], env=base_env(MAILCA_NOW=NOW))
            assert r.returncode == 0, r.stderr
            return ["revoke", name, "--reason", "superseded"]
        plans.append(("revoke", revoke_args, scaled(10)))

    def all_revoked(s):
        """Every certificate a killed-then-rerun revoke named is revoked, and renew skips it."""
        rows = json.loads(run(["--dir", s, "status", "--json"], env=base_env(MAILCA_NOW=NOW)).stdout)["certificates"]
        states = {r["name"]: r["state"] for r in rows if r["name"].startswith("rv")}
        assert states and set(states.values()) == {"revoked"}, states
        r = run(["--dir", s, "renew", "--dry-run", "--json", "--days-before", "3650"], env=base_env(MAILCA_NOW=NOW))
        assert not [x for x in json.loads(r.stdout)["renewed"] if x["name"].startswith("rv")]

    total = {}
    t0 = time.perf_counter()
    for label, fn, n in plans:
        total[label] = trials_for(tmp_path, label, fn, n, rng, verify=all_revoked if label == "revoke" else None)
    elapsed = time.perf_counter() - t0
    trials = sum(s["trials"] for s in total.values())
    mid = sum(s["interrupted_mid_write"] for s in total.values())
    print(f"\nfault injection: {trials} trials in {elapsed:.1f}s: {json.dumps(total)}")
    assert trials >= scaled(100)
    # the kills really hit operations in flight, not only idle start-up
    assert mid >= scaled(15), total

"""The scheduled job ('mailca auto', what 'mailca schedule' makes the timer run) against real
DNS: a Knot primary + secondary (signed zone, TSIG updates) and a validating unbound on
loopback (tests/dns_harness.py).  The gate's clock is MAILCA_NOW (offsets from one captured
moment); DNS is real.  The zone's SOA minimum (negative-cache TTL, 40 s) is longer than the
records' TTL (15 s), so the negative-cache rule of the gate is visible."""

from __future__ import annotations

import datetime as dt
import json
import shlex

import pytest

from conftest import CAHandle, base_env, require, run
from dns_harness import DnsHarness

HOST = "mail.example.org"
DAY = 86400
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def at(seconds: int, **extra) -> dict:
    return base_env(MAILCA_NOW=(NOW + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra)


def iso(seconds: int) -> str:
    return (NOW + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def dnsz(tmp_path_factory):
    for t in ("knotd", "knotc", "kdig", "unbound"):
        require(t)
    with DnsHarness(tmp_path_factory.mktemp("dns"), "example.org", secondary=True, base="127.0.54", neg_ttl=40) as h:
        yield h


def new_ca(tmp_path, profile: str | None = None) -> CAHandle:
    d = tmp_path / "store"
    extra = []
    if profile is not None:
        p = tmp_path / "profile.toml"
        p.write_text(profile)
        extra = ["--profile", p]
    r = run(["--dir", d, "init", "--org", "Test Mail", "--domain", "example.org", *extra], env=at(0))
    assert r.returncode == 0, r.stderr
    ca = CAHandle(d, ("example.org",))
    ca.ok("issue", HOST, env=at(0))
    return ca


def wait_served(dnsz, owner, server, want: set[str], timeout=20.0) -> set[str]:
    import time

    deadline = time.monotonic() + timeout
    got = set()
    while time.monotonic() < deadline:
        got = dnsz.tlsa(owner, server)
        if got == want:
            return got
        time.sleep(0.2)
    return got


def served_everywhere(dnsz, owner, want: set[str]):
    for server in (dnsz.primary, dnsz.secondary, dnsz.resolver):
        got = wait_served(dnsz, owner, server, want)
        assert got == want, (server, got, want)


def remember(ca, dnsz, port, usage, *, resolver=True, secs=0):
    args = ["dane", "publish", HOST, "--port", port, "--usage", usage, "--ttl", "15", "--server", dnsz.primary,
            "--tsig-key-file", dnsz.tsig_file, "--remember", "--json"]
    if resolver:
        args += ["--resolver", dnsz.resolver, "--ns-port", str(dnsz.port)]
    r = ca.run(*args, env=at(secs))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wanted(ca, port, usage) -> set[str]:
    r = ca.ok("dane", HOST, "--json", "--port", port, "--usage", usage)
    return {x["rdata"] for x in json.loads(r.stdout)["records"]}


def job(ca, secs, *extra, env=None):
    """The argv 'mailca schedule --systemd' puts into ExecStart, run at clock +secs."""
    from mailca.lifecycle.schedule import parse_unit

    s = ca.ok("schedule", "--systemd", "--json", *extra)
    unit = json.loads(s.stdout)["files"]["mailca-renew.service"]
    argv = shlex.split(parse_unit(unit)["Service"]["ExecStart"])
    assert argv == json.loads(s.stdout)["argv"] and "auto" in argv
    import subprocess

    return subprocess.run(argv, env=env or at(secs), capture_output=True, text=True, timeout=120)


def test_remember_keeps_settings_not_secrets_and_schedule_runs_auto(tmp_path, dnsz):
    ca = new_ca(tmp_path)
    out = remember(ca, dnsz, "2601", "3")
    f = ca.dir / "dane-publish.json"
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    data = json.loads(f.read_text())
    rec = data["hosts"][HOST]
    assert rec["tsig_key_file"] == str(dnsz.tsig_file) and rec["resolver"] == dnsz.resolver and rec["ports"] == [2601]
    assert out["remembered"]["ttl"] == 15
    assert dnsz.secret not in f.read_text()
    s = json.loads(ca.ok("schedule", "--systemd", "--json", "--deploy-hook", "postfix reload").stdout)
    assert s["argv"][-5:] == ["auto", "--quiet", "--deploy-hook", "postfix reload"][-5:] or "auto" in s["argv"]
    text = json.dumps(s)
    assert dnsz.secret not in text and str(dnsz.tsig_file) not in text and dnsz.primary not in text
    # the job with nothing due: silent, exit 0
    r = job(ca, 10)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    # forget / remember again
    bad = ca.run("dane", "forget", "other.example.org")
    assert bad.returncode == 2 and "'other.example.org' is not remembered" in bad.stderr and HOST in bad.stderr, bad.stderr
    ca.ok("dane", "forget", HOST)
    assert json.loads(f.read_text())["hosts"] == {}
    remember(ca, dnsz, "2601", "3")
    rec = json.loads(f.read_text())["hosts"][HOST]
    # a hand-edited settings file is one clear error, nothing written
    f.write_text(json.dumps({"version": 1, "hosts": {HOST: {**rec, "ttl": "15"}}}))
    r = ca.run("auto", env=at(20))
    assert r.returncode == 3 and "dane-publish.json is corrupt" in r.stderr and "ttl" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


def test_auto_rotates_a_key_through_the_gate_and_prunes(tmp_path, dnsz):
    ca = new_ca(tmp_path, '[rekey]\nevery = "1d"\n')
    port, owner = "2602", "_2602._tcp.mail.example.org."
    flag = tmp_path / "reloaded"
    remember(ca, dnsz, port, "3")
    cur = wanted(ca, port, "3")
    hook = ("--deploy-hook", f"touch {flag}")
    r = job(ca, DAY // 2, *hook)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr  # key younger than rekey.every
    r = job(ca, DAY + 10, *hook, "--rekey-every", "1d")
    assert r.returncode == 0, r.stderr
    both = wanted(ca, port, "3")
    assert len(both) == 2 and cur < both
    served_everywhere(dnsz, owner, both)
    r = job(ca, DAY + 11, *hook)
    assert r.returncode == 0 and not flag.exists(), r.stdout + r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("mailca auto: waiting for DNS:") and "wait until" in r.stdout
    # the RRset did not exist before the first publish and the gate first saw it at +DAY+11:
    # a cached NODATA (SOA minimum 40 s) may live until then + 40 s; 2 x that counts
    assert f"wait until {iso(DAY + 91)}" in r.stdout and "40s (SOA minimum)" in r.stdout, r.stdout
    j = json.loads(ca.run("auto", "--json", env=at(DAY + 60)).stdout)
    assert j["ok"] and j["held"] and not j["actions"]
    r = job(ca, DAY + 91, *hook)
    assert r.returncode == 0, r.stderr
    assert flag.exists() and "waiting" not in r.stdout and r.stdout.startswith("mailca auto: "), r.stdout
    new = both - cur
    assert wait_served(dnsz, owner, dnsz.primary, new) == new  # the old 3 1 1 is gone
    assert wanted(ca, port, "3") == new
    r = job(ca, DAY + 100, *hook)
    assert r.returncode == 0 and r.stdout == "", r.stdout  # steady state


def test_auto_intermediate_renewal_switches_leaves_after_the_gate(tmp_path, dnsz):
    """A 2-only (DANE-TA) deployment: the job renews the intermediate (inside its warning
    window), publishes the coming 2 0 1 beside the live one, switches the leaf only once DNS
    has served it for 2 x TTL, reloads, then removes the old 2 0 1."""
    ca = new_ca(tmp_path, "[ca]\nintermediate_days = 60\n[leaf]\ndays = 30\n[renew]\nintermediate_warn_days = 90\n")
    port, owner = "2603", "_2603._tcp.mail.example.org."
    flag = tmp_path / "reloaded"
    remember(ca, dnsz, port, "2")
    old_ta = wanted(ca, port, "2")
    served_everywhere(dnsz, owner, old_ta)
    leaf0 = (ca.live(HOST) / "cert.pem").read_bytes()
    # without the root passphrase the job says what to do and changes nothing
    r = ca.run("auto", env=at(5, MAILCA_PASSPHRASE=None))
    assert r.returncode == 0 and "without the root passphrase" in r.stderr and "--passphrase-file" in r.stderr, r.stderr
    pf = tmp_path / "pass"
    pf.write_text(base_env()["MAILCA_PASSPHRASE"] + "\n")
    pf.chmod(0o600)
    hook = ("--deploy-hook", f"touch {flag}", "--passphrase-file", str(pf))
    noenv = dict(MAILCA_PASSPHRASE=None)
    r = job(ca, 10, *hook, env=at(10, **noenv))
    assert r.returncode == 0, r.stderr
    both = wanted(ca, port, "2")
    assert len(both) == 2 and old_ta < both
    assert (ca.live(HOST) / "cert.pem").read_bytes() == leaf0
    dnsz.flush_resolver()  # it cached the one-record set a moment ago (TTL 15 s); the gate's clock is injected
    served_everywhere(dnsz, owner, both)
    r = job(ca, 11, *hook, env=at(11, **noenv))
    assert r.returncode == 0 and "waiting for DNS" in r.stdout and "renewal of mail.example.org" in r.stdout, r.stdout
    # 2 x TTL after the new 2 0 1 was first seen (the run at +10 asked DNS right after publishing
    # it; if the secondary lagged, +11) is +40/+41, but the owner's RRset was new at +0 and first
    # seen everywhere at +10: a cached NODATA (40 s) counts too -> +90
    assert any(f"wait until {iso(t)}" in r.stdout for t in (90, 91)) and not flag.exists(), r.stdout
    r = job(ca, 41, *hook, env=at(41, **noenv))
    assert r.returncode == 0 and "waiting for DNS" in r.stdout, r.stdout
    assert (ca.live(HOST) / "cert.pem").read_bytes() == leaf0
    r = job(ca, 91, *hook, env=at(91, **noenv))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (ca.live(HOST) / "cert.pem").read_bytes() != leaf0 and flag.exists()
    assert (ca.live(HOST) / "chain.pem").read_bytes() == ca.intermediate.read_bytes()
    new = both - old_ta
    assert wait_served(dnsz, owner, dnsz.primary, new) == new  # the old 2 0 1 went after the reload


def test_auto_without_a_resolver_2_only_rotation_uses_printed_time(tmp_path, dnsz):
    """No resolver remembered: the printed-time rule (and it says so); a 2-only deployment
    still commits (its 2 0 1 covers the next key)."""
    ca = new_ca(tmp_path, '[rekey]\nevery = "1d"\n')
    port = "2604"
    remember(ca, dnsz, port, "2", resolver=False)
    r = ca.run("auto", env=at(DAY + 10))
    assert r.returncode == 0 and "staged a next" in r.stdout, r.stdout + r.stderr
    r = ca.run("auto", "--json", env=at(DAY + 11))
    j = json.loads(r.stdout)
    assert r.returncode == 0 and j["held"] and f"wait until {iso(DAY + 40)}" in j["held"][0], j
    assert any("DNS not asked" in w for w in j["warnings"]) or "printed" in j["held"][0], j
    before = (ca.live(HOST) / "cert.pem").read_bytes()
    r = ca.run("auto", "--json", env=at(DAY + 40))
    j = json.loads(r.stdout)
    assert r.returncode == 0 and any("now uses the staged key" in a for a in j["actions"]), j
    assert any("DNS not asked" in w for w in j["warnings"]), j
    assert (ca.live(HOST) / "cert.pem").read_bytes() != before


def test_gate_counts_the_negative_cache_ttl_of_a_new_rrset(tmp_path, dnsz):
    """The owner had no TLSA RRset: a resolver may cache that NODATA for the SOA minimum
    (40 s here), longer than the records' TTL (15 s): the gate waits 2 x 40 s."""
    ca = new_ca(tmp_path)
    port, owner = "2605", "_2605._tcp.mail.example.org."
    ca.ok("rekey", HOST, "--stage", env=at(0))
    r = ca.run("dane", "publish", HOST, "--port", port, "--usage", "3", "--ttl", "15", "--server", dnsz.primary,
               "--tsig-key-file", dnsz.tsig_file, env=at(0))
    assert r.returncode == 0, r.stderr
    served_everywhere(dnsz, owner, wanted(ca, port, "3"))

    def commit(secs):
        return ca.run("rekey", HOST, "--commit", "--resolver", dnsz.resolver, "--ns-port", str(dnsz.port),
                      "--port", port, env=at(secs))

    r = commit(1)
    assert r.returncode == 3 and f"wait until {iso(81)}" in r.stderr and "40s" in r.stderr, r.stderr
    r = commit(31)  # 2 x TTL is over, 2 x the negative TTL is not
    assert r.returncode == 3 and f"wait until {iso(81)}" in r.stderr, r.stderr
    r = commit(81)
    assert r.returncode == 0, r.stderr


def test_auto_refreshes_the_crl_into_its_published_place_before_next_update(tmp_path):
    """No DNS needed: the CRL step of the job ('schedule --crl-out FILE'), on the injected clock."""
    from cryptography import x509

    ca = new_ca(tmp_path)
    out = tmp_path / "www" / "ca.crl"
    out.parent.mkdir()

    def crl():
        c = x509.load_der_x509_crl(out.read_bytes())
        return c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number, c.next_update_utc

    r = job(ca, 60, "--crl-out", str(out))
    assert r.returncode == 0 and r.stdout == "mailca auto: 1 change(s)\n", r.stdout + r.stderr  # --quiet: the status
    j = json.loads(ca.ok("auto", "--json", "--crl-out", str(out), env=at(120)).stdout)
    assert j["actions"] == [] and j["status"] == "mailca auto: nothing to do", j
    n1, next1 = crl()
    assert next1 == NOW + dt.timedelta(seconds=60, days=7)  # profile crl.next_update_days = 7
    r = job(ca, 3 * DAY, "--crl-out", str(out))  # more than half of its life left: untouched
    assert r.returncode == 0 and r.stdout == "" and crl() == (n1, next1), r.stdout
    r = job(ca, 4 * DAY, "--crl-out", str(out))  # less than half left: a new one, before nextUpdate
    assert r.returncode == 0, r.stderr
    n2, next2 = crl()
    assert n2 == n1 + 1 and next2 == NOW + dt.timedelta(days=11)
    out.unlink()  # the published copy went missing: put back on the next run
    assert job(ca, 4 * DAY + 60, "--crl-out", str(out)).returncode == 0 and crl()[0] == n2 + 1


def test_auto_remembered_tsig_file_gone_is_one_clear_error_and_nothing_else_stops(tmp_path, dnsz):
    import shutil

    ca = new_ca(tmp_path)
    key = tmp_path / "update.key"
    shutil.copy(dnsz.tsig_file, key)
    r = ca.run("dane", "publish", HOST, "--port", "2606", "--ttl", "15", "--server", dnsz.primary, "--tsig-key-file",
               key, "--remember", env=at(0))
    assert r.returncode == 0 and "Remembered for the scheduled job" in r.stdout, r.stderr
    key.unlink()
    r = ca.run("auto", "--days-before", "3650", env=at(60))  # the leaf is due: it renews all the same
    assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
    assert "TSIG key file remembered for mail.example.org is unusable" in r.stderr and "--remember" in r.stderr
    assert "renewed mail.example.org" in r.stdout


def test_auto_runs_one_at_a_time(tmp_path):
    import fcntl
    import os

    ca = new_ca(tmp_path)
    before = (ca.live(HOST) / "cert.pem").read_bytes()
    fd = os.open(ca.dir / ".auto.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = ca.run("auto", "--days-before", "3650", env=at(60))  # due, but another run holds the job lock
        assert r.returncode == 0, r.stderr
        assert r.stdout == "mailca auto: another 'mailca auto' run is in progress; this one did nothing\n", r.stdout
        assert (ca.live(HOST) / "cert.pem").read_bytes() == before
    finally:
        os.close(fd)
    r = ca.run("auto", "--days-before", "3650", env=at(60))
    assert r.returncode == 0 and "renewed mail.example.org" in r.stdout, r.stdout + r.stderr


def test_auto_unreachable_resolver_blocks_the_switch_with_a_clear_message(tmp_path, dnsz):
    ca = new_ca(tmp_path, '[rekey]\nevery = "1d"\n')
    r = ca.run("dane", "publish", HOST, "--port", "2607", "--usage", "3", "--ttl", "15", "--server", dnsz.primary,
               "--tsig-key-file", dnsz.tsig_file, "--resolver", "127.0.0.1@9", "--remember", env=at(0))
    assert r.returncode == 0, r.stderr
    assert ca.run("auto", env=at(DAY + 10)).returncode == 0  # stages the next key
    before = (ca.live(HOST) / "cert.pem").read_bytes()
    r = ca.run("auto", env=at(DAY + 1000))
    assert r.returncode == 6, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "cannot ask the validating resolver" in r.stderr and "127.0.0.1@9" in r.stderr
    assert "nothing was switched" in r.stderr
    assert (ca.live(HOST) / "cert.pem").read_bytes() == before


def test_auto_completes_a_hand_run_intermediate_renewal(tmp_path, dnsz):
    """No passphrase for the job: the admin runs 'ca renew-intermediate'; the job publishes the
    coming 2 0 1, switches the leaf once the gate opens and removes the old record."""
    ca = new_ca(tmp_path)
    port, owner = "2608", "_2608._tcp.mail.example.org."
    remember(ca, dnsz, port, "2")
    old_ta = wanted(ca, port, "2")
    served_everywhere(dnsz, owner, old_ta)
    ca.ok("ca", "renew-intermediate", env=at(5))
    noenv = dict(MAILCA_PASSPHRASE=None)
    r = ca.run("auto", "--json", env=at(10, **noenv))
    j = json.loads(r.stdout)
    assert r.returncode == 0 and j["held"] and any("published" in a for a in j["actions"]), j
    both = wanted(ca, port, "2")
    dnsz.flush_resolver()  # it cached the one-record set a moment ago (TTL 15 s); the gate's clock is injected
    served_everywhere(dnsz, owner, both)
    assert ca.run("auto", env=at(11, **noenv)).stdout.startswith("mailca auto: waiting for DNS:")
    r = ca.run("auto", "--json", env=at(200, **noenv))
    j = json.loads(r.stdout)
    assert r.returncode == 0 and not j["held"] and any(a.startswith("renewed mail.example.org") for a in j["actions"]), j
    assert (ca.live(HOST) / "chain.pem").read_bytes() == ca.intermediate.read_bytes()
    new = both - old_ta
    assert wait_served(dnsz, owner, dnsz.primary, new) == new

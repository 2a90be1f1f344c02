"""DANE against real DNS: a Knot primary + Knot secondary (signed zone, TSIG updates) and a
validating unbound on loopback (tests/dns_harness.py).  `mailca dane publish` (RFC 2136 +
TSIG via dnspython) and the rekey gate that asks every authoritative server and the
validating resolver.  The gate's clock is MAILCA_NOW; DNS is real."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conftest import base_env, make_ca, require
from dns_harness import DnsHarness

HOST = "mail.example.org"


@pytest.fixture(scope="module")
def dnsz(tmp_path_factory):
    for t in ("knotd", "knotc", "kdig", "unbound"):
        require(t)
    with DnsHarness(tmp_path_factory.mktemp("dns"), "example.org", secondary=True) as h:
        yield h


def test_harness_signed_zone_validates_unsigned_does_not(dnsz):
    signed = dnsz.kdig("MX", "example.org", extra=["+dnssec"])
    assert "status: NOERROR" in signed.stdout and " ad" in signed.stdout.split("Flags:")[1].splitlines()[0], signed.stdout
    unsigned = dnsz.kdig("MX", "example.net", extra=["+dnssec"])
    assert "status: NOERROR" in unsigned.stdout and " ad" not in unsigned.stdout.split("Flags:")[1].splitlines()[0]
    # the secondary serves the same (signed) zone, transferred from the primary
    sec = dnsz.kdig("SOA", "example.org", server=dnsz.secondary)
    assert " aa" in sec.stdout.split("Flags:")[1].splitlines()[0], sec.stdout


@pytest.fixture(scope="module")
def mailca_ca(tmp_path_factory):
    ca = make_ca(tmp_path_factory.mktemp("dane-dns") / "store", "example.org")
    ca.issue(HOST, "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    return ca


def wanted(ca, *args) -> set[str]:
    r = ca.ok("dane", HOST, "--json", "--ttl", "15", *args)
    return {x["rdata"].lower() for x in json.loads(r.stdout)["records"]}


def wait_served(dnsz, owner, server, want: set[str], timeout=20.0) -> set[str]:
    """Poll (bounded) until ``server`` serves exactly ``want`` at ``owner``."""
    import time

    deadline = time.monotonic() + timeout
    got = set()
    while time.monotonic() < deadline:
        got = dnsz.tlsa(owner, server)
        if got == want:
            return got
        time.sleep(0.2)
    return got


def publish(ca, dnsz, *args, **kw):
    return ca.run("dane", "publish", HOST, "--server", dnsz.primary, "--tsig-key-file", dnsz.tsig_file, "--ttl", "15",
                  *args, **kw)


def test_publish_adds_records_and_removes_stale_ones(mailca_ca, dnsz):
    owner = f"_25._tcp.{HOST}."
    stale = "3 1 1 " + "ab" * 32
    dnsz.update_direct([f"{owner} 15 TLSA {stale}"])
    assert stale in wait_served(dnsz, owner, dnsz.primary, {stale})
    want = wanted(mailca_ca)
    assert len(want) == 3  # ecdsa + rsa 3 1 1, intermediate 2 0 1
    dry = publish(mailca_ca, dnsz, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    acts = {(c["action"], c["rdata"]) for c in json.loads(dry.stdout)["changes"]}
    assert ("delete", stale) in acts and {("add", w) for w in want} <= acts
    assert dnsz.tlsa(owner, dnsz.primary) == {stale}  # dry run sent nothing
    r = publish(mailca_ca, dnsz)
    assert r.returncode == 0, r.stderr
    assert "3 added, 1 removed" in r.stdout
    assert wait_served(dnsz, owner, dnsz.primary, want) == want
    assert wait_served(dnsz, owner, dnsz.secondary, want) == want  # NOTIFY + IXFR to the secondary
    # the validating resolver serves the set with AD: Knot signed the update
    v = dnsz.kdig("TLSA", owner, extra=["+dnssec"])
    assert " ad" in v.stdout.split("Flags:")[1].splitlines()[0] and "RRSIG" in v.stdout, v.stdout
    again = publish(mailca_ca, dnsz)
    assert again.returncode == 0 and "0 added, 0 removed" in again.stdout


def test_publish_with_a_wrong_tsig_secret_changes_nothing(mailca_ca, dnsz, tmp_path):
    owner = f"_465._tcp.{HOST}."
    bad = tmp_path / "bad.key"
    bad.write_text('key "mailca-update" {\n\talgorithm hmac-sha256;\n\tsecret "' + "A" * 43 + '=";\n};\n')
    r = mailca_ca.run("dane", "publish", HOST, "--port", "465", "--server", dnsz.primary, "--tsig-key-file", bad)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("mailca: error: ") and "TSIG" in r.stderr and "Traceback" not in r.stderr
    assert dnsz.tlsa(owner, dnsz.primary) == set()
    # and the key material never reaches the output
    assert "A" * 43 not in r.stderr + r.stdout


@pytest.mark.parametrize("server,msg", [("ns1.example.org", "not an IP address"), ("127.0.0.1@99999", "port")])
def test_publish_bad_server_is_a_usage_error(mailca_ca, dnsz, server, msg):
    r = mailca_ca.run("dane", "publish", HOST, "--server", server, "--tsig-key-file", dnsz.tsig_file)
    assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_nsupdate_script_runs_in_nsupdate_and_relative_names(mailca_ca, dnsz):
    require("nsupdate")
    import subprocess

    owner = f"_587._tcp.{HOST}."
    r = mailca_ca.ok("dane", HOST, "--port", "587", "--ttl", "15", "--format", "nsupdate", "--zone", "example.org")
    script = r.stdout.split("\n", 1)[1]  # first line is a ';' comment
    addr, port = dnsz.primary.split("@")
    p = subprocess.run(["nsupdate", "-k", str(dnsz.tsig_file)], input=f"server {addr} {port}\n" + script,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    want = wanted(mailca_ca, "--port", "587")
    assert wait_served(dnsz, owner, dnsz.primary, want) == want
    rel = mailca_ca.ok("dane", HOST, "--zone", "example.org", "--relative").stdout.splitlines()
    lines = [ln for ln in rel if not ln.startswith(";")]
    assert lines and all(ln.startswith("_25._tcp.mail 3600 IN TLSA ") for ln in lines), rel
    bad = mailca_ca.run("dane", HOST, "--zone", "example.net", "--relative")
    assert bad.returncode == 2 and "not inside" in bad.stderr


# ------------------------------------------------------------------ the DNS gate
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # captured once; every test clock is an offset


def at(seconds: int) -> dict:
    return base_env(MAILCA_NOW=(NOW + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"))


def iso(seconds: int) -> str:
    return (NOW + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ca_at(tmp_path, domain="example.org", host=HOST, extra=()):
    from conftest import CAHandle, run

    d = tmp_path / "store"
    r = run(["--dir", d, "init", "--org", "Test Mail", "--domain", domain, *extra], env=at(0))
    assert r.returncode == 0, r.stderr
    ca = CAHandle(d, (domain,))
    ca.ok("issue", host, env=at(0))
    return ca


def commit(ca, dnsz, port, secs, *extra, host=HOST):
    return ca.run("rekey", host, "--commit", "--resolver", dnsz.resolver, "--ns-port", str(dnsz.port), "--port", port,
                  *extra, env=at(secs))


def served_everywhere(dnsz, owner, want: set[str]):
    for server in (dnsz.primary, dnsz.secondary, dnsz.resolver):
        got = wait_served(dnsz, owner, server, want)
        assert got == want, (server, got, want)


def test_gate_waits_for_every_server_and_twice_the_served_ttl(tmp_path, dnsz):
    ca = ca_at(tmp_path)
    port, owner = "2501", f"_2501._tcp.{HOST}."
    staged = json.loads(ca.ok("rekey", HOST, "--stage", "--json", env=at(0)).stdout)["staged"][0]
    nxt = f"3 1 1 {staged['spki_sha256']}"
    # nothing published: every server is named as missing
    r = commit(ca, dnsz, port, 0)
    assert r.returncode == 3 and "DNS gate holds" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "ns1.example.org." in r.stderr and "ns2.example.org." in r.stderr and "resolver" in r.stderr
    p = ca.run("dane", "publish", HOST, "--port", port, "--usage", "3", "--ttl", "15", "--server", dnsz.primary,
               "--tsig-key-file", dnsz.tsig_file, env=at(0))
    assert p.returncode == 0, p.stderr
    want = {f"3 1 1 {json.loads(ca.ok('dane', HOST, '--json', '--usage', '3').stdout)['records'][0]['data']}", nxt}
    served_everywhere(dnsz, owner, want)
    # seen everywhere first at +1: the clock starts there, not when it was printed/published
    r = commit(ca, dnsz, port, 1)
    assert r.returncode == 3 and f"seen everywhere since {iso(1)}" in r.stderr and f"wait until {iso(31)}" in r.stderr, r.stderr
    seen = json.loads((ca.dir / "dane-seen.json").read_text())["seen"]
    assert seen[f"{owner} {nxt}"] == {"first_seen": iso(1), "ttl": 15}
    assert oct((ca.dir / "dane-seen.json").stat().st_mode & 0o777) == "0o600"
    r = commit(ca, dnsz, port, 30)
    assert r.returncode == 3 and f"wait until {iso(31)}" in r.stderr
    r = commit(ca, dnsz, port, 31, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["certificates"][0]["spki_sha256"] == staged["spki_sha256"]


def test_gate_lets_a_ta_only_deployment_commit(tmp_path, dnsz):
    ca = ca_at(tmp_path)
    port, owner = "2502", f"_2502._tcp.{HOST}."
    p = ca.run("dane", "publish", HOST, "--port", port, "--usage", "2", "--ttl", "15", "--server", dnsz.primary,
               "--tsig-key-file", dnsz.tsig_file, env=at(0))
    assert p.returncode == 0, p.stderr
    ta = {r["rdata"] for r in json.loads(ca.ok("dane", HOST, "--json", "--usage", "2").stdout)["records"]}
    served_everywhere(dnsz, owner, ta)
    ca.ok("rekey", HOST, "--stage", env=at(0))
    r = commit(ca, dnsz, port, 0)
    assert r.returncode == 3 and f"wait until {iso(30)}" in r.stderr, r.stderr
    r = commit(ca, dnsz, port, 30)
    assert r.returncode == 0, r.stderr


def test_gate_unreachable_resolver_blocks_with_a_clear_message(tmp_path, dnsz):
    ca = ca_at(tmp_path)
    ca.ok("rekey", HOST, "--stage", env=at(0))
    from conftest import snapshot

    before = snapshot(ca.dir)
    r = ca.run("rekey", HOST, "--commit", "--resolver", "127.0.0.1@9", env=at(100000))
    assert r.returncode == 6, (r.returncode, r.stderr)
    assert r.stderr.startswith("mailca: error: DNS gate: cannot ask the validating resolver") and "127.0.0.1@9" in r.stderr
    assert "nothing was switched" in r.stderr and r.stderr.count("\n") == 1
    assert snapshot(ca.dir) == before


def test_gate_unsigned_zone_never_opens(tmp_path, dnsz):
    host = "mail.example.net"
    ca = ca_at(tmp_path, "example.net", host)
    ca.ok("rekey", host, "--stage", env=at(0))
    p = ca.run("dane", "publish", host, "--port", "2503", "--ttl", "15", "--server", dnsz.primary,
               "--tsig-key-file", dnsz.tsig_file, env=at(0))
    assert p.returncode == 0, p.stderr
    for secs in (0, 1000):
        r = commit(ca, dnsz, "2503", secs, host=host)
        assert r.returncode == 3 and "no AD bit" in r.stderr and "not DNSSEC-signed" in r.stderr, r.stderr


def test_gate_lagging_secondary_blocks_the_commit(tmp_path, dnsz):
    ca = ca_at(tmp_path)
    port, owner = "2504", f"_2504._tcp.{HOST}."
    ca.ok("rekey", HOST, "--stage", env=at(0))
    dnsz.freeze_secondary()
    try:
        p = ca.run("dane", "publish", HOST, "--port", port, "--usage", "3", "--ttl", "15", "--server", dnsz.primary,
                   "--tsig-key-file", dnsz.tsig_file, env=at(0))
        assert p.returncode == 0, p.stderr
        want = {r["rdata"] for r in json.loads(ca.ok("dane", HOST, "--json", "--usage", "3").stdout)["records"]}
        assert wait_served(dnsz, owner, dnsz.primary, want) == want
        for secs in (0, 1000):
            r = commit(ca, dnsz, port, secs)
            assert r.returncode == 3 and "not served by ns2.example.org." in r.stderr, r.stderr
            assert "ns1.example.org." not in r.stderr
    finally:
        assert dnsz.knotc("secondary", "zone-thaw", dnsz.zone).returncode == 0


def test_renewal_onto_a_renewed_intermediate_waits_for_its_2_0_1(tmp_path, dnsz):
    """Staged intermediate renewal for a TA-only deployment: 'ca renew-intermediate', then the
    leaves switch only after the new 2 0 1 has been served everywhere for 2 x TTL."""
    ca = ca_at(tmp_path)
    port, owner = "2505", f"_2505._tcp.{HOST}."

    def pub(secs):
        r = ca.run("dane", "publish", HOST, "--port", port, "--usage", "2", "--ttl", "15", "--server", dnsz.primary,
                   "--tsig-key-file", dnsz.tsig_file, "--json", env=at(secs))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["changes"]

    def renew(secs):
        return ca.run("renew", "--all", "--force", "--resolver", dnsz.resolver, "--ns-port", str(dnsz.port),
                      "--dane-port", port, "--json", env=at(secs))

    pub(0)
    old_ta = {r["rdata"] for r in json.loads(ca.ok("dane", HOST, "--json", "--usage", "2").stdout)["records"]}
    leaf0 = (ca.live(HOST) / "cert.pem").read_bytes()
    ca.ok("ca", "renew-intermediate", env=at(0))
    # the new 2 0 1 is not in DNS: the leaf stays on the old chain
    r = renew(1)
    assert r.returncode == 0 and "held back by the DNS gate" in r.stderr and "not served by" in r.stderr, r.stderr
    assert json.loads(r.stdout)["renewed"] == []
    assert (ca.live(HOST) / "cert.pem").read_bytes() == leaf0
    # publish: the live chain's 2 0 1 (old) plus the coming one
    changes = pub(1)
    assert [c["action"] for c in changes].count("add") == 1 and [c["action"] for c in changes].count("keep") == 1
    both = {r["rdata"] for r in json.loads(ca.ok("dane", HOST, "--json", "--usage", "2").stdout)["records"]}
    assert len(both) == 2 and old_ta < both
    served_everywhere(dnsz, owner, both)
    r = renew(2)
    assert r.returncode == 0 and f"wait until {iso(32)}" in r.stderr, r.stderr
    r = renew(32)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["renewed"]) == 1 and (ca.live(HOST) / "cert.pem").read_bytes() != leaf0
    # the leaf now sends the new intermediate; the next publish removes the old 2 0 1
    changes = pub(33)
    assert [c["action"] for c in changes] == ["keep", "delete"] and changes[1]["rdata"] in old_ta


def test_unattended_rotation_stage_publish_gate_commit_reload_prune(tmp_path, dnsz):
    """'dane rotate' run by a timer: every step advances the rotation with no human step.
    (Uses the primary only through updates; ns2 must follow by NOTIFY: runs before the tamper test.)"""
    prof = tmp_path / "rotating.toml"
    prof.write_text('[rekey]\nevery = "1d"\n')  # the policy lives in the CA's profile
    ca = ca_at(tmp_path, extra=["--profile", prof])
    port, owner = "2507", f"_2507._tcp.{HOST}."
    flag = tmp_path / "reloaded"
    args = ["dane", "rotate", HOST, "--port", port, "--usage", "3", "--ttl", "15",
            "--server", dnsz.primary, "--tsig-key-file", dnsz.tsig_file, "--resolver", dnsz.resolver,
            "--ns-port", str(dnsz.port), "--deploy-hook", f"touch {flag}"]
    day = 86400
    r = ca.run(*args, env=at(0))
    assert r.returncode == 0 and "publish: added" in r.stdout and "Staged" not in r.stdout, r.stdout + r.stderr
    cur = {x["rdata"] for x in json.loads(ca.ok("dane", HOST, "--json", "--usage", "3").stdout)["records"]}
    assert ca.run(*args, env=at(day // 2)).stdout == ""  # key younger than --every: nothing to do
    r = ca.run(*args, env=at(day + 10))
    assert r.returncode == 0 and "Staged a next" in r.stdout and "publish next: added" in r.stdout, r.stdout + r.stderr
    both = {x["rdata"] for x in json.loads(ca.ok("dane", HOST, "--json", "--usage", "3").stdout)["records"]}
    served_everywhere(dnsz, owner, both)
    r = ca.run(*args, env=at(day + 11))
    assert r.returncode == 0 and "waiting: DNS gate holds" in r.stdout and not flag.exists(), r.stdout + r.stderr
    r = ca.run(*args, env=at(day + 41))
    assert r.returncode == 0, r.stderr
    assert "now uses the staged key" in r.stdout and "deploy hook ok" in r.stdout and "prune: removed" in r.stdout, r.stdout
    assert flag.exists()
    new = both - cur
    assert wait_served(dnsz, owner, dnsz.primary, new) == new  # only the new key's record is left
    assert ca.run(*args, env=at(day + 100)).stdout == ""  # steady state again


def test_gate_record_tampered_on_one_authoritative_blocks_and_restarts_the_clock(tmp_path, dnsz):
    """Runs last in this module: it edits the secondary's copy of the zone behind the primary's back."""
    ca = ca_at(tmp_path)
    port, owner = "2506", f"_2506._tcp.{HOST}."
    staged = json.loads(ca.ok("rekey", HOST, "--stage", "--json", env=at(0)).stdout)["staged"][0]
    p = ca.run("dane", "publish", HOST, "--port", port, "--usage", "3", "--ttl", "15", "--server", dnsz.primary,
               "--tsig-key-file", dnsz.tsig_file, env=at(0))
    assert p.returncode == 0, p.stderr
    want = {r["rdata"] for r in json.loads(ca.ok("dane", HOST, "--json", "--usage", "3").stdout)["records"]}
    served_everywhere(dnsz, owner, want)
    r = commit(ca, dnsz, port, 1)
    assert r.returncode == 3 and f"seen everywhere since {iso(1)}" in r.stderr, r.stderr
    # ns2's copy now carries a different "next" record
    cur = [x for x in want if x != f"3 1 1 {staged['spki_sha256']}"][0]
    for c in (["zone-begin", "example.org"], ["zone-unset", "example.org", f"_{port}._tcp.mail", "TLSA"],
              ["zone-set", "example.org", f"_{port}._tcp.mail", "15", "TLSA", *cur.split()],
              ["zone-set", "example.org", f"_{port}._tcp.mail", "15", "TLSA", "3", "1", "1", "cd" * 32],
              ["zone-commit", "example.org"]):
        k = dnsz.knotc("secondary", *c)
        assert k.returncode == 0 and "error" not in k.stdout.lower(), (c, k.stdout, k.stderr)
    assert wait_served(dnsz, owner, dnsz.secondary, {cur, "3 1 1 " + "cd" * 32}) == {cur, "3 1 1 " + "cd" * 32}
    before = (ca.live(HOST) / "cert.pem").read_bytes()
    r = commit(ca, dnsz, port, 1000)  # long past 2 x TTL: still refused
    assert r.returncode == 3 and "not served by ns2.example.org." in r.stderr and "ns1.example.org." not in r.stderr, r.stderr
    assert (ca.live(HOST) / "cert.pem").read_bytes() == before
    seen = json.loads((ca.dir / "dane-seen.json").read_text())["seen"]
    assert f"{owner} 3 1 1 {staged['spki_sha256']}" not in seen  # the clock starts again once ns2 serves it

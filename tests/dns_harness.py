"""A DNSSEC-signed zone on loopback: Knot (automatic signing, TSIG-signed RFC 2136 updates)
as the zone's primary, optionally a Knot secondary (AXFR from the primary), and a validating
unbound with the zone's KSK as its only trust anchor (stub-zone to the authoritatives).

Everything binds to 127.0.0.x on one free high port; nothing touches the machine's resolver
or any system instance.  The zone publishes ``ns1``/``ns2`` with A records pointing at the
harness's loopback addresses, so a client that follows the NS set reaches the real servers
when it is told the port (mailca: ``--ns-port``).

    with DnsHarness(tmp_path, "example.org") as dns:
        dns.resolver            # "127.0.0.x@PORT" (validating unbound)
        dns.primary             # "127.0.0.y@PORT" (Knot, accepts updates signed with dns.tsig_file)
        dns.kdig("TLSA", "_25._tcp.mail.example.org", server=dns.resolver)
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

KEY_NAME = "mailca-update"


def free_port(addr: str) -> int:
    """A port free for both UDP and TCP on ``addr``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((addr, 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((addr, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _wait_udp(addr: str, port: int, qname: str, timeout: float = 20.0, *, any_rcode: bool = False) -> None:
    """Until ``addr@port`` answers a SOA query (bounded; ``any_rcode``: SERVFAIL counts)."""
    import dns.message
    import dns.query

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = dns.query.udp(dns.message.make_query(qname, "SOA"), addr, port=port, timeout=1)
            if (r.rcode() == 0 and r.answer) or any_rcode:
                return
            last = f"rcode {r.rcode()}"
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"DNS server {addr}@{port} did not answer for {qname}: {last}")


class DnsHarness:
    def __init__(self, workdir: Path, zone: str = "example.org", *, secondary: bool = False,
                 unsigned_zone: str | None = "example.net", base: str = "127.0.53", ttl: int = 15,
                 mx_host: str = "mail", mx_addr: str = "127.0.0.1", neg_ttl: int | None = None):
        self.dir = Path(workdir)
        self.zone = zone.rstrip(".")
        self.unsigned_zone = unsigned_zone
        self.want_secondary = secondary
        self.ttl = ttl
        self.neg_ttl = neg_ttl or ttl  # SOA TTL and MINIMUM: how long "no such record" may be cached
        self.mx_host = mx_host
        self.mx_addr = mx_addr
        # one loopback address per server: NS records can name them (no per-NS port in DNS)
        n = os.getpid() % 200 + 2
        self.primary_addr = f"{base}.{n}"
        self.secondary_addr = f"{base}.{n + 1}" if secondary else None
        self.resolver_addr = f"{base}.{n + 50}"
        self.port = free_port(self.primary_addr)
        self.procs: list[subprocess.Popen] = []
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.tsig_file = self.dir / "update.key"
        self.secondary_paused = False

    # ------------------------------------------------------------------ addresses
    @property
    def primary(self) -> str:
        return f"{self.primary_addr}@{self.port}"

    @property
    def secondary(self) -> str | None:
        return f"{self.secondary_addr}@{self.port}" if self.secondary_addr else None

    @property
    def resolver(self) -> str:
        return f"{self.resolver_addr}@{self.port}"

    # ------------------------------------------------------------------ set-up
    def _zone_text(self, zone: str, secondary_ns: bool) -> str:
        lines = [
            f"$ORIGIN {zone}.",
            f"$TTL {self.ttl}",
            f"@ {self.neg_ttl} SOA ns1.{zone}. hostmaster.{zone}. 1 60 10 600 {self.neg_ttl}",
            f"@ NS ns1.{zone}.",
            f"ns1 A {self.primary_addr}",
            f"@ MX 10 {self.mx_host}.{zone}.",
            f"{self.mx_host} A {self.mx_addr}",
        ]
        if secondary_ns:
            lines += [f"@ NS ns2.{zone}.", f"ns2 A {self.secondary_addr}"]
        return "\n".join(lines) + "\n"

    def _knot_conf(self, role: str, addr: str, rundir: Path) -> str:
        zones = [self.zone] + ([self.unsigned_zone] if self.unsigned_zone else [])
        out = [
            "server:",
            f"    rundir: {rundir}",
            f"    listen: {addr}@{self.port}",
            "log:",
            "  - target: stderr",
            "    any: info",
            "database:",
            f"    storage: {rundir}/db",
            "key:",
            f"  - id: {KEY_NAME}",
            "    algorithm: hmac-sha256",
            f"    secret: {self.secret}",
            "remote:",
            "  - id: primary",
            f"    address: {self.primary_addr}@{self.port}",
        ]
        if self.secondary_addr:
            out += ["  - id: secondary", f"    address: {self.secondary_addr}@{self.port}"]
        out += [
            "acl:",
            "  - id: update",
            f"    key: {KEY_NAME}",
            "    action: update",
            "    update-type: [TLSA]",  # the key may change TLSA records only (docs/dane.md)
            "  - id: xfr",
            "    address: 127.0.0.0/8",
            "    action: [transfer, notify]",
            "policy:",
            "  - id: fast",
            "    algorithm: ecdsap256sha256",
            "    nsec3: off",
            f"    zone-max-ttl: {max(self.ttl, self.neg_ttl)}",
            "    rrsig-refresh: 1d",
            "zone:",
        ]
        for z in zones:
            out += [f"  - domain: {z}", f"    storage: {rundir}/zones", f"    file: {z}.zone",
                    "    zonefile-sync: -1", "    journal-content: all"]
            if role == "primary":
                out += ["    acl: [update, xfr]"]
                if self.secondary_addr:
                    out += ["    notify: secondary"]
                if z == self.zone:
                    out += ["    dnssec-signing: on", "    dnssec-policy: fast"]
            else:
                out += ["    master: primary", "    acl: xfr"]
        return "\n".join(out) + "\n"

    def _start_knot(self, role: str, addr: str) -> None:
        rundir = self.dir / f"knot-{role}"
        (rundir / "zones").mkdir(parents=True, exist_ok=True)
        (rundir / "db").mkdir(exist_ok=True)
        if role == "primary":
            (rundir / "zones" / f"{self.zone}.zone").write_text(self._zone_text(self.zone, bool(self.secondary_addr)))
            if self.unsigned_zone:
                (rundir / "zones" / f"{self.unsigned_zone}.zone").write_text(self._zone_text(self.unsigned_zone, False))
        conf = rundir / "knot.conf"
        conf.write_text(self._knot_conf(role, addr, rundir))
        log = open(rundir / "knotd.log", "wb")
        self.procs.append(subprocess.Popen(["knotd", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        setattr(self, f"knot_{role}_conf", conf)
        _wait_udp(addr, self.port, self.zone)

    def _trust_anchor(self) -> str:
        """The zone's KSK (DNSKEY flags 257) as served by the primary, for unbound."""
        import dns.message
        import dns.query

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = dns.query.udp(dns.message.make_query(self.zone, "DNSKEY", want_dnssec=True), self.primary_addr,
                              port=self.port, timeout=2)
            for rrset in r.answer:
                for rd in rrset:
                    if getattr(rd, "flags", 0) == 257:
                        return f"{self.zone}. DNSKEY {rd.to_text()}"
            time.sleep(0.2)
        raise RuntimeError("the primary never served a KSK: is dnssec-signing on?")

    def _start_unbound(self, *, name: str = "unbound", addr: str | None = None, anchor: str | None = None) -> str:
        """A validating unbound; returns its ADDR@PORT.  ``anchor`` replaces the zone's real
        KSK (a wrong one makes every answer from the zone bogus)."""
        d = self.dir / name
        d.mkdir(exist_ok=True)
        addr = addr or self.resolver_addr
        auths = [self.primary] + ([self.secondary] if self.secondary_addr else [])
        conf = [
            "server:",
            f"    interface: {addr}",
            f"    interface: {addr}@53",  # for tools that take only an address (resolv.conf, ldns-dane -r)
            f"    port: {self.port}",
            "    do-daemonize: no",
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{d}"',
            f'    pidfile: "{d}/unbound.pid"',
            "    use-syslog: no",
            f'    logfile: "{d}/unbound.log"',
            "    verbosity: 1",
            "    val-log-level: 2",
            "    do-not-query-localhost: no",
            '    module-config: "validator iterator"',
            "    access-control: 127.0.0.0/8 allow",
            "    cache-max-negative-ttl: 1",
            "    do-ip6: no",
            f'    trust-anchor: "{anchor or self._trust_anchor()}"',
            "    harden-dnssec-stripped: yes",
            "remote-control:",
            "    control-enable: yes",
            f"    control-interface: {d}/control.sock",
            "    control-use-cert: no",
            "stub-zone:",
            f"    name: {self.zone}",
            *[f"    stub-addr: {a}" for a in auths],
        ]
        if self.unsigned_zone:
            conf += ["stub-zone:", f"    name: {self.unsigned_zone}", f"    stub-addr: {self.primary}"]
        # the machine has no root servers here: names outside the test zones must not wander off
        conf += ["forward-zone:", '    name: "."', "    forward-addr: 127.0.0.1@9"]
        p = d / "unbound.conf"
        p.write_text("\n".join(conf) + "\n")
        chk = subprocess.run(["unbound-checkconf", str(p)], capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise RuntimeError(f"unbound.conf: {chk.stdout}{chk.stderr}")
        log = open(d / "stdout.log", "wb")
        self.procs.append(subprocess.Popen(["unbound", "-d", "-c", str(p)], stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        _wait_udp(addr, self.port, self.zone, any_rcode=anchor is not None)
        return f"{addr}@{self.port}"

    def bogus_resolver(self) -> str:
        """A second validating unbound whose trust anchor for the zone is a key the zone never
        had: every answer from the zone is bogus (SERVFAIL), as after a broken key rollover."""
        import dns.dnssec
        from cryptography.hazmat.primitives.asymmetric import ec

        key = dns.dnssec.make_dnskey(ec.generate_private_key(ec.SECP256R1()).public_key(), "ECDSAP256SHA256", flags=257)
        return self._start_unbound(name="unbound-bogus", addr=self.resolver_addr.rsplit(".", 1)[0] + "."
                                   + str(int(self.resolver_addr.rsplit(".", 1)[1]) + 1),
                                   anchor=f"{self.zone}. DNSKEY {key.to_text()}")

    def start(self) -> "DnsHarness":
        for tool in ("knotd", "knotc", "unbound", "kdig"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (apt: knot knot-dnsutils unbound)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tsig_file.write_text(f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{self.secret}";\n}};\n')
        self.tsig_file.chmod(0o600)
        try:
            self._start_knot("primary", self.primary_addr)
            if self.secondary_addr:
                self._start_knot("secondary", self.secondary_addr)
            self._start_unbound()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
        self.procs.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ helpers
    def flush_resolver(self) -> None:
        """Forget every cached answer for the test zones (between negative controls)."""
        conf = self.dir / "unbound" / "unbound.conf"
        for z in [self.zone] + ([self.unsigned_zone] if self.unsigned_zone else []):
            r = subprocess.run(["unbound-control", "-c", str(conf), "flush_zone", z], capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
        subprocess.run(["unbound-control", "-c", str(conf), "flush_bogus"], capture_output=True, timeout=30)

    def resolv_conf(self) -> Path:
        """A resolv.conf naming the validating resolver (port 53 of its own loopback address)."""
        p = self.dir / "resolv.conf"
        p.write_text(f"nameserver {self.resolver_addr}\noptions trust-ad edns0\n")
        return p

    def knotc(self, role: str, *args: str) -> subprocess.CompletedProcess:
        conf = getattr(self, f"knot_{role}_conf")
        return subprocess.run(["knotc", "-c", str(conf), *args], capture_output=True, text=True, timeout=30)

    def kdig(self, rtype: str, name: str, *, server: str | None = None, extra=()) -> subprocess.CompletedProcess:
        addr, port = (server or self.resolver).split("@")
        return subprocess.run(["kdig", f"@{addr}", "-p", port, *extra, name, rtype], capture_output=True, text=True,
                              timeout=30)

    def tlsa(self, owner: str, server: str) -> set[str]:
        """The TLSA rdatas ``server`` serves at ``owner`` (lower-case text)."""
        import dns.message
        import dns.query

        addr, port = server.split("@")
        r = dns.query.udp(dns.message.make_query(owner, "TLSA"), addr, port=int(port), timeout=3)
        return {rd.to_text().lower() for rrset in r.answer if rrset.rdtype == 52 for rd in rrset}

    def freeze_secondary(self) -> None:
        """The secondary stops taking transfers (a lagging secondary)."""
        r = self.knotc("secondary", "zone-freeze", self.zone)
        assert r.returncode == 0, r.stdout + r.stderr
        self.secondary_paused = True

    def update_direct(self, lines: list[str]) -> None:
        """Change the primary's zone with knotc (a hand edit behind mailca's back)."""
        cmds = [["zone-begin", self.zone], *[["zone-set", self.zone, *ln.split()] for ln in lines], ["zone-commit", self.zone]]
        for c in cmds:
            r = self.knotc("primary", *c)
            assert r.returncode == 0 and "error" not in r.stdout.lower(), f"knotc {c}: {r.stdout}{r.stderr}"

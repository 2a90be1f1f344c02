"""End to end, all real, all on loopback: a sending Postfix at smtp_tls_security_level = dane
resolving through the validating unbound (its own mount namespace with a bind-mounted
resolv.conf), delivering every 2 s to example.org, whose MX is a Postfix serving mailca's
live chain; DNS is Knot (signed zone, TSIG updates) and mailca publishes every TLSA change
itself.  Every phase - a renewal, a key rotation (stage -> publish -> DNS gate -> commit ->
reload hook -> prune) and an intermediate renewal (renew the intermediate -> publish its 2 0 1
-> gate -> leaf switch -> reload -> prune) - is driven ONLY by running, again and again, the
ExecStart of the unit 'mailca schedule --systemd' emits; what makes each one due is an option
of that unit (--days-before, --rekey-every, --passphrase-file) or the CA's profile (an
intermediate inside its renewal window).  TTL 5 s, real time: zero deferred messages, every
one Verified."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time

import pytest

from conftest import base_env, make_ca, require
from dns_harness import DnsHarness
from postfix_harness import PostfixServer

HOST = "mail.example.org"
TTL = "5"
SMTP_ONLY = "smtp       inet  n       -       n       -       -       smtpd\n"


MX_ADDR = f"127.0.25.{os.getpid() % 200 + 2}"


class MXServer(PostfixServer):
    """The receiving Postfix also listens on port 25 of its own loopback address (an
    ``ADDR:smtp`` master.cf line; inet_interfaces stays 127.0.0.1): the MX of the zone."""

    def write_config(self):
        super().write_config()
        with open(self.config_dir / "master.cf", "a") as fh:
            fh.write(f"{MX_ADDR}:smtp inet  n       -       n       -       -       smtpd\n")


class NamespacedSender(PostfixServer):
    """A Postfix whose daemons see ``resolv_conf`` as /etc/resolv.conf (unshare --mount:
    the machine's file is untouched)."""

    resolv_conf = None

    def _postfix(self, action):
        argv = ["postfix", "-c", str(self.config_dir), action]
        if action == "start":
            argv = ["unshare", "--mount", "--", "sh", "-c", 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"',
                    "sh", str(self.resolv_conf), *argv]
        # Postfix prints its fatals only to a terminal: give it one (as the base class does)
        import os
        import pty
        import select

        master, slave = pty.openpty()
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, timeout=60)
        finally:
            os.close(slave)
        err = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
        os.close(master)
        return subprocess.CompletedProcess(argv, r.returncode, r.stdout.decode(errors="replace"),
                                           err.decode(errors="replace"))


@pytest.mark.slow
@pytest.mark.interop
def test_zero_deferred_through_renewal_rekey_and_intermediate_renewal(tmp_path):
    for t in ("knotd", "unbound", "postfix", "sendmail", "unshare"):
        require(t)
    # leaves of 30 days under a 60-day intermediate that is inside its renewal window (90 days)
    prof = tmp_path / "profile.toml"
    prof.write_text("[ca]\nintermediate_days = 60\n[leaf]\ndays = 30\n[renew]\nintermediate_warn_days = 90\n")
    ca = make_ca(tmp_path / "store", "example.org", extra=["--profile", prof])
    # The DNS gate of this test waits in real time (TTL 5 s on a real Knot + unbound), so every
    # later command reads the real clock; the CA was made at T0, a moment before.  The timer's
    # environment has no root passphrase: only a unit given --passphrase-file can renew the
    # intermediate.
    ca.env = base_env(MAILCA_NOW=None, MAILCA_PASSPHRASE=None)
    passfile = tmp_path / "root-pass"
    passfile.write_text(base_env()["MAILCA_PASSPHRASE"] + "\n")
    passfile.chmod(0o600)
    ca.issue(HOST)
    live = ca.live(HOST)
    with DnsHarness(tmp_path / "dns", "example.org", ttl=int(TTL), mx_addr=MX_ADDR) as dnsz:
        recv_main = (f"smtpd_tls_chain_files = {live}/keyfullchain.pem\nsmtpd_tls_security_level = may\n"
                     f"relay_domains = example.org\ntransport_maps = texthash:{tmp_path}/recv-transport\n")
        (tmp_path / "recv-transport").write_text("example.org discard:\n")
        with MXServer(tmp_path / "recv", main_cf=recv_main, master_cf=SMTP_ONLY) as recv:
            port = "25"
            owner = f"_25._tcp.{HOST}."
            reload_hook = ["--deploy-hook", f"postfix -c {recv.config_dir} reload"]

            def remember(usage):
                """The admin's one-time set-up (and, later, the switch to a DANE-TA deployment)."""
                r = ca.ok("dane", "publish", HOST, "--usage", usage, "--server", dnsz.primary, "--tsig-key-file",
                          dnsz.tsig_file, "--ttl", TTL, "--port", port, "--resolver", dnsz.resolver, "--ns-port",
                          str(dnsz.port), "--remember", "--json")
                return json.loads(r.stdout)["changes"]

            def timer_argv(*options):
                """What the timer runs: the ExecStart of the unit 'mailca schedule --systemd' emits."""
                from mailca.lifecycle.schedule import parse_unit

                out = json.loads(ca.ok("schedule", "--systemd", "--json", *reload_hook, *options).stdout)
                argv = shlex.split(parse_unit(out["files"]["mailca-renew.service"])["Service"]["ExecStart"])
                assert argv == out["argv"] and "auto" in argv, argv
                return argv

            def drive(argv, done, what):
                """Run the timer's command once a second until ``done()``; every run exits 0."""
                deadline = time.monotonic() + 120
                outs = []
                while True:
                    r = subprocess.run(argv, env=ca.env, capture_output=True, text=True, timeout=120)
                    assert r.returncode == 0, (what, r.stdout, r.stderr)
                    outs.append(r.stdout)
                    if done():
                        return outs
                    assert time.monotonic() < deadline, (what, outs)
                    time.sleep(1)

            def cert():
                return (live / "cert.pem").read_bytes()

            remember("3")
            (tmp_path / "send-transport").write_text("example.org smtp:\n")
            send_main = ("myhostname = sender.example.test\nsmtp_tls_security_level = dane\n"
                         "smtp_dns_support_level = dnssec\nsmtp_tls_loglevel = 1\n"
                         f"transport_maps = texthash:{tmp_path}/send-transport\n"
                         "maximal_backoff_time = 10s\nminimal_backoff_time = 5s\nqueue_run_delay = 5s\n")
            sender = NamespacedSender(tmp_path / "send", main_cf=send_main, master_cf=SMTP_ONLY)
            sender.resolv_conf = dnsz.resolv_conf()
            with sender:
                stop = threading.Event()
                submitted = []

                def loop():
                    n = 0
                    while not stop.is_set():
                        n += 1
                        msg = f"Subject: dane {n}\nMessage-Id: <dane-{n}@sender.example.test>\n\nmessage {n}\n"
                        p = subprocess.run(["sendmail", "-C", str(sender.config_dir), "-f", "probe@sender.example.test",
                                            f"user{n}@example.org"], input=msg, capture_output=True, text=True, timeout=30)
                        if p.returncode == 0:
                            submitted.append(n)
                        stop.wait(2)

                th = threading.Thread(target=loop, daemon=True)
                th.start()
                try:
                    time.sleep(6)
                    # 1. renewal (same key; due by the unit's --days-before): 3 1 1 stays valid
                    before = cert()
                    outs = drive(timer_argv("--days-before", "3650"), lambda: cert() != before, "renewal")
                    assert len(outs) == 1 and outs[0].startswith("mailca auto: "), outs
                    time.sleep(4)
                    # 2. key rotation (the unit's --rekey-every; the profile's rekey.every does the same):
                    #    stage -> publish next -> DNS gate -> commit -> reload hook -> prune, no human step
                    old_key = json.loads(ca.ok("status", HOST, "--json").stdout)
                    before = cert()
                    outs = drive(timer_argv("--rekey-every", "1s"), lambda: cert() != before, "rotation")
                    held = [o for o in outs if o.startswith("mailca auto: waiting for DNS:") and "DNS gate holds" in o]
                    assert len(held) >= 5, outs  # 2 x TTL = 10 s of real waiting, one quiet line per run
                    new_spki = json.loads(ca.ok("dane", HOST, "--json", "--usage", "3").stdout)["records"][0]["data"]
                    assert new_spki not in json.dumps(old_key)
                    assert dnsz.tlsa(owner, dnsz.primary) == {f"3 1 1 {new_spki}"}  # pruned after the reload
                    time.sleep(2)
                    # 3. intermediate renewal in a TA deployment (the admin switches to 2 0 1 once)
                    remember("2")  # 3 1 1 out, 2 0 1 in (both match the served chain)
                    time.sleep(2 * int(TTL) + 1)  # let every cache drop the 3 1 1-only set
                    old_ta = dnsz.tlsa(owner, dnsz.primary)
                    old_int = ca.intermediate.read_bytes()
                    outs = drive(timer_argv("--passphrase-file", str(passfile)),
                                 lambda: (live / "chain.pem").read_bytes() != old_int, "intermediate renewal")
                    assert ca.intermediate.read_bytes() != old_int
                    assert (live / "chain.pem").read_bytes() == ca.intermediate.read_bytes()
                    assert sum("waiting for DNS" in o for o in outs) >= 5, outs  # the leaf switch waited
                    new_ta = dnsz.tlsa(owner, dnsz.primary)
                    assert len(new_ta) == 1 and not (new_ta & old_ta), (old_ta, new_ta)  # the old 2 0 1 went
                    time.sleep(6)
                finally:
                    stop.set()
                    th.join(timeout=40)
                # every submitted message leaves the queue (bounded wait)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    q = subprocess.run(["postqueue", "-c", str(sender.config_dir), "-j"], capture_output=True,
                                       text=True, timeout=30).stdout.strip()
                    if not q:
                        break
                    time.sleep(1)
                log = sender.log_file.read_text(errors="replace")
                (tmp_path / "sender.log").write_text(log)
                # negative control: a wrong TLSA RRset -> check --dane CRITICAL and the sender defers
                addr, nsport = dnsz.primary.split("@")
                owner = f"_25._tcp.{HOST}."
                script = (f"server {addr} {nsport}\nupdate delete {owner} TLSA\n"
                          f"update add {owner} {TTL} TLSA 3 1 1 {'00' * 32}\nsend\n")
                p = subprocess.run(["nsupdate", "-k", str(dnsz.tsig_file)], input=script, capture_output=True, text=True,
                                   timeout=30)
                assert p.returncode == 0, p.stderr
                dnsz.flush_resolver()
                # Postfix's smtp processes keep a TLSA answer for TTL + 1 s and compare whole
                # seconds (tls_dane.c), so TTL + 1 s of sleep was a coin toss (CI saw a Verified
                # delivery against the wrong record): wait TTL + 3 s, and reload the sender so
                # the next smtp process starts with no cached TLSA at all.
                time.sleep(int(TTL) + 3)
                sender.reload()
                chk = ca.run("check", "--dane", "example.org", "--resolver", dnsz.resolver, "--json")
                assert chk.returncode == 5 and json.loads(chk.stdout)["status"] == "CRITICAL", chk.stdout
                subprocess.run(["sendmail", "-C", str(sender.config_dir), "-f", "probe@sender.example.test",
                                "wrong@example.org"], input="Subject: wrong\n\nwrong tlsa\n", text=True, timeout=30,
                               check=True)
                deadline = time.monotonic() + 30
                neg = ""
                while time.monotonic() < deadline:
                    neg = sender.log_file.read_text(errors="replace")[len(log):]
                    if "status=deferred" in neg:
                        break
                    time.sleep(0.5)
                assert "status=deferred" in neg and "no matching DANE TLSA" in neg, neg[-2000:]
                assert "wrong@example.org" not in "".join(ln for ln in neg.splitlines() if "status=sent" in ln)
    sent = [ln for ln in log.splitlines() if "status=sent" in ln]
    deferred = [ln for ln in log.splitlines() if "status=deferred" in ln or "status=bounced" in ln]
    verified = [ln for ln in log.splitlines() if "Verified TLS connection established" in ln]
    print(f"e2e: {len(submitted)} submitted, {len(sent)} sent, {len(deferred)} deferred, {len(verified)} verified")
    assert deferred == [], "\n".join(deferred[:5])
    assert len(submitted) >= 15 and len(sent) == len(submitted), (len(submitted), len(sent))
    assert len(verified) >= len(sent), log[-3000:]

"""The shared Postfix test harness itself: a real Postfix (and Dovecot auth) on loopback ports."""

from __future__ import annotations

import base64
import socket

import pytest

from conftest import require
from postfix_harness import PLAIN_MASTER_CF, PostfixServer

pytestmark = pytest.mark.interop


def smtp_dialog(port: int, *commands: str) -> list[str]:
    """Greeting + one reply per command (multi-line replies joined with newlines)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rwb")

        def reply() -> str:
            lines = []
            while True:
                line = f.readline().decode().rstrip("\r\n")
                if not line:
                    raise AssertionError(f"connection closed after {lines}")
                lines.append(line)
                if line[3:4] != "-":
                    return "\n".join(lines)

        out = [reply()]
        for c in commands:
            f.write(c.encode() + b"\r\n")
            f.flush()
            out.append(reply())
        return out


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_plain_instances_start_answer_ehlo_and_stop(tmp_path):
    require("postfix")
    a = PostfixServer(tmp_path / "a", main_cf="smtpd_banner = $myhostname ESMTP harness-a\n", master_cf=PLAIN_MASTER_CF)
    b = PostfixServer(tmp_path / "b", main_cf="smtpd_banner = $myhostname ESMTP harness-b\n", master_cf=PLAIN_MASTER_CF)
    assert set(a.ports) == {"smtp", "submission", "submissions"}
    assert not set(a.ports.values()) & set(b.ports.values())
    with a, b:  # two instances at once
        for srv, tag in ((a, "harness-a"), (b, "harness-b")):
            for svc, port in srv.ports.items():
                greeting, ehlo = smtp_dialog(port, "EHLO client.example")
                assert greeting.startswith("220 ") and tag in greeting, (svc, greeting)
                assert ehlo.startswith("250-mail.example.org"), (svc, ehlo)
            # the config is the isolated one, and postconf reads it without complaint
            assert srv.postconf("-h", "inet_interfaces").strip() == "127.0.0.1"
            assert srv.postconf("-h", "queue_directory").strip() == str(srv.queue_dir)
            master = (srv.config_dir / "master.cf").read_text()
            for port in srv.ports.values():
                assert f"127.0.0.1:{port} inet" in master
        assert "daemon started" in a.log_file.read_text()
    for srv in (a, b):
        for port in srv.ports.values():
            assert refuses(port), f"port {port} still open after stop()"


def test_sasl_instance_offers_auth_backed_by_dovecot(tmp_path):
    require("postfix")
    require("dovecot")
    main = "smtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\nsmtpd_sasl_auth_enable = yes\n"
    with PostfixServer(tmp_path / "s", main_cf=main, master_cf=PLAIN_MASTER_CF, sasl=True,
                       users={"alice": "s3cret"}) as srv:
        good = base64.b64encode(b"\0alice\0s3cret").decode()
        bad = base64.b64encode(b"\0alice\0wrong").decode()
        _, ehlo, ok = smtp_dialog(srv.ports["submission"], "EHLO c", f"AUTH PLAIN {good}")
        assert "AUTH PLAIN LOGIN" in ehlo
        assert ok.startswith("235"), ok
        _, _, no = smtp_dialog(srv.ports["smtp"], "EHLO c", f"AUTH PLAIN {bad}")
        assert no.startswith("535"), no

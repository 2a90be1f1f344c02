"""mailca trust install / status / uninstall against this machine's real stores.

The main test CHANGES THE SYSTEM TRUST STORE (/usr/local/share/ca-certificates +
update-ca-certificates) and restores it: the ``system_store`` fixture records the anchor
directory, the /etc/ssl/certs links and the bundle's hash, removes whatever is left in
teardown and checks everything is back byte for byte.  NSS databases are throwaway
``certutil -N`` databases under tmp (``MAILCA_NSS_DBS`` or a fake ``$HOME``), never a
real user's.  The TLS server is ``openssl s_server`` on 127.0.0.1; clients use only the
system store (SSL_CERT_FILE/SSL_CERT_DIR/CURL_CA_BUNDLE and proxies removed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import base_env, mailca_argv, require, snapshot, tool

pytestmark = pytest.mark.interop

ANCHORS = Path("/usr/local/share/ca-certificates")
ETC_CERTS = Path("/etc/ssl/certs")
BUNDLE = ETC_CERTS / "ca-certificates.crt"
HOST = "mail.example.org"
_STRIP = ("SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "http_proxy", "https_proxy",
          "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "no_proxy", "NO_PROXY")


def need_root():
    if os.geteuid() != 0:
        if os.environ.get("MAILCA_ALLOW_MISSING_TOOLS"):
            pytest.skip("the system-store test needs root")
        pytest.fail("tests/interop/test_trust.py changes the system trust store and must run as root (CI does)")


def client_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _STRIP}
    return env


def system_state():
    links = sorted((p.name, os.readlink(p) if p.is_symlink() else None) for p in ETC_CERTS.iterdir())
    return snapshot(ANCHORS), hashlib.sha256(BUNDLE.read_bytes()).hexdigest(), links


@pytest.fixture
def system_store(ca):
    need_root()
    require("update-ca-certificates")
    before = system_state()
    try:
        yield before
    finally:
        ca.run("trust", "uninstall", "--no-nss")
        leftovers = [p for p in ANCHORS.glob("mailca-*") if p.name not in before[0]]
        for p in leftovers:  # last resort if uninstall itself was broken
            p.unlink()
        if leftovers:
            subprocess.run(["update-ca-certificates", "--fresh"], capture_output=True, timeout=120)
        assert system_state() == before, "the system trust store was not restored"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(live: Path):
    openssl = require("openssl")
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", live / "cert.pem",
             "-cert_chain", live / "chain.pem", "-key", live / "key.pem", "-www", "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc, port
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    pytest.fail("openssl s_server did not start")


def s_client(port: int):
    return subprocess.run(
        [require("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST,
         "-verify_hostname", HOST, "-verify_return_error", "-brief"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=client_env(), timeout=30)


def curl(port: int):
    return subprocess.run(
        [require("curl"), "-sS", "--noproxy", "*", "--max-time", "10", "--resolve", f"{HOST}:{port}:127.0.0.1",
         "-o", "/dev/null", "-w", "%{http_code}", f"https://{HOST}:{port}/"],
        capture_output=True, text=True, env=client_env(), timeout=30)


def vfychain(db: Path, live: Path):
    return tool(require("vfychain"), "-d", f"sql:{db}", "-u", "1", "-a", live / "cert.pem", "-a", live / "chain.pem")


def certutil_list(db: Path) -> str:
    return tool(require("certutil"), "-L", "-d", f"sql:{db}", check=True).stdout


def new_nssdb(path: Path) -> Path:
    path.mkdir(parents=True)
    tool(require("certutil"), "-N", "--empty-password", "-d", f"sql:{path}", check=True)
    return path


def mailca(ca, *args, env):
    from conftest import run

    return run(["--dir", ca.dir, *args], env=env)


def test_install_trusts_then_uninstall_untrusts(ca, system_store, tmp_path):
    live = Path(ca.issue(HOST)[0]["live_dir"])
    db = new_nssdb(tmp_path / "nssdb")
    env = base_env(MAILCA_NSS_DBS=str(db), HOME=str(tmp_path / "home"))
    nick = json.loads(ca.ok("bundle", "--out", tmp_path / "b", "--json").stdout)["root"]["nickname"]
    anchor = ANCHORS / f"{nick}.crt"

    server, port = start_server(live)
    try:
        # untrusted before
        r = s_client(port)
        assert r.returncode != 0 and "unable to get local issuer certificate" in r.stderr + r.stdout
        r = curl(port)
        assert r.returncode == 60, (r.returncode, r.stderr)
        assert vfychain(db, live).returncode != 0
        st = json.loads(mailca(ca, "trust", "status", "--json", env=env).stdout)
        assert st["installed"] is False and st["system"]["installed"] is False and st["nss"][0]["installed"] is False

        r = mailca(ca, "trust", "install", "--nss", "--json", env=env)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["changed"] is True
        assert [x["store"] for x in res["results"]] == ["system", "nss"]
        assert anchor.read_bytes() == ca.root.read_bytes()
        assert (ETC_CERTS / f"{nick}.pem").resolve() == anchor

        # trusted through the system store only: no -CAfile, no SSL_CERT_* variables
        r = s_client(port)
        assert r.returncode == 0, r.stderr
        assert "Verification: OK" in r.stderr and f"Verified peername: {HOST}" in r.stderr
        r = curl(port)
        assert (r.returncode, r.stdout) == (0, "200"), r.stderr
        listing = certutil_list(db)
        assert any(line.split() == [nick, "C,,"] for line in listing.splitlines()), listing
        r = vfychain(db, live)
        assert r.returncode == 0 and "Chain is good!" in r.stdout + r.stderr

        st = json.loads(mailca(ca, "trust", "status", "--json", env=env).stdout)
        assert st["installed"] is True
        assert st["system"] == {**st["system"], "installed": True, "active": True, "anchor": str(anchor), "kind": "debian"}
        assert st["nss"] == [{"store": "nss", "db": f"sql:{db}", "label": "MAILCA_NSS_DBS", "installed": True, "trust": "C,,"}]
        text = mailca(ca, "trust", "status", env=env).stdout
        assert "system store (debian): installed" in text and "installed (trust C,,)" in text

        # idempotent: nothing changes the second time
        bundle_hash = hashlib.sha256(BUNDLE.read_bytes()).hexdigest()
        res = json.loads(mailca(ca, "trust", "install", "--nss", "--json", env=env).stdout)
        assert res["changed"] is False and all(not x["changed"] for x in res["results"])
        assert hashlib.sha256(BUNDLE.read_bytes()).hexdigest() == bundle_hash
        assert certutil_list(db).count(nick) == 1

        r = mailca(ca, "trust", "uninstall", "--json", env=env)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["changed"] is True and all(x["changed"] and not x["installed"] for x in res["results"])
        assert not anchor.exists()
        assert nick not in certutil_list(db)
        assert vfychain(db, live).returncode != 0
        r = s_client(port)
        assert r.returncode != 0 and "unable to get local issuer certificate" in r.stderr + r.stdout
        assert curl(port).returncode == 60
        assert system_state() == system_store  # exactly as before (links, anchors, bundle bytes)
    finally:
        server.kill()
        server.wait()


def test_uninstall_when_not_installed_is_a_clear_no_op(ca, system_store, tmp_path):
    db = new_nssdb(tmp_path / "nssdb")
    env = base_env(MAILCA_NSS_DBS=str(db))
    mtime = BUNDLE.stat().st_mtime_ns
    r = mailca(ca, "trust", "uninstall", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("is not installed in any store mailca manages; nothing to do.")
    assert len(r.stdout.strip().splitlines()) == 1
    assert BUNDLE.stat().st_mtime_ns == mtime  # no needless update-ca-certificates run


def test_nss_discovery_follows_home_and_leaves_the_system_store_alone(ca, tmp_path):
    require("certutil")
    home = tmp_path / "home"
    dbs = {
        "Chromium/Chrome": new_nssdb(home / ".pki" / "nssdb"),
        "Firefox profile abcd.default-release": new_nssdb(home / ".mozilla" / "firefox" / "abcd.default-release"),
        "Thunderbird profile wxyz.default": new_nssdb(home / ".thunderbird" / "wxyz.default"),
    }
    (home / ".mozilla" / "firefox" / "empty.profile").mkdir()  # no cert9.db: not a database
    env = base_env(HOME=str(home), MAILCA_NSS_DBS=None)
    before = system_state() if ANCHORS.is_dir() else None
    r = mailca(ca, "trust", "install", "--nss", "--no-system", "--json", env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    got = {x["label"]: x["db"] for x in res["results"]}
    assert got == {label: f"sql:{p}" for label, p in dbs.items()}
    nick = res["root"]["nickname"]
    for p in dbs.values():
        assert any(line.split() == [nick, "C,,"] for line in certutil_list(p).splitlines())
    st = json.loads(mailca(ca, "trust", "status", "--json", env=env).stdout)
    assert [n["installed"] for n in st["nss"]] == [True, True, True]
    assert st["system"] is None or st["system"]["installed"] is False
    r = mailca(ca, "trust", "uninstall", "--no-system", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["changed"] is True
    for p in dbs.values():
        assert nick not in certutil_list(p)
    if before is not None:
        assert system_state() == before


def _one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailca: error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_bad_input_changes_nothing(ca, tmp_path):
    need_root()
    before = system_state()
    from conftest import run

    # no CA yet
    msg = _one_line_error(run(["--dir", tmp_path / "nostore", "trust", "install"]), 3)
    assert "mailca init" in msg
    # --cert that is not a root
    live = Path(ca.issue(HOST)[0]["live_dir"])
    msg = _one_line_error(ca.run("trust", "install", "--cert", live / "cert.pem"), 2)
    assert "not a self-signed CA certificate" in msg
    msg = _one_line_error(ca.run("trust", "install", "--cert", tmp_path / "missing.crt"), 2)
    assert "cannot read" in msg
    # nothing selected
    assert "--nss" in _one_line_error(ca.run("trust", "install", "--no-system"), 2)
    # a named NSS directory without a database is rejected before the system store is touched
    (tmp_path / "notadb").mkdir()
    msg = _one_line_error(mailca(ca, "trust", "install", "--nss", env=base_env(MAILCA_NSS_DBS=str(tmp_path / "notadb"))), 2)
    assert "cert9.db" in msg
    # --nss without certutil on PATH: refused up front
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(shutil.which("update-ca-certificates"), bindir / "update-ca-certificates")
    msg = _one_line_error(mailca(ca, "trust", "install", "--nss", env=base_env(PATH=str(bindir))), 2)
    assert "libnss3-tools" in msg
    # an unprivileged user cannot change the system store: told to use root, nothing written
    setpriv = require("setpriv")
    base = Path(tempfile.mkdtemp(prefix="mailca-trust-user-"))
    try:
        os.chmod(base, 0o755)
        shutil.copy(ca.root, base / "root.crt")
        os.chmod(base / "root.crt", 0o644)
        r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *mailca_argv(),
                            "trust", "install", "--cert", str(base / "root.crt")],
                           capture_output=True, text=True, env=base_env(HOME=str(base)), cwd=base, timeout=60)
        msg = _one_line_error(r, 3)
        assert "run it as root" in msg and str(ANCHORS) in msg
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert system_state() == before

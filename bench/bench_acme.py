"""ACME server speed, side by side with pebble (issue #14), in one run on loopback.

* certbot 2.1: wall time of one `certbot certonly --standalone --force-renewal` (http-01)
  against `mailca acme serve` vs against pebble (PEBBLE_VA_NOSLEEP=1), interleaved, median;
  target <= 1.0.
* lego 4.9: 200 orders from 20 parallel lego clients (10 sequential `lego run` each, http-01
  through a shared webroot served by one loopback responder), total wall time; target <= 1.2.
  mailca writes every object durably (fsync) in the store; pebble keeps everything in memory.

Both servers require external account binding (pebble: externalAccountMACKeys), both validate
http-01 for real (pebble resolves every name to 127.0.0.1 through pebble-challtestsrv's DNS,
mailca with --resolve-to 127.0.0.1).  PEBBLE_WFE_NONCEREJECT=0: pebble does not reject 5 % of
nonces on purpose (which would slow it down).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import http.server
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, mailca_cmd, report  # noqa: E402

IP_PROFILE = """[ca]
permitted_ip_ranges = ["127.0.0.0/8"]
[leaf]
allow_ip = true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


class Webroot:
    """One loopback HTTP server for the http-01 files lego writes with --http.webroot."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        d = str(root)

        class H(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=d, **kw)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def self_signed(d: Path) -> tuple[Path, Path]:
    """pebble's HTTPS certificate (127.0.0.1), self-signed."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble bench")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    c, k = d / "pebble.crt", d / "pebble.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


class Side:
    """One ACME server under test: directory URL, CA bundle for clients, EAB credentials."""

    def __init__(self, name, directory, bundle, eabs, procs, http_port):
        self.name, self.directory, self.bundle, self.eabs, self.procs = name, directory, bundle, eabs, procs
        self.http_port = http_port

    def stop(self):
        for p in self.procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def start_mailca(d: Path, http_port: int, n_eab: int) -> Side:
    prof = d / "ip.toml"
    prof.write_text(IP_PROFILE)
    store = d / "store"
    m = mailca_cmd()
    env = bench_env(MAILCA_PASSPHRASE="bench-passphrase")
    env.pop("MAILCA_DIR", None)
    subprocess.run([*m, "--dir", str(store), "init", "--domain", "example.org", "--profile", str(prof)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    eabs = []
    for _ in range(n_eab):
        r = subprocess.run([*m, "--dir", str(store), "acme", "eab", "new", "--allow", "*.mx.example.org", "--json"],
                           env=env, check=True, capture_output=True, text=True)
        e = json.loads(r.stdout)
        eabs.append((e["kid"], e["hmac"]))
    port = free_port()
    p = subprocess.Popen([*m, "--dir", str(store), "acme", "serve", "--listen", f"127.0.0.1:{port}", "--name",
                          "acme.example.org", "--http01-port", str(http_port), "--resolve-to", "127.0.0.1",
                          "--orders-per-hour", "100000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline()
    if b"listening" not in line:
        raise SystemExit(f"mailca acme serve did not start: {p.stderr.read().decode()[-2000:]}")
    return Side("mailca", f"https://127.0.0.1:{port}/directory", str(store / "ca" / "root.crt"), eabs, [p], http_port)


def start_pebble(d: Path, http_port: int, n_eab: int) -> Side:
    crt, key = self_signed(d)
    dns_port, mgmt, port, pmgmt = free_port(), free_port(), free_port(), free_port()
    ch = subprocess.Popen(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
                           "-tlsalpn01", "", "-management", f"127.0.0.1:{mgmt}", "-defaultIPv6", "",
                           "-defaultIPv4", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    eabs = [(f"kid-{i}", "A" + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()) for i in range(n_eab)]
    cfg = {"pebble": {"listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{pmgmt}",
                      "certificate": str(crt), "privateKey": str(key), "httpPort": http_port, "tlsPort": free_port(),
                      "ocspResponderURL": "", "externalAccountBindingRequired": True,
                      "externalAccountMACKeys": dict(eabs)}}
    (d / "pebble.json").write_text(json.dumps(cfg))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    p = subprocess.Popen(["pebble", "-config", str(d / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    wait_port(mgmt)
    return Side("pebble", f"https://127.0.0.1:{port}/dir", str(crt), eabs, [p, ch], http_port)


def certbot_once(side: Side, d: Path, http_port: int, *, register: bool) -> float:
    cfgdir = d / f"certbot-{side.name}"
    argv = ["certbot", "certonly", "--standalone", "--preferred-challenges", "http", "--http-01-port", str(http_port),
            "--http-01-address", "127.0.0.1", "--server", side.directory, "--config-dir", str(cfgdir / "cfg"),
            "--work-dir", str(cfgdir / "work"), "--logs-dir", str(cfgdir / "logs"), "--non-interactive",
            "--agree-tos", "-m", "a@example.org", "-d", "bench.mx.example.org", "--force-renewal"]
    if register:
        argv += ["--eab-kid", side.eabs[0][0], f"--eab-hmac-key={side.eabs[0][1]}"]
    env = dict(os.environ, REQUESTS_CA_BUNDLE=side.bundle)
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"certbot against {side.name} failed: {r.stdout[-1500:]}{r.stderr[-1500:]}")
    return dt


def lego_batch(side: Side, d: Path, webroot: Path, clients: int, per_client: int) -> float:
    env = dict(os.environ, LEGO_CA_CERTIFICATES=side.bundle)

    def client(i: int) -> None:
        for j in range(per_client):
            argv = ["lego", "--server", side.directory, "--email", f"c{i}@example.org", "--accept-tos", "--eab",
                    "--kid", side.eabs[1 + i][0], f"--hmac={side.eabs[1 + i][1]}", "--domains",
                    f"c{i}n{j}.mx.example.org", "--path", str(d / f"lego-{side.name}-{i}"), "--http",
                    "--http.webroot", str(webroot), "run"]
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise SystemExit(f"lego against {side.name} failed: {r.stdout[-800:]}{r.stderr[-800:]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(client, range(clients)))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="certbot runs per server (interleaved; median)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--per-client", type=int, default=10)
    ap.add_argument("--no-lego", action="store_true")
    args = ap.parse_args()
    for tool in ("certbot", "lego", "pebble", "pebble-challtestsrv"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt install certbot lego pebble)")
    with tempfile.TemporaryDirectory(prefix="bench-acme-") as tmp:
        d = Path(tmp)
        webroot = d / "webroot"
        wr = Webroot(webroot)
        cb_port = free_port()
        sides = []
        try:
            n_eab = 1 + args.clients
            (d / "m").mkdir()
            (d / "p").mkdir()
            sides = [start_mailca(d / "m", cb_port, n_eab), start_pebble(d / "p", cb_port, n_eab)]
            # certbot: one warm-up (registration) per side, then interleaved runs
            for s in sides:
                certbot_once(s, d, cb_port, register=True)
            samples = {s.name: [] for s in sides}
            for _ in range(args.runs):
                for s in sides:
                    samples[s.name].append(certbot_once(s, d, cb_port, register=False))
            cb = {k: statistics.median(v) for k, v in samples.items()}
            rows = [{"name": "certbot certonly (http-01), one certificate", "value_s": cb["mailca"],
                     "anchor_s": cb["pebble"], "ratio": cb["mailca"] / cb["pebble"], "target": 1.0,
                     "anchor": "pebble 2.4 PEBBLE_VA_NOSLEEP=1", "samples": samples}]
            if not args.no_lego:
                # http-01 for lego goes to the webroot server: restart both sides on its port
                for s in sides:
                    s.stop()
                (d / "m2").mkdir()
                (d / "p2").mkdir()
                sides = [start_mailca(d / "m2", wr.port, n_eab), start_pebble(d / "p2", wr.port, n_eab)]
                lt = {}
                order = sides if args.runs % 2 else list(reversed(sides))
                for s in order:
                    lt[s.name] = lego_batch(s, d, webroot, args.clients, args.per_client)
                n = args.clients * args.per_client
                rows.append({"name": f"lego: {n} orders, {args.clients} parallel clients", "value_s": lt["mailca"],
                             "anchor_s": lt["pebble"], "ratio": lt["mailca"] / lt["pebble"], "target": 1.2,
                             "anchor": "pebble 2.4 (in memory)"})
        finally:
            for s in sides:
                s.stop()
            wr.close()
    return report("acme", rows)


if __name__ == "__main__":
    sys.exit(main())

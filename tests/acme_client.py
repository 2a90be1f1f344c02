"""A small ACME client for the tests: real JWS (josepy signs), real HTTPS (urllib + ssl),
so each refusal the server sends can be provoked exactly.  Also an http-01 responder and
helpers to start `mailca acme serve` on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import http.server
import json
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request

import josepy as jose
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography import x509
from cryptography.x509.oid import NameOID

from conftest import base_env, mailca_argv


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    def __init__(self, status, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def problem_type(self) -> str:
        assert self.headers.get("Content-Type") == "application/problem+json", (self.status, self.body)
        return self.json["type"].rsplit(":", 1)[-1]


class Client:
    def __init__(self, directory: str, cafile: str, *, key=None, alg: str = "ES256"):
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.alg = alg
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
        self.key = key
        self.jwk = jose.JWKEC(key=key) if alg.startswith("ES") else jose.JWKRSA(key=key)
        self.dir = self.get(directory).json
        self.kid = None
        self._nonce = None

    # ---------------------------------------------------------------- transport
    def _open(self, req) -> Resp:
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                resp = Resp(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            resp = Resp(e.code, e.headers, e.read())
        if resp.headers.get("Replay-Nonce"):
            self._nonce = resp.headers["Replay-Nonce"]
        return resp

    def get(self, url) -> Resp:
        return self._open(urllib.request.Request(url))

    def nonce(self) -> str:
        if self._nonce is None:
            self._open(urllib.request.Request(self.dir["newNonce"], method="HEAD"))
        n, self._nonce = self._nonce, None
        return n

    def jws(self, url, payload, *, use_jwk=None, nonce=None, key=None, jwk=None, alg=None, extra=None) -> dict:
        alg = alg or self.alg
        jwk = jwk or self.jwk
        key = key or self.key
        prot = {"alg": alg, "nonce": nonce or self.nonce(), "url": url}
        if use_jwk or (use_jwk is None and self.kid is None):
            prot["jwk"] = jwk.public_key().to_json()
        else:
            prot["kid"] = self.kid
        prot.update(extra or {})
        p64 = b64u(json.dumps(prot).encode())
        pl64 = "" if payload is None else b64u(json.dumps(payload).encode())
        sig = jose.JWASignature.from_json(alg).sign(key, f"{p64}.{pl64}".encode())
        return {"protected": p64, "payload": pl64, "signature": b64u(sig)}

    def post_raw(self, url, body: dict) -> Resp:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/jose+json"})
        return self._open(req)

    def post(self, url, payload, **kw) -> Resp:
        return self.post_raw(url, self.jws(url, payload, **kw))

    # ---------------------------------------------------------------- protocol
    def eab(self, kid: str, hmac_b64: str) -> dict:
        prot = b64u(json.dumps({"alg": "HS256", "kid": kid, "url": self.dir["newAccount"]}).encode())
        pl = b64u(json.dumps(self.jwk.public_key().to_json()).encode())
        key = base64.urlsafe_b64decode(hmac_b64 + "=" * (-len(hmac_b64) % 4))
        mac = _hmac.new(key, f"{prot}.{pl}".encode(), hashlib.sha256).digest()
        return {"protected": prot, "payload": pl, "signature": b64u(mac)}

    def register(self, eab=None, **extra) -> Resp:
        payload = {"termsOfServiceAgreed": True, "contact": ["mailto:a@example.org"], **extra}
        if eab is not None:
            payload["externalAccountBinding"] = self.eab(*eab)
        r = self.post(self.dir["newAccount"], payload, use_jwk=True)
        if r.status in (200, 201):
            self.kid = r.headers["Location"]
        return r

    def new_order(self, *names) -> Resp:
        return self.post(self.dir["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]})

    def key_authorization(self, token: str) -> str:
        return f"{token}.{b64u(self.jwk.thumbprint())}"

    def authorize_http01(self, order: Resp, responder: "Http01Responder", *, wrong=False) -> list[Resp]:
        out = []
        for az in order.json["authorizations"]:
            a = self.post(az, None).json
            ch = next(c for c in a["challenges"] if c["type"] == "http-01")
            ka = self.key_authorization(ch["token"])
            responder.tokens[ch["token"]] = ("x" + ka) if wrong else ka
            out.append(self.post(ch["url"], {}))
        return out

    def finalize(self, order: Resp, csr_der: bytes) -> Resp:
        return self.post(order.json["finalize"], {"csr": b64u(csr_der)})


def make_csr(names, key=None) -> tuple[bytes, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER), key


class Http01Responder:
    """Serves /.well-known/acme-challenge/TOKEN from ``tokens`` on 127.0.0.1."""

    def __init__(self, port: int = 0):
        self.tokens = {}
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                tokens = outer.tokens
                t = self.path.rsplit("/", 1)[-1]
                body = tokens.get(t, "").encode()
                self.send_response(200 if t in tokens else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


IP_PROFILE = """[profile]
description = "test: the ACME server's certificate may carry 127.0.0.1"
[ca]
permitted_ip_ranges = ["127.0.0.0/8"]
[leaf]
allow_ip = true
allow_wildcard = true
"""


class AcmeProcess:
    """`mailca acme serve` on 127.0.0.1 (a real subprocess)."""

    def __init__(self, ca, *args, port: int | None = None, env=None):
        self.port = port or free_port()
        self.ca = ca
        argv = [*mailca_argv(), "--dir", str(ca.dir), "acme", "serve", "--listen", f"127.0.0.1:{self.port}",
                "--name", "acme.example.org", *args]
        self.proc = subprocess.Popen(argv, env=env if env is not None else (ca.env or base_env()), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.proc.kill()
            raise AssertionError(f"acme serve did not start: {line} {self.proc.stderr.read()}")
        self.directory = f"https://127.0.0.1:{self.port}/directory"

    def stop(self, sig=None):
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for s in (self.proc.stdout, self.proc.stderr):
            s.close()


__all__ = ["Client", "Http01Responder", "AcmeProcess", "make_csr", "free_port", "IP_PROFILE", "b64u", "Resp"]

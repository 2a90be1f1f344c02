"""The RFC 8555 server: directory, nonces, accounts, orders, authorizations, challenges
(http-01, tls-alpn-01, dns-01), finalize, certificate download, revocation, key change.

Choices:

* HTTP: the standard library's ``http.server.ThreadingHTTPServer`` wrapped in ``ssl``.  ACME
  needs a dozen small JSON endpoints; the stdlib server is maintained with CPython, adds no
  dependency to a tool that runs on the CA machine, and its request parsing is the same code
  every Python web server's test suite leans on.  Bodies are read with a hard size limit.
* JOSE: ``josepy`` (what certbot itself uses) parses JWK/JWS and checks the signatures
  (ES256, RS256; HS256 for external account binding).  Only the protected-header fields ACME
  adds (nonce, url, kid) are read from the decoded header JSON.
* Issuance goes through ``issuance.ca.sign_parsed_csr``, the code path of ``mailca sign``: the
  CSR hardening, the profile rules (key types, wildcards, SAN cap) and the CA's name
  constraints are those of every other certificate; entries are marked ``source: acme``.
* Challenges are validated synchronously when the client POSTs to the challenge (the client
  has its responder up by then), with bounded time; the store lock is never held meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import http.client
import http.server
import json
import re
import secrets
import socket
import ssl
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..core import certinfo
from ..core import names as namesmod
from ..errors import MailcaError, UsageError
from .state import AcmeState, allowed_by, b64u, new_id, unb64u

__all__ = ["Problem", "ServerConfig", "AcmeServer", "serve", "key_authorization", "dane_check"]

MAX_BODY = 64 * 1024
ERR = "urn:ietf:params:acme:error:"
ALGS = ("ES256", "ES384", "RS256")
ORDER_LIFETIME = _dt.timedelta(days=7)
VALIDATION_TIMEOUT = 10.0
HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class Problem(Exception):
    """An RFC 7807 / RFC 8555 §6.7 problem document."""

    def __init__(self, kind: str, detail: str, status: int = 400, subproblems: list | None = None):
        super().__init__(detail)
        self.type = ERR + kind
        self.detail = _clean(detail)
        self.status = status
        self.subproblems = subproblems

    def doc(self) -> dict:
        d = {"type": self.type, "detail": self.detail, "status": self.status}
        if self.subproblems:
            d["subproblems"] = self.subproblems
        return d


def _clean(text: str, limit: int = 400) -> str:
    """Peer-controlled text without control characters, bounded."""
    return "".join(c if c.isprintable() else "?" for c in str(text))[:limit]


def key_authorization(token: str, jwk) -> str:
    return f"{token}.{b64u(jwk.thumbprint())}"


def _now() -> _dt.datetime:
    return certinfo.utcnow()


def _iso(t: _dt.datetime) -> str:
    return certinfo.iso(t)


@dataclass
class ServerConfig:
    name: str
    listen_host: str
    listen_port: int
    http01_port: int = 80
    tlsalpn01_port: int = 443
    resolve_to: str | None = None
    resolver: str | None = None
    resolver_port: int = 53
    eab_required: bool = True
    profile: str | None = None
    orders_per_hour: int = 300
    dane_ports: tuple = (25,)
    ns_port: int = 53
    cert_file: str = ""
    key_file: str = ""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ JWS
@dataclass
class Jws:
    protected: dict
    payload: bytes
    jwk: object          # josepy JWK of the signer
    account: dict | None  # when signed with kid
    raw: dict


def _parse_jws(body: bytes) -> tuple[dict, object]:
    import josepy as jose

    try:
        outer = json.loads(body)
    except ValueError:
        raise Problem("malformed", "the request body is not JSON (a flattened JWS is expected)") from None
    if not isinstance(outer, dict) or set(outer) - {"protected", "payload", "signature"} or "protected" not in outer:
        raise Problem("malformed", "the request body is not a flattened JWS (protected, payload, signature only)")
    try:
        protected = json.loads(unb64u(outer["protected"]))
        jws = jose.JWS.from_json(outer)
    except Exception as exc:  # josepy raises several kinds on hostile input
        raise Problem("malformed", f"cannot parse the JWS: {type(exc).__name__}") from None
    if not isinstance(protected, dict):
        raise Problem("malformed", "the JWS protected header is not a JSON object")
    return protected, jws


# ------------------------------------------------------------------ server
class AcmeServer:
    def __init__(self, store, cfg: ServerConfig):
        self.store = store
        self.cfg = cfg
        self.state = AcmeState(store)
        self._thumbs: dict[str, str] = {}
        self._thumb_lock = threading.Lock()
        self._load_accounts()

    def _load_accounts(self) -> None:
        for a in self.state.all("accounts"):
            if a.get("thumbprint"):
                self._thumbs[a["thumbprint"]] = a["id"]

    # -------------------------------------------------------------- urls
    def base(self, host: str) -> str:
        return f"https://{host}"

    def directory(self, base: str) -> dict:
        return {
            "newNonce": f"{base}/acme/new-nonce",
            "newAccount": f"{base}/acme/new-account",
            "newOrder": f"{base}/acme/new-order",
            "revokeCert": f"{base}/acme/revoke-cert",
            "keyChange": f"{base}/acme/key-change",
            "meta": {"externalAccountRequired": self.cfg.eab_required,
                     "website": "https://github.com/mailca (private CA for mail servers)"},
        }

    # -------------------------------------------------------------- verify
    def verify(self, body: bytes, url: str, *, allow_jwk: bool = False, need_kid: bool = True) -> Jws:
        import josepy as jose

        protected, jws = _parse_jws(body)
        alg = protected.get("alg")
        if alg not in ALGS:
            raise Problem("badSignatureAlgorithm", f"JWS algorithm {alg!r} is not accepted; use one of {', '.join(ALGS)}")
        if protected.get("url") != url:
            raise Problem("unauthorized", f"the JWS url {protected.get('url')!r} is not this request's URL {url}", 401)
        has_jwk, has_kid = "jwk" in protected, "kid" in protected
        if has_jwk == has_kid:
            raise Problem("malformed", "the JWS protected header must carry exactly one of 'jwk' and 'kid'")
        account = None
        if has_jwk:
            if not allow_jwk:
                raise Problem("malformed", "this resource needs a request signed with the account's 'kid', not a 'jwk'")
            try:
                key = jose.JWK.from_json(protected["jwk"])
            except Exception:
                raise Problem("badPublicKey", "the JWS 'jwk' is not a usable public key") from None
            if key.key is None or not hasattr(key.key, "public_numbers"):
                raise Problem("badPublicKey", "the JWS 'jwk' is not a public key")
        else:
            kid = protected["kid"]
            account = self.account_by_url(kid)
            if account is None:
                raise Problem("accountDoesNotExist", f"no account {_clean(kid)!r} on this server", 400)
            if account.get("status") != "valid":
                raise Problem("unauthorized", f"account {account['id']} is {account.get('status')}", 401)
            key = jose.JWK.from_json(account["jwk"])
        # signature first, nonce second: a forged request must not burn a client's nonce
        try:
            ok = jws.verify(key)
        except Exception:
            ok = False
        if not ok:
            raise Problem("malformed", "the JWS signature does not verify with the " +
                          ("account key" if has_kid else "'jwk' in the header"), 400)
        nonce = protected.get("nonce")
        if not isinstance(nonce, str):
            raise Problem("badNonce", "the JWS carries no nonce; get one from newNonce")
        with self.state.locked():
            fresh = self.state.consume_nonce(nonce)
        if not fresh:
            raise Problem("badNonce", "the nonce is unknown, expired or was already used; get a new one from newNonce")
        return Jws(protected, jws.payload, key, account, {})

    def account_by_url(self, kid: str) -> dict | None:
        if not isinstance(kid, str):
            return None
        m = re.search(r"/acme/acct/([A-Za-z0-9_-]+)$", kid)
        return self.state.get("accounts", m.group(1)) if m else None

    @staticmethod
    def payload_json(j: Jws) -> dict:
        if j.payload == b"":
            return {}
        try:
            d = json.loads(j.payload)
        except ValueError:
            raise Problem("malformed", "the JWS payload is not JSON") from None
        if not isinstance(d, dict):
            raise Problem("malformed", "the JWS payload is not a JSON object")
        return d

    # -------------------------------------------------------------- accounts
    def new_account(self, base: str, j: Jws) -> tuple[int, dict, dict]:
        p = self.payload_json(j)
        thumb = b64u(j.jwk.thumbprint())
        existing = self._thumbs.get(thumb)
        if existing is not None:
            acct = self.state.get("accounts", existing)
            if acct is not None:
                return 200, self.account_view(acct), {"Location": f"{base}/acme/acct/{acct['id']}"}
        if p.get("onlyReturnExisting"):
            raise Problem("accountDoesNotExist", "no account exists for this key")
        if p.get("termsOfServiceAgreed") is False:
            raise Problem("malformed", "termsOfServiceAgreed is false")
        contact = p.get("contact") or []
        if not isinstance(contact, list) or not all(isinstance(c, str) and c.startswith("mailto:") for c in contact):
            raise Problem("invalidContact", "contact must be a list of 'mailto:' URLs")
        eab = p.get("externalAccountBinding")
        eab_rec = None
        if self.cfg.eab_required and eab is None:
            raise Problem("externalAccountRequired",
                          "this server needs an external account binding: ask the CA admin for "
                          "'mailca acme eab new --allow NAME' and pass --eab-kid/--eab-hmac-key")
        if eab is not None:
            eab_rec = self.check_eab(base, eab, j)
        acct = {"id": new_id(), "jwk": j.jwk.public_key().to_json(), "thumbprint": thumb, "status": "valid",
                "contact": contact[:4], "eab": eab_rec["id"] if eab_rec else None, "created": _iso(_now())}
        with self.state.locked():
            again = self._thumbs.get(thumb)  # a concurrent newAccount with the same key won the race
            if again is not None and self.state.get("accounts", again) is not None:
                acct = self.state.get("accounts", again)
                return 200, self.account_view(acct), {"Location": f"{base}/acme/acct/{acct['id']}"}
            if eab_rec is not None:
                cur = self.state.get("eab", eab_rec["id"])
                if cur.get("account"):
                    raise Problem("unauthorized", f"external account binding {eab_rec['id']} is already bound to an account", 401)
                cur["account"] = acct["id"]
                self.state.put("eab", cur, private=True)
            self.state.put("accounts", acct)
            self._thumbs[thumb] = acct["id"]
        return 201, self.account_view(acct), {"Location": f"{base}/acme/acct/{acct['id']}"}

    def check_eab(self, base: str, eab, j: Jws) -> dict:
        import josepy as jose

        if not isinstance(eab, dict):
            raise Problem("malformed", "externalAccountBinding is not a JWS object")
        try:
            prot = json.loads(unb64u(eab["protected"]))
            inner = jose.JWS.from_json(eab)
        except Exception:
            raise Problem("malformed", "externalAccountBinding is not a flattened JWS") from None
        if prot.get("alg") not in ("HS256", "HS384", "HS512"):
            raise Problem("malformed", "externalAccountBinding must be signed with HS256")
        if prot.get("url") != f"{base}/acme/new-account" or "nonce" in prot:
            raise Problem("malformed", "externalAccountBinding url must be the newAccount URL and carry no nonce")
        rec = self.state.get("eab", str(prot.get("kid", "")))
        if rec is None or rec.get("revoked"):
            raise Problem("unauthorized", f"unknown or revoked external account binding kid {_clean(prot.get('kid'))!r}", 401)
        try:
            ok = inner.verify(jose.JWKOct(key=unb64u(rec["hmac"])))
        except Exception:
            ok = False
        if not ok:
            raise Problem("unauthorized", "the externalAccountBinding MAC does not verify with that kid's HMAC key", 401)
        try:
            bound = jose.JWK.from_json(json.loads(inner.payload))
        except Exception:
            raise Problem("malformed", "the externalAccountBinding payload is not a JWK") from None
        if bound.thumbprint() != j.jwk.thumbprint():
            raise Problem("unauthorized", "the externalAccountBinding binds a different account key", 401)
        if rec.get("account"):
            raise Problem("unauthorized", f"external account binding {rec['id']} is already bound to an account", 401)
        return rec

    def account_view(self, acct: dict) -> dict:
        return {"status": acct["status"], "contact": acct.get("contact", [])}

    def update_account(self, base: str, aid: str, j: Jws) -> dict:
        if j.account["id"] != aid:
            raise Problem("unauthorized", "an account can only be read or changed with its own key", 401)
        p = self.payload_json(j)
        acct = j.account
        if p.get("status") == "deactivated" or "contact" in p:
            with self.state.locked():
                acct = self.state.get("accounts", aid)
                if p.get("status") == "deactivated":
                    acct["status"] = "deactivated"
                if isinstance(p.get("contact"), list):
                    acct["contact"] = [c for c in p["contact"] if isinstance(c, str)][:4]
                self.state.put("accounts", acct)
        return self.account_view(acct)

    def key_change(self, base: str, j: Jws) -> dict:
        import josepy as jose

        url = f"{base}/acme/key-change"
        try:
            inner_body = j.payload
            prot, inner = _parse_jws(inner_body)
        except Problem:
            raise
        if prot.get("url") != url or "jwk" not in prot:
            raise Problem("malformed", "the inner keyChange JWS must carry the keyChange url and the new 'jwk'")
        try:
            new_key = jose.JWK.from_json(prot["jwk"])
            ok = inner.verify(new_key)
        except Exception:
            ok = False
        if not ok:
            raise Problem("malformed", "the inner keyChange JWS does not verify with its 'jwk'")
        p = json.loads(inner.payload)
        old = jose.JWK.from_json(p.get("oldKey") or {})
        if p.get("account") != f"{base}/acme/acct/{j.account['id']}" or old.thumbprint() != j.jwk.thumbprint():
            raise Problem("malformed", "keyChange: 'account' or 'oldKey' do not match the signing account")
        thumb = b64u(new_key.thumbprint())
        with self.state.locked():
            if thumb in self._thumbs:
                raise Problem("conflict", "the new key already belongs to an account", 409)
            acct = self.state.get("accounts", j.account["id"])
            self._thumbs.pop(acct["thumbprint"], None)
            acct["jwk"], acct["thumbprint"] = new_key.to_json(), thumb
            self.state.put("accounts", acct)
            self._thumbs[thumb] = acct["id"]
        return self.account_view(acct)

    # -------------------------------------------------------------- orders
    def allowed_names(self, acct: dict) -> list[str] | None:
        if not acct.get("eab"):
            return None  # no binding (EAB off): the CA's domains and the profile decide
        rec = self.state.get("eab", acct["eab"])
        if rec is None or rec.get("revoked"):
            raise Problem("unauthorized", "this account's external account binding was revoked", 401)
        return rec.get("allow", [])

    def new_order(self, base: str, j: Jws) -> tuple[dict, str]:
        from ..issuance import ca as camod

        p = self.payload_json(j)
        idents = p.get("identifiers")
        if not isinstance(idents, list) or not idents:
            raise Problem("malformed", "newOrder needs a non-empty 'identifiers' list")
        ca = camod.load_ca(self.store)
        profile = camod.profile_for(ca, self.cfg.profile)
        allow = self.allowed_names(j.account)
        names: list[str] = []
        subs = []
        for ident in idents:
            if not isinstance(ident, dict) or ident.get("type") != "dns" or not isinstance(ident.get("value"), str):
                raise Problem("unsupportedIdentifier", "only identifiers of type 'dns' are supported")
            raw = ident["value"]
            try:
                n = namesmod.normalize_dns_name(raw, allow_wildcard=profile.allow_wildcard)
                camod.normalize_request(ca, profile, [n], [], [])
            except UsageError as exc:
                subs.append({"type": ERR + "rejectedIdentifier", "detail": _clean(str(exc)),
                             "identifier": {"type": "dns", "value": _clean(raw, 255)}})
                continue
            if allow is not None and not allowed_by(allow, n):
                subs.append({"type": ERR + "rejectedIdentifier",
                             "detail": f"{n} is not allowed by this account's external account binding "
                                       f"(allowed: {', '.join(allow)})",
                             "identifier": {"type": "dns", "value": n}})
                continue
            if n not in names:
                names.append(n)
        if subs:
            raise Problem("rejectedIdentifier", "; ".join(s["detail"] for s in subs)[:400], 400, subs)
        try:
            camod.normalize_request(ca, profile, names, [], [])
        except UsageError as exc:
            raise Problem("rejectedIdentifier", str(exc)) from None
        now = _now()
        expires = _iso(now + ORDER_LIFETIME)
        oid = new_id()
        authzs = []
        reused = {}
        valid = (self.state.get("accounts", j.account["id"]) or {}).get("authz") or {}
        for n in names:
            prev = valid.get(n)
            if prev and certinfo.parse_iso(prev["expires"]) > now:
                a = self.state.get("authz", prev["id"])
                if a is not None and a.get("status") == "valid" and a.get("account") == j.account["id"]:
                    reused[n] = a["id"]  # RFC 8555 §7.1.4: a valid authorization may serve later orders
        for n in names:
            if n in reused:
                continue
            wildcard = n.startswith("*.")
            value = n[2:] if wildcard else n
            types = ["dns-01"] if wildcard else ["http-01", "tls-alpn-01", "dns-01"]
            authzs.append({"id": new_id(), "order": oid, "account": j.account["id"],
                           "identifier": {"type": "dns", "value": value}, "wildcard": wildcard,
                           "status": "pending", "expires": expires,
                           "challenges": [{"type": t, "token": b64u(secrets.token_bytes(24)),
                                           "status": "pending"} for t in types]})
        order = {"id": oid, "account": j.account["id"], "status": "pending", "expires": expires,
                 "identifiers": [{"type": "dns", "value": n} for n in names],
                 "authorizations": [reused[n] if n in reused else next(a["id"] for a in authzs if _authz_name(a) == n)
                                    for n in names],
                 "certificate": None, "created": _iso(now)}
        with self.state.locked():
            self._rate_limit(j.account, now)
            for a in authzs:
                self.state.put("authz", a)
            self.state.put("orders", order)
        return self.order_view(base, order), f"{base}/acme/order/{oid}"

    def _rate_limit(self, acct: dict, now: _dt.datetime) -> None:
        acct = self.state.get("accounts", acct["id"])
        hour = now.strftime("%Y%m%d%H")
        rl = acct.get("rate") or {}
        count = rl.get(hour, 0)
        if count >= self.cfg.orders_per_hour:
            raise Problem("rateLimited", f"account {acct['id']} placed {count} orders this hour; "
                                         f"the limit is {self.cfg.orders_per_hour} (--orders-per-hour)", 429)
        acct["rate"] = {hour: count + 1}
        self.state.put("accounts", acct)

    def order_view(self, base: str, order: dict) -> dict:
        v = {"status": order["status"], "expires": order["expires"], "identifiers": order["identifiers"],
             "authorizations": [f"{base}/acme/authz/{a}" for a in order["authorizations"]],
             "finalize": f"{base}/acme/order/{order['id']}/finalize"}
        if order.get("certificate"):
            v["certificate"] = f"{base}/acme/cert/{order['certificate']}"
        if order.get("error"):
            v["error"] = order["error"]
        return v

    def _owned(self, kind: str, oid: str, j: Jws) -> dict:
        obj = self.state.get(kind, oid)
        if obj is None:
            raise Problem("malformed", f"no such {kind[:-1] if kind.endswith('s') else kind} {_clean(oid)!r}", 404)
        if obj.get("account") != j.account["id"]:
            raise Problem("unauthorized", f"this {kind.rstrip('s')} belongs to another account", 403)
        return obj

    def get_order(self, base: str, oid: str, j: Jws) -> dict:
        order = self._owned("orders", oid, j)
        return self.order_view(base, self._refresh_order(order))

    def _refresh_order(self, order: dict) -> dict:
        """pending -> ready when every authorization is valid; -> invalid when one is, or
        when the order expired unfinished (e.g. its client gave up while the server was down)."""
        if order["status"] in ("pending", "ready") and certinfo.parse_iso(order["expires"]) <= _now():
            with self.state.locked():
                order = self.state.get("orders", order["id"])
                if order["status"] in ("pending", "ready"):
                    order["status"] = "invalid"
                    order["error"] = {"type": ERR + "malformed", "detail": "the order expired before it was finalized"}
                    self.state.put("orders", order)
            return order
        if order["status"] != "pending":
            return order
        states = [(self.state.get("authz", a) or {}).get("status") for a in order["authorizations"]]
        new = "ready" if all(s == "valid" for s in states) else "invalid" if "invalid" in states else "pending"
        if new != "pending":
            with self.state.locked():
                order = self.state.get("orders", order["id"])
                if order["status"] == "pending":
                    order["status"] = new
                    if new == "invalid":
                        order["error"] = {"type": ERR + "unauthorized", "detail": "an authorization failed"}
                    self.state.put("orders", order)
        return order

    def authz_view(self, base: str, a: dict) -> dict:
        v = {"status": a["status"], "expires": a["expires"], "identifier": a["identifier"],
             "challenges": [self.chall_view(base, a, c) for c in a["challenges"]]}
        if a.get("wildcard"):
            v["wildcard"] = True
        return v

    def chall_view(self, base: str, a: dict, c: dict) -> dict:
        v = {"type": c["type"], "url": f"{base}/acme/chall/{a['id']}/{c['type']}", "token": c["token"],
             "status": c["status"]}
        if c.get("validated"):
            v["validated"] = c["validated"]
        if c.get("error"):
            v["error"] = c["error"]
        return v

    def get_authz(self, base: str, aid: str, j: Jws) -> dict:
        a = self._owned("authz", aid, j)
        p = self.payload_json(j)
        if p.get("status") == "deactivated":
            with self.state.locked():
                a = self.state.get("authz", aid)
                a["status"] = "deactivated"
                self.state.put("authz", a)
        return self.authz_view(base, a)

    def challenge(self, base: str, aid: str, ctype: str, j: Jws) -> tuple[dict, str]:
        a = self._owned("authz", aid, j)
        chall = next((c for c in a["challenges"] if c["type"] == ctype), None)
        if chall is None:
            raise Problem("malformed", f"authorization {aid} has no {_clean(ctype)!r} challenge", 404)
        up = f"<{base}/acme/authz/{aid}>;rel=\"up\""
        if a["status"] != "pending" or chall["status"] != "pending":
            return self.chall_view(base, a, chall), up
        ka = key_authorization(chall["token"], j.jwk)
        name = a["identifier"]["value"]
        error = None
        try:
            if ctype == "http-01":
                self.validate_http01(name, chall["token"], ka)
            elif ctype == "tls-alpn-01":
                self.validate_tlsalpn01(name, ka)
            elif ctype == "dns-01":
                self.validate_dns01(name, ka)
        except Problem as p:
            error = p.doc()
        with self.state.locked():
            a = self.state.get("authz", aid)
            for c in a["challenges"]:
                if c["type"] == ctype:
                    if error is None:
                        c["status"], c["validated"] = "valid", _iso(_now())
                    else:
                        c["status"], c["error"] = "invalid", error
                    chall = c
            a["status"] = "valid" if error is None else "invalid"
            self.state.put("authz", a)
            if error is None:
                acct = self.state.get("accounts", a["account"])
                if acct is not None:
                    now = _now()
                    keep = {k: v for k, v in (acct.get("authz") or {}).items()
                            if certinfo.parse_iso(v["expires"]) > now}
                    keep[_authz_name(a)] = {"id": a["id"], "expires": a["expires"]}
                    acct["authz"] = keep
                    self.state.put("accounts", acct)
        return self.chall_view(base, a, chall), up

    # -------------------------------------------------------------- validation
    def _target(self, name: str) -> str:
        if self.cfg.resolve_to:
            return self.cfg.resolve_to
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            raise Problem("dns", f"cannot resolve {name}") from None
        return infos[0][4][0]

    def validate_http01(self, name: str, token: str, ka: str) -> None:
        addr = self._target(name)
        conn = http.client.HTTPConnection(addr, self.cfg.http01_port, timeout=VALIDATION_TIMEOUT)
        try:
            conn.request("GET", f"/.well-known/acme-challenge/{token}", headers={"Host": name, "User-Agent": "mailca-acme"})
            resp = conn.getresponse()
            body = resp.read(4096)
        except (OSError, http.client.HTTPException) as exc:
            raise Problem("connection", f"http-01: cannot fetch http://{name}:{self.cfg.http01_port}"
                                        f"/.well-known/acme-challenge/{token}: {type(exc).__name__}") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise Problem("unauthorized", f"http-01: http://{name}/.well-known/acme-challenge/{token} answered {resp.status}", 403)
        got = body.decode("ascii", "replace").strip()
        if got != ka:
            raise Problem("unauthorized", f"http-01: the response for {name} is not the expected key authorization "
                                          f"(got {_clean(got, 80)!r})", 403)

    def validate_tlsalpn01(self, name: str, ka: str) -> None:
        from cryptography import x509

        addr = self._target(name)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["acme-tls/1"])
        try:
            with socket.create_connection((addr, self.cfg.tlsalpn01_port), timeout=VALIDATION_TIMEOUT) as raw:
                with ctx.wrap_socket(raw, server_hostname=name) as tls:
                    alpn = tls.selected_alpn_protocol()
                    der = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError) as exc:
            raise Problem("tls", f"tls-alpn-01: cannot handshake with {name}:{self.cfg.tlsalpn01_port}: {type(exc).__name__}") from None
        if alpn != "acme-tls/1":
            raise Problem("unauthorized", f"tls-alpn-01: {name} did not negotiate acme-tls/1", 403)
        cert = x509.load_der_x509_certificate(der)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31"))
        except x509.ExtensionNotFound:
            raise Problem("unauthorized", "tls-alpn-01: the certificate lacks the SAN or the acmeIdentifier extension", 403) from None
        want = b"\x04\x20" + hashlib.sha256(ka.encode()).digest()
        if [s.lower() for s in sans] != [name] or not ext.critical or ext.value.value != want:
            raise Problem("unauthorized", f"tls-alpn-01: the certificate for {name} does not carry the expected key authorization", 403)

    def validate_dns01(self, name: str, ka: str) -> None:
        import dns.flags
        import dns.message
        import dns.query
        import dns.rdatatype

        if not self.cfg.resolver:
            raise Problem("dns", "dns-01 needs the server started with --resolver ADDR[:PORT] (a validating resolver)")
        want = b64u(hashlib.sha256(ka.encode()).digest())
        q = dns.message.make_query(f"_acme-challenge.{name}", dns.rdatatype.TXT, want_dnssec=True)
        q.flags |= dns.flags.AD
        try:
            r = dns.query.udp(q, self.cfg.resolver, port=self.cfg.resolver_port, timeout=VALIDATION_TIMEOUT)
            if r.flags & dns.flags.TC:
                r = dns.query.tcp(q, self.cfg.resolver, port=self.cfg.resolver_port, timeout=VALIDATION_TIMEOUT)
        except Exception as exc:
            raise Problem("dns", f"dns-01: the resolver gave no answer for _acme-challenge.{name}: {type(exc).__name__}") from None
        if not r.flags & dns.flags.AD:
            raise Problem("dns", f"dns-01: the resolver's answer for _acme-challenge.{name} is not DNSSEC-validated "
                                 "(no AD bit): sign the zone, or give --resolver a validating resolver", 400)
        txts = []
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rd in rrset:
                    txts.append(b"".join(rd.strings).decode("ascii", "replace"))
        if want not in txts:
            raise Problem("unauthorized", f"dns-01: no TXT record _acme-challenge.{name} with the expected digest", 403)

    # -------------------------------------------------------------- finalize
    def finalize(self, base: str, oid: str, j: Jws) -> tuple[dict, str]:
        from ..issuance import ca as camod

        order = self._refresh_order(self._owned("orders", oid, j))
        if order["status"] != "ready":
            raise Problem("orderNotReady", f"order {oid} is {order['status']}, not ready: complete its authorizations first", 403)
        p = self.payload_json(j)
        try:
            der = unb64u(p.get("csr", ""))
        except (ValueError, TypeError):
            raise Problem("malformed", "finalize: 'csr' is not base64url") from None
        label = f"of order {oid}"
        wanted = sorted(i["value"] for i in order["identifiers"])

        def check(dns_names, ips, kt, pub):
            if ips or sorted(dns_names) != wanted:
                raise Problem("badCSR", f"the CSR names {', '.join(dns_names + ips)}; the order is for exactly "
                                        f"{', '.join(wanted)}")
            resolver = (self.cfg.resolver, self.cfg.resolver_port) if self.cfg.resolver else None
            dane_check(self.store, dns_names, kt, pub, resolver=resolver, ns_port=self.cfg.ns_port,
                       ports=self.cfg.dane_ports, lock=self.state.tlock)

        try:
            csr = camod.parse_csr(der, label)
            issued = camod.sign_parsed_csr(self.store, csr, label, extra_sans=[], ips=[], days=None,
                                           profile_name=self.cfg.profile, source="acme", check=check,
                                           lock=self.state.tlock)
        except Problem:
            raise
        except MailcaError as exc:
            raise Problem("badCSR", str(exc)) from None
        serial = issued.entry["serial"]
        with self.state.locked():
            self.state.put("certs", {"id": _serial_id(serial), "serial": serial, "account": j.account["id"],
                                     "order": oid, "path": issued.entry["path"]})
            order = self.state.get("orders", oid)
            order["status"], order["certificate"] = "valid", _serial_id(serial)
            self.state.put("orders", order)
        return self.order_view(base, order), f"{base}/acme/order/{oid}"

    def certificate(self, cid: str, j: Jws) -> bytes:
        rec = self._owned("certs", cid, j)
        path = self.store.path / rec["path"] / "fullchain.pem"
        with open(path, "rb") as fh:
            return fh.read(1 << 20)

    # -------------------------------------------------------------- revoke
    def revoke(self, j: Jws) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        from ..lifecycle import revoke as revmod

        p = self.payload_json(j)
        try:
            cert = x509.load_der_x509_certificate(unb64u(p.get("certificate", "")))
        except Exception:
            raise Problem("malformed", "revokeCert: 'certificate' is not a base64url DER certificate") from None
        serial = format(cert.serial_number, "x")
        rec = self.state.get("certs", _serial_id(serial))
        entry = next((e for e in self.store.load_index()["certs"] if int(e["serial"], 16) == cert.serial_number), None)
        if entry is None or entry.get("cert_sha256") != certinfo.cert_sha256(cert):
            raise Problem("malformed", "revokeCert: this CA did not issue that certificate", 404)
        if entry.get("status") == "revoked":
            raise Problem("alreadyRevoked", f"certificate {entry['serial']} is already revoked")
        if j.account is not None:
            if rec is None or rec.get("account") != j.account["id"]:
                raise Problem("unauthorized", "revokeCert: this account did not order that certificate", 403)
        else:
            spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
            if spki(j.jwk.key) != spki(cert.public_key()):
                raise Problem("unauthorized", "revokeCert: the JWS is signed neither by the ordering account nor by the certificate's key", 403)
        reasons = {0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged", 4: "superseded", 5: "cessationOfOperation"}
        code = p.get("reason", 0)
        if code not in reasons:
            raise Problem("badRevocationReason", f"reason {code!r} is not one of {sorted(reasons)}")
        try:
            with self.state.tlock:
                revmod.revoke(self.store, entry["serial"], reason=reasons[code] if "reason" in p else None)
        except MailcaError as exc:
            raise Problem("serverInternal", str(exc), 500) from None


def _authz_name(a: dict) -> str:
    return ("*." if a.get("wildcard") else "") + a["identifier"]["value"]


def _serial_id(serial: str) -> str:
    return serial.lower().rjust(8, "0")


# ------------------------------------------------------------------ DANE
DANE_PROBLEM = "badCSR"


def dane_check(store, dns_names: list[str], kt: str, pub, *, now: _dt.datetime | None = None,
               resolver: tuple[str, int] | None = None, ns_port: int = 53, ports=(25,), lock=None) -> None:
    """Refuse a CSR with a new key for a name whose current key is behind a published TLSA
    3 1 1 record, unless the new key's own 3 1 1 record has passed the publication gate.

    What the store knows (no DNS query here):
    * the DNS gate's observations (``dane-seen.json``, written by 'mailca rekey --commit' /
      'mailca renew' with a resolver): a 3 1 1 record of the current key seen at
      ``_PORT._tcp.NAME`` means DANE is in use; the new key's record seen there for 2 x TTL
      means the new key may be served;
    * a staged next key ('mailca rekey NAME --stage'): a rollover is under way, so DANE is in
      use; the staged key itself is accepted once its records were printed 2 x TTL ago;
    * with a resolver (``--resolver``): the DNS itself, through the DNS gate's code - every
      authoritative server and the validating resolver are asked for ``_PORT._tcp.NAME`` TLSA;
      the current key's 3 1 1 served anywhere means published, and the new key passes once the
      gate has seen its 3 1 1 everywhere for 2 x TTL (its clock lives in dane-seen.json).
    """
    from cryptography.hazmat.primitives import serialization

    from ..dns import client as dnsclient
    from ..dns import gate
    from ..lifecycle import rekey as rekeymod
    from ..storage.index import Index

    now = now or _now()
    spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha256(spki).hexdigest()
    idx = Index.load(store)
    try:
        seen = gate.load_state(store)["seen"]
    except MailcaError:
        seen = {}
    for name in dns_names:
        cur = idx.current(name, kt)
        if cur is None or cur.get("status") == "revoked" or cur.get("spki_sha256") == digest:
            continue
        owner = re.compile(r"^_[0-9]{1,5}\._tcp\." + re.escape(name) + r"\. ")
        cur_rd, new_rd = dnsclient.rdata_key(3, 1, 1, cur["spki_sha256"]), dnsclient.rdata_key(3, 1, 1, digest)
        published = any(owner.match(k) and k.endswith(" " + cur_rd) for k in seen)
        try:
            staged = rekeymod.read_staged(store, cur)
        except MailcaError:
            staged = None
        published = published or staged is not None
        owners = [f"_{p}._tcp.{name}." for p in ports]
        if not published and resolver is not None:
            for o in owners:
                try:
                    views = gate.observe(o, resolver, ns_port)
                except MailcaError as exc:
                    raise Problem("serverInternal", f"DANE: cannot ask the DNS whether {name} publishes TLSA records "
                                                    f"({exc}); a new key is refused until it can", 503) from None
                published = published or any(v.error is None and cur_rd in v.rdatas for v in views)
        if not published:
            continue
        gated = False
        if resolver is not None:
            needs = [gate.Need(o, frozenset({new_rd}), "the new key of an ACME order") for o in owners]
            try:
                with (lock if lock is not None else contextlib.nullcontext()):
                    gated = gate.check(store, needs, resolver, ns_port, now=now).ready
            except MailcaError:
                gated = False
        for k, v in seen.items():
            if owner.match(k) and k.endswith(" " + new_rd):
                with_ttl = certinfo.parse_iso(v["first_seen"]) + _dt.timedelta(seconds=2 * int(v.get("ttl") or 0))
                gated = gated or with_ttl <= now
        if staged is not None and staged.get("spki_sha256") == digest:
            ready = rekeymod.commit_ready_at(staged)
            gated = gated or (ready is not None and ready <= now)
        if gated:
            continue
        raise Problem(
            DANE_PROBLEM,
            f"DANE: {name} has a published TLSA 3 1 1 record for its current key "
            f"({cur['spki_sha256'][:16]}...) and this CSR carries a new key, which would break DANE for "
            "mail sent to it. Renew with the same key (certbot --reuse-key, lego renew --reuse-key, "
            "dehydrated PRIVATE_KEY_RENEW=\"no\"), or stage the next key's TLSA record first and let it "
            "pass the publication gate (2 x TTL), then order with that key")


# ------------------------------------------------------------------ HTTP
class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mailca-acme"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    acme: AcmeServer = None  # type: ignore[assignment]

    def log_message(self, fmt, *args):  # quiet; errors are returned to the client
        pass

    def _base(self) -> str:
        host = self.headers.get("Host") or f"{self.acme.cfg.name}:{self.acme.cfg.listen_port}"
        if not HOST_RE.match(host):
            host = f"{self.acme.cfg.name}:{self.acme.cfg.listen_port}"
        return self.acme.base(host)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None, *, nonce: bool = True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if nonce:
            self.send_header("Replay-Nonce", self.acme.state.new_nonce())
        base = self._base()
        self.send_header("Link", f"<{base}/directory>;rel=\"index\"")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _problem(self, p: Problem):
        self._send(p.status, json.dumps(p.doc()).encode(), "application/problem+json")

    def do_HEAD(self):
        if urlsplit(self.path).path == "/acme/new-nonce":
            self._send(200, b"", "application/octet-stream")
        else:
            self._send(405, b"", "text/plain")

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/directory":
            self._json(200, self.acme.directory(self._base()))
        elif path == "/acme/new-nonce":
            self._send(204, b"", "application/octet-stream")
        else:
            self._problem(Problem("malformed", "use POST-as-GET for ACME resources (RFC 8555 §6.3)", 405))

    def do_POST(self):
        try:
            self._post()
        except Problem as p:
            self._problem(p)
        except Exception as exc:  # never a traceback to a peer
            self._problem(Problem("serverInternal", f"internal error: {type(exc).__name__}", 500))

    def _post(self):
        a = self.acme
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/jose+json":
            raise Problem("malformed", "Content-Type must be application/jose+json", 415)
        try:
            n = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            raise Problem("malformed", f"a request body of at most {MAX_BODY} bytes with Content-Length is required", 413)
        body = self.rfile.read(n)
        base = self._base()
        path = urlsplit(self.path).path
        url = base + path
        m = re.fullmatch(r"/acme/(acct|order|authz|cert)/([A-Za-z0-9_-]{8,64})(/finalize)?", path)
        mc = re.fullmatch(r"/acme/chall/([A-Za-z0-9_-]{8,64})/(http-01|tls-alpn-01|dns-01)", path)
        if path == "/acme/new-account":
            j = a.verify(body, url, allow_jwk=True)
            if j.account is not None:
                raise Problem("malformed", "newAccount must be signed with a 'jwk'")
            status, view, hdrs = a.new_account(base, j)
            return self._json(status, view, hdrs)
        if path == "/acme/revoke-cert":
            j = a.verify(body, url, allow_jwk=True)
            a.revoke(j)
            return self._send(200, b"", "application/json")
        j = a.verify(body, url)
        if path == "/acme/new-order":
            view, loc = a.new_order(base, j)
            return self._json(201, view, {"Location": loc})
        if path == "/acme/key-change":
            return self._json(200, a.key_change(base, j))
        if mc:
            view, up = a.challenge(base, mc.group(1), mc.group(2), j)
            return self._json(200, view, {"Link": up})
        if m:
            kind, oid, fin = m.groups()
            if kind == "acct":
                return self._json(200, a.update_account(base, oid, j), {"Location": url})
            if kind == "order" and fin:
                view, loc = a.finalize(base, oid, j)
                return self._json(200, view, {"Location": loc})
            if kind == "order":
                return self._json(200, a.get_order(base, oid, j), {"Location": url})
            if kind == "authz":
                return self._json(200, a.get_authz(base, oid, j))
            if kind == "cert":
                return self._send(200, a.certificate(oid, j), "application/pem-certificate-chain")
        raise Problem("malformed", f"no ACME resource at {_clean(path, 100)}", 404)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr, handler, ctx: ssl.SSLContext, family):
        self.address_family = family
        self._ctx = ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = super().get_request()
        sock.settimeout(30)
        return sock, addr

    def finish_request(self, request, client_address):
        try:
            tls = self._ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def serve(store, cfg: ServerConfig, *, ready=None):
    """Serve until interrupted.  ``ready(cfg)`` is called once the socket listens."""
    import ipaddress

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    handler = type("Handler", (_Handler,), {"acme": AcmeServer(store, cfg)})
    fam = socket.AF_INET6 if ipaddress.ip_address(cfg.listen_host).version == 6 else socket.AF_INET
    srv = _Server((cfg.listen_host, cfg.listen_port), handler, ctx, fam)
    cfg.listen_port = srv.server_address[1]
    if ready is not None:
        ready(cfg)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()


# ------------------------------------------------------------------ start-up
def server_certificate(store, name: str, listen_host: str, *, now: _dt.datetime | None = None) -> tuple[str, str]:
    """(fullchain, key) paths of the server's own certificate for ``name`` (plus the listen
    address when the CA's profile permits IP SANs), issued by the store itself and re-issued
    when a third of its lifetime is left or its names changed."""
    import ipaddress

    from ..issuance import ca as camod
    from ..storage.index import Index

    ca = camod.load_ca(store)
    profile = camod.profile_for(ca, None)
    n = namesmod.normalize_dns_name(name)
    ips = []
    ip = ipaddress.ip_address(listen_host)
    if profile.allow_ip and any(ip in ipaddress.ip_network(r, strict=False) for r in ca.state.permitted_ip_ranges):
        ips = [str(ip)]
    now = now or certinfo.utcnow()
    cur = Index.load(store).current(n, "ecdsa-p256")
    live = store.live_dir(n, "ecdsa-p256")
    fresh = False
    if cur is not None and cur.get("status") != "revoked" and (live / "key.pem").exists():
        nb, na = certinfo.parse_iso(cur["not_before"]), certinfo.parse_iso(cur["not_after"])
        fresh = (na - now) > (na - nb) / 3 and sorted(cur.get("ips") or []) == ips
    if not fresh:
        camod.issue(store, camod.IssueRequest(dns_names=(n,), ips=tuple(ips), key_types=("ecdsa-p256",), replace=True),
                    now=now, ca=ca)
    return str(live / "fullchain.pem"), str(live / "key.pem")


def run(store, *, listen: str, name: str, http01_port: int, tlsalpn01_port: int, resolve_to: str | None,
        resolver: str | None, eab_required: bool, profile: str | None, orders_per_hour: int, ready=None,
        ns_port: int = 53, dane_ports: tuple = (25,)) -> None:
    import ipaddress

    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        port_n = int(port)
        if not 0 <= port_n <= 65535:
            raise ValueError
    except ValueError:
        raise UsageError(f"--listen {listen!r}: give ADDR:PORT with an IP address, e.g. 127.0.0.1:14000 or [::1]:14000") from None
    if resolve_to is not None:
        try:
            rip = ipaddress.ip_address(resolve_to)
        except ValueError:
            raise UsageError(f"--resolve-to {resolve_to!r} is not an IP address") from None
        if not rip.is_loopback:
            raise UsageError(f"--resolve-to {resolve_to!r}: only loopback addresses (127.0.0.0/8, ::1); it is a test option")
    rhost, rport = None, 53
    if resolver:
        rh, sep, rp = resolver.rpartition(":")
        if sep and rh and "]" not in rp and rh.count(":") == 0:
            rhost, rport = rh, int(rp) if rp.isdigit() else -1
        else:
            rhost = resolver.strip("[]")
        try:
            ipaddress.ip_address(rhost)
        except ValueError:
            raise UsageError(f"--resolver {resolver!r}: give ADDR[:PORT] with an IP address") from None
        if not 0 < rport < 65536:
            raise UsageError(f"--resolver {resolver!r}: bad port")
    cert, key = server_certificate(store, name, str(ip))
    cfg = ServerConfig(name=namesmod.normalize_dns_name(name), listen_host=str(ip), listen_port=port_n,
                       http01_port=http01_port, tlsalpn01_port=tlsalpn01_port, resolve_to=resolve_to,
                       resolver=rhost, resolver_port=rport, eab_required=eab_required, profile=profile,
                       orders_per_hour=orders_per_hour, cert_file=cert, key_file=key, ns_port=ns_port,
                       dane_ports=tuple(dane_ports))
    serve(store, cfg, ready=ready)

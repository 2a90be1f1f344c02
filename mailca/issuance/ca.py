"""CA operations: create the CA, load it, issue and sign server certificates.

Each operation is one straight line: validate input -> (lock) -> keys -> pure builders ->
lint + chain/hostname verification -> atomic store writes -> index.  Nothing is written
unless every check passed.  Command modules call these functions and format the result.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
from typing import NamedTuple
from pathlib import Path

from ..core import builders, certinfo, keys, names as namesmod, verify
from ..errors import StoreError, UsageError
from ..core.profiles import Profile, build_profile, load_profile, snapshot_id_of
from ..storage.castate import CA_META, CAState, load_castate, write_castate
from ..storage.index import Index
from ..storage.store import Store

__all__ = ["CA", "CA_META", "IssueRequest", "Issued", "load_ca", "init_ca", "issue", "sign_csr", "sign_parsed_csr", "load_csr", "parse_csr",
           "sign_leaf", "commit_version", "commit_csr_version", "normalize_request", "resolve_days",
           "resolve_key_types", "profile_for", "refuse_silent_replacement", "refuse_existing_ca", "new_serial",
           "version_files"]


# ------------------------------------------------------------------ loading
def intermediate_name(label: str) -> str:
    """'Example Org' -> 'Example Org Mail Intermediate CA', but 'Example Mail' -> 'Example Mail
    Intermediate CA' (no doubled word)."""
    words = label.split()
    return f"{label} Intermediate CA" if words and words[-1].lower() == "mail" else f"{label} Mail Intermediate CA"


class CA:
    """A loaded CA: certificates and metadata; the intermediate key is read on first use."""

    def __init__(self, store: Store, state: CAState, root, intermediate, intermediate_key=None):
        self.store = store
        self.state = state
        self.root = root  # x509.Certificate
        self.intermediate = intermediate
        self._intermediate_key = intermediate_key

    @property
    def meta(self) -> dict:
        """ca.json as read (prefer the typed :attr:`state`)."""
        return self.state.raw

    @property
    def domains(self) -> list[str]:
        return list(self.state.domains)

    @property
    def profile(self) -> Profile:
        return self.state.profile()

    @property
    def intermediate_key(self):
        if self._intermediate_key is None:
            self._intermediate_key = keys.load_private(str(self.store.ca_file("intermediate.key")))
            if keys.spki_der(self._intermediate_key.public_key()) != keys.spki_der(self.intermediate.public_key()):
                raise StoreError(
                    f"{self.store.ca_file('intermediate.key')} does not match intermediate.crt; restore both from a backup"
                )
        return self._intermediate_key

    def root_key(self, passphrase: bytes | None):
        return keys.load_private(str(self.store.ca_file("root.key")), passphrase)

    def constraints(self) -> builders.Constraints:
        return builders.Constraints(tuple(self.domains), self.state.permitted_ip_ranges)


def _load_cert(path: Path):
    from cryptography import x509

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; restore it from a backup") from None
    except PermissionError:
        raise StoreError(f"cannot read {path}: permission denied") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise StoreError(f"{path} is not a valid PEM certificate (corrupt?); restore it from a backup") from None


def load_ca(store: Store) -> CA:
    store.require_ca()
    state = load_castate(store)
    return CA(store, state, _load_cert(store.ca_file("root.crt")), _load_cert(store.ca_file("intermediate.crt")))


# --------------------------------------------------------------------- init
def new_serial() -> int:
    from cryptography import x509

    return x509.random_serial_number()  # 159 random bits: positive, <= 20 octets


def refuse_existing_ca(store: Store) -> None:
    """StoreError unless ``store`` is free for a new CA (no ca.json, no CA leftovers)."""
    if store.exists():
        raise StoreError(f"a CA already exists in {store.path}; refusing to overwrite it (use another --dir)")
    left = store.ca_leftovers()
    if left:
        raise StoreError(
            f"{store.path} already holds {', '.join(left)} but no ca/ca.json; refusing to create a CA over them "
            "(restore ca.json from a backup; if an interrupted 'mailca init' left them and nothing was issued, "
            "delete the directory and run init again)"
        )


def init_ca(store: Store, *, domains: list[str], org: str, profile: Profile, passphrase: bytes | None,
            key_type: str | None = None, now: _dt.datetime | None = None) -> CA:
    refuse_existing_ca(store)
    doms = []
    for d in domains:
        nd = namesmod.normalize_domain(d)
        if nd not in doms:
            doms.append(nd)
    if not doms:
        raise UsageError("at least one --domain is needed: the CA may only vouch for names under it (e.g. --domain example.org)")
    kt = keys.check_key_type(key_type or profile.ca_key_type)
    now = now or certinfo.utcnow()
    organization = (org or "").strip() or profile.subject.get("organization", "").strip() or doms[0]
    if len(organization) > 64 or not organization.isprintable():
        raise UsageError(
            f"organization name {organization!r} must be 1..64 printable characters (X.520 limit); "
            "give --org NAME within that limit"
        )
    subject = builders.SubjectFields(
        organization=organization,
        organizational_unit=profile.subject.get("organizational_unit", ""),
        country=profile.subject.get("country", ""),
        state=profile.subject.get("state", ""),
        locality=profile.subject.get("locality", ""),
    )
    constraints = builders.Constraints(tuple(doms), profile.permitted_ip_ranges)
    label = subject.organization[:43].rstrip()  # the CNs below must stay within 64 characters
    root_key = keys.generate(kt)
    int_key = keys.generate(kt)
    root = builders.build_root(
        root_key, common_name=f"{label} Root CA", subject=subject, constraints=constraints,
        not_before=now - _dt.timedelta(minutes=profile.backdate_minutes),
        not_after=now + _dt.timedelta(days=profile.root_days), serial=new_serial(),
    )
    inter = builders.build_intermediate(
        int_key.public_key(), issuer_cert=root, issuer_key=root_key, common_name=intermediate_name(label),
        subject=subject, constraints=constraints,
        not_before=now - _dt.timedelta(minutes=profile.backdate_minutes),
        not_after=min(now + _dt.timedelta(days=profile.intermediate_days), root.not_valid_after_utc), serial=new_serial(),
    )
    verify.check_lint(root, "root", max_days=profile.root_days)
    verify.check_lint(inter, "intermediate", max_days=profile.intermediate_days)
    verify.verify_ca_pair(inter, root)
    # Prove the chain works end to end (name constraints included) before writing it.
    probe_name = f"mailca-selftest.{doms[0]}"
    if len(probe_name) > namesmod.MAX_NAME:  # a domain so long that no subdomain fits
        probe_name = doms[0]
    probe_key = keys.generate("ecdsa-p256")
    probe = builders.build_leaf(
        probe_key.public_key(), issuer_cert=inter, issuer_key=int_key, dns_names=[probe_name],
        ip_addresses=[], not_before=now - _dt.timedelta(minutes=1), not_after=now + _dt.timedelta(days=1), serial=new_serial(),
    )
    verify.verify_server_chain(probe, [inter], root, [probe_name], now=now)

    pem = keys.ser().Encoding.PEM
    meta = {
        "version": 1,
        "domains": doms,
        "organization": subject.organization,
        "permitted_ip_ranges": list(profile.permitted_ip_ranges),
        "profile": profile.name,
        "profile_data": profile.raw,
        "key_type": kt,
        "created": certinfo.iso(now),
        "root_encrypted": bool(passphrase),
    }
    with store.lock():
        refuse_existing_ca(store)
        store.ensure_dir(store.ca_dir, durable=True)
        store.write_file(store.ca_file("root.key"), keys.private_pem(root_key, passphrase), private=True)
        store.write_file(store.ca_file("intermediate.key"), keys.private_pem(int_key), private=True)
        store.write_file(store.ca_file("root.crt"), root.public_bytes(pem))
        store.write_file(store.ca_file("intermediate.crt"), inter.public_bytes(pem))
        state = write_castate(store, meta)
        if not store.index_path.exists():
            Index.rebuild(store)
    return CA(store, state, root, inter, int_key)


# -------------------------------------------------------------------- issue
class IssueRequest(NamedTuple):
    dns_names: tuple[str, ...]
    ips: tuple[str, ...] = ()
    key_types: tuple[str, ...] = ()
    days: int | None = None
    profile: str | None = None
    replace: bool = False


class Issued:
    """One certificate version just written: its index entry and where it lives."""

    def __init__(self, entry: dict, live_dir: Path, version_dir: Path, cert=None):
        self.entry = entry
        self.live_dir = live_dir
        self.version_dir = version_dir
        self.cert = cert

    def as_dict(self, store: Store) -> dict:
        e = self.entry
        v = self.version_dir
        return {
            "name": e["name"],
            "names": e["names"],
            "ips": e["ips"],
            "key_type": e["key_type"],
            "serial": e["serial"],
            "not_before": e["not_before"],
            "not_after": e["not_after"],
            "sha256_fingerprint": certinfo.colon_hex(e["cert_sha256"]),
            "spki_sha256": e["spki_sha256"],
            "tlsa_3_1_1": f"3 1 1 {e['spki_sha256']}",
            "version": e["version"],
            "live_dir": str(self.live_dir),
            "paths": {
                "cert": str(self.live_dir / "cert.pem"),
                "chain": str(self.live_dir / "chain.pem"),
                "fullchain": str(self.live_dir / "fullchain.pem"),
                "key": str(self.live_dir / "key.pem"),
                "keyfullchain": str(self.live_dir / "keyfullchain.pem"),
            },
            "archive_dir": str(v),
        }


def normalize_request(ca: CA, profile: Profile, hosts: list[str], sans: list[str], ips: list[str], *,
                      cap: bool = True) -> tuple[list[str], list[str]]:
    """Validate every name against the name rules, the profile and the CA's constraints.
    ``cap``: enforce leaf.max_sans (renewal of an already issued name list does not, so a
    certificate issued before the cap existed keeps renewing)."""
    total = len(hosts) + len(sans) + len(ips)
    if cap and total > profile.max_sans:
        raise UsageError(
            f"{total} names requested; profile {profile.name!r} allows at most {profile.max_sans} per certificate "
            "(leaf.max_sans); split the names over several certificates"
        )
    dns: list[str] = []
    seen: set[str] = set()  # a list membership test here made signing quadratic in the names
    for raw in list(hosts) + list(sans):
        n = namesmod.normalize_dns_name(raw, allow_wildcard=profile.allow_wildcard)
        if not namesmod.within(n, ca.domains):
            raise UsageError(
                f"name {raw!r} is outside this CA's permitted domains ({', '.join(ca.domains)}); "
                "the name constraints would make every client reject it"
            )
        if n not in seen:
            seen.add(n)
            dns.append(n)
    if not dns:
        raise UsageError("no host name given: name at least one, e.g. 'mailca issue mail.example.org'")
    addrs: list[str] = []
    for raw in ips:
        a = namesmod.parse_ip(raw)
        if not profile.allow_ip:
            raise UsageError(f"--ip {raw!r}: this profile does not allow IP addresses (set leaf.allow_ip and ca.permitted_ip_ranges)")
        ranges = [ipaddress.ip_network(r, strict=False) for r in ca.state.permitted_ip_ranges]
        if not any(ipaddress.ip_address(a) in r for r in ranges):
            raise UsageError(
                f"--ip {raw!r} is outside the CA's permitted IP ranges ({', '.join(map(str, ranges)) or 'none'}); "
                "the name constraints would make clients reject it"
            )
        if a not in addrs:
            addrs.append(a)
    return dns, addrs


def version_files(key, cert, intermediate, root, *, key_pem: bytes | None = None) -> dict[str, tuple[bytes, bool]]:
    """The files of one certificate version: name -> (bytes, is_private).

    * cert.pem: the leaf; chain.pem: the intermediate; fullchain.pem: leaf + intermediate
      (Postfix ``smtpd_tls_cert_file``, Dovecot ``ssl_cert``);
    * key.pem: the private key (0600);
    * keyfullchain.pem: key, leaf, intermediate in one file (0600) - Postfix >= 3.4
      ``smtpd_tls_chain_files``, which reads key and chain atomically from one file;
    * fullchain-root.pem / keyfullchain-root.pem: the same with the root appended, for a
      DANE-TA (2 x x) record whose trust anchor is the root (the server must send it).
    """
    pem = keys.ser().Encoding.PEM
    kp = key_pem if key_pem is not None else keys.private_pem(key)
    c, i, r = cert.public_bytes(pem), intermediate.public_bytes(pem), root.public_bytes(pem)
    return {
        "cert.pem": (c, False),
        "chain.pem": (i, False),
        "fullchain.pem": (c + i, False),
        "fullchain-root.pem": (c + i + r, False),
        "key.pem": (kp, True),
        "keyfullchain.pem": (kp + c + i, True),
        "keyfullchain-root.pem": (kp + c + i + r, True),
    }


def sign_leaf(ca: CA, public_key, *, dns: list[str], ips: list[str], days: int, profile: Profile,
              now: _dt.datetime):
    """Build, lint and verify one leaf; returns the certificate (nothing written)."""
    not_after = now + _dt.timedelta(days=days)
    if not_after > ca.intermediate.not_valid_after_utc:
        raise UsageError(
            f"--days {days} would outlive the intermediate CA (expires {certinfo.iso(ca.intermediate.not_valid_after_utc)}); "
            "use fewer days or run 'mailca ca renew-intermediate' first"
        )
    cert = builders.build_leaf(
        public_key, issuer_cert=ca.intermediate, issuer_key=ca.intermediate_key, dns_names=dns, ip_addresses=ips,
        not_before=now - _dt.timedelta(minutes=profile.backdate_minutes), not_after=not_after,
        serial=new_serial(), crl_url=profile.crl_url or None,
    )
    verify.check_lint(cert, "leaf", max_days=days + profile.backdate_minutes / 1440)
    verify.verify_server_chain(cert, [ca.intermediate], ca.root, dns + ips, now=now)
    return cert


def resolve_days(profile: Profile, days: int | None) -> int:
    if days is None:
        return profile.leaf_days
    if days < 1 or days > profile.leaf_days:
        raise UsageError(f"--days {days} is outside 1..{profile.leaf_days} allowed by profile {profile.name!r}")
    return days


def resolve_key_types(profile: Profile, requested: list[str]) -> list[str]:
    out = []
    for k in requested or profile.leaf_key_types:
        kt = keys.check_key_type(k)
        if kt not in profile.allowed_key_types:
            raise UsageError(f"key type {kt} is not allowed by profile {profile.name!r}; allowed: {', '.join(profile.allowed_key_types)}")
        if kt in out:
            raise UsageError(f"key type {kt} given twice; a dual pair needs two different types, e.g. ecdsa-p256 and rsa-2048")
        out.append(kt)
    if len({k.split('-')[0] for k in out}) != len(out):
        raise UsageError(f"key types {', '.join(out)}: at most one ECDSA and one RSA certificate per host (Postfix/Dovecot pick by algorithm)")
    return out


def profile_for(ca: CA, profile_name: str | None) -> Profile:
    """The profile the user asked for (``--profile``): the CA's own by default."""
    return ca.profile if profile_name is None else load_profile(profile_name)


PROFILE_SNAPSHOTS = "profiles"  # ca/profiles/<digest>.json: file profiles as approved at issue/sign


def _snapshot_path(store: Store, digest: str) -> Path:
    return store.ca_dir / PROFILE_SNAPSHOTS / f"{digest}.json"


def snapshot_profile(store: Store, profile: Profile) -> None:
    """Keep a file profile's validated content in the store (under the lock), so that a
    renewal uses what was approved, not whatever the file says later."""
    if not profile.snapshot_id:
        return
    path = _snapshot_path(store, profile.snapshot_id)
    if path.exists():
        return
    store.ensure_dir(path.parent, durable=True)
    doc = {"name": profile.name, "profile_data": profile.raw}
    store.write_file(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def recorded_profile(ca: CA, profile_name: str | None) -> Profile:
    """The profile an index entry was issued with, for renewal: the CA's own, a packaged
    one by name, or the snapshot a file profile left in the store.  Never reads a file
    outside the store: an entry whose snapshot is missing renews with the CA's profile."""
    from ..core.profiles import packaged_names

    if not profile_name or profile_name == ca.profile.name:
        return ca.profile
    digest = snapshot_id_of(profile_name)
    if digest:
        try:
            doc = json.loads(_snapshot_path(ca.store, digest).read_text())
            if not isinstance(doc, dict) or not isinstance(doc.get("profile_data"), dict):
                raise ValueError("not a profile snapshot")
        except FileNotFoundError:
            return ca.profile
        except (OSError, ValueError) as exc:
            raise StoreError(f"profile snapshot {_snapshot_path(ca.store, digest)} is corrupt ({exc}); "
                             "restore it from a backup") from None
        return build_profile(profile_name, doc["profile_data"], merged=True)._replace(snapshot_id=digest)
    if profile_name in packaged_names():
        return load_profile(profile_name)
    return ca.profile


def commit_version(store: Store, ca: CA, *, name: str, key_type: str, key, cert, profile: Profile, source: str,
                   key_pem: bytes | None = None, durable: bool = True, index: Index | None = None,
                   save_index: bool = True) -> Issued:
    """Write a verified certificate as a new version, record it in ``index`` (the store's,
    loaded if None), write the index unless ``save_index`` is False (the caller saves it
    later; the journal covers a crash meanwhile), swap live."""
    files = version_files(key, cert, ca.intermediate, ca.root, key_pem=key_pem)
    meta = {"name": name, "key_type": key_type, "profile": profile.name, "source": source}
    files["meta.json"] = ((json.dumps(meta, sort_keys=True) + "\n").encode(), False)
    # Read the index before the first write: a corrupt index must stop us with nothing written.
    idx = index if index is not None else Index.load(store)
    snapshot_profile(store, profile)
    version, vdir = store.write_version(name, key_type, files, durable=durable)
    entry = certinfo.index_entry(cert, name=name, key_type=key_type, path=store.relpath(vdir), version=version,
                                 profile=profile.name, source=source)
    idx.add(entry)
    if save_index:
        idx.save(durable=durable)
    store.set_live(name, key_type, version)
    return Issued(entry, store.live_dir(name, key_type), vdir, cert)


def refuse_silent_replacement(store: Store, name: str, key_type: str, *, what: str) -> None:
    """A host that already has a live, unrevoked certificate is not replaced by accident:
    a new key breaks published TLSA 3 1 1 records, and a shorter name list breaks clients
    that use the dropped names; a CSR-signed version would leave live/ without key.pem.
    Called under the lock; ``--replace`` skips it."""
    cur = Index.load(store).current(name, key_type)
    if cur is None or cur.get("status") == "revoked":
        return
    raise UsageError(
        f"{name} ({key_type}) already has a live certificate (names: {', '.join(cur.get('names') or [name])}; "
        f"TLSA 3 1 1 {cur.get('spki_sha256', '')[:16]}...); to renew it with the same key run "
        f"'mailca renew {name} --force', to change its key safely for DANE 'mailca rekey {name} --stage'; "
        f"to {what} anyway (new key: publish its TLSA record first) add --replace"
    )


def issue(store: Store, req: IssueRequest, *, now: _dt.datetime | None = None, ca: CA | None = None) -> list[Issued]:
    """Issue one certificate per key type for the names in ``req`` (new keys)."""
    ca = ca or load_ca(store)
    profile = profile_for(ca, req.profile)
    dns, ips = normalize_request(ca, profile, list(req.dns_names), [], list(req.ips))
    kts = resolve_key_types(profile, list(req.key_types))
    days = resolve_days(profile, req.days)
    now = now or certinfo.utcnow()
    prepared = []
    for kt in kts:
        key = keys.generate(kt)
        cert = sign_leaf(ca, key.public_key(), dns=dns, ips=ips, days=days, profile=profile, now=now)
        prepared.append((kt, key, cert))
    out = []
    with store.lock():
        if not req.replace:
            for kt, _, _ in prepared:
                refuse_silent_replacement(store, dns[0], kt, what="issue a new certificate")
        for kt, key, cert in prepared:
            out.append(commit_version(store, ca, name=dns[0], key_type=kt, key=key, cert=cert, profile=profile, source="issue"))
    return out


# --------------------------------------------------------------------- sign
MAX_CSR_BYTES = 64 * 1024


def _csr_error(path: str, what: str) -> UsageError:
    return UsageError(f"CSR {path!r} {what}; make a new CSR (e.g. 'openssl req -new -sha256 -key KEY -subj /CN=HOST')")


def load_csr(path: str):
    """Read one PKCS#10 request (PEM with exactly one block, or DER) and check it is
    well-formed, version 1, self-signed with a SHA-2 family hash.  A CSR is hostile input:
    every failure is a one-line UsageError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CSR_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read CSR {path!r}: {exc.strerror}") from None
    return parse_csr(data, path)


def parse_csr(data: bytes, path: str):
    """The checks of :func:`load_csr` on bytes already read (``path`` names them in errors:
    a file name, or e.g. 'of order X' for a CSR that came over ACME)."""
    from cryptography import x509

    if len(data) > MAX_CSR_BYTES:
        raise _csr_error(path, f"is larger than {MAX_CSR_BYTES // 1024} KiB")
    if b"-----BEGIN" in data:
        blocks = data.count(b"-----BEGIN")
        if blocks != 1:
            raise _csr_error(path, f"holds {blocks} PEM blocks; give exactly one CERTIFICATE REQUEST "
                                   "(a trailing block would be silently ignored)")
        label = data.split(b"-----BEGIN ", 1)[1].split(b"-----", 1)[0]
        if label not in (b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"):
            raise _csr_error(path, f"is a PEM {label[:40].decode('ascii', 'replace')!r} block, not a CERTIFICATE REQUEST")
    try:
        csr = x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data)
    except x509.InvalidVersion as exc:
        raise _csr_error(path, f"has version {exc.parsed_version + 1}; only version 1 (0) exists") from None
    except (ValueError, TypeError):
        raise UsageError(f"{path!r} is not a PEM or DER certificate signing request (PKCS#10)") from None
    try:
        alg = csr.signature_hash_algorithm
    except Exception:  # UnsupportedAlgorithm and friends: hostile input
        raise _csr_error(path, "is signed with an unsupported algorithm") from None
    # None: Ed25519/Ed448 sign without a separate hash; their key type is refused later, with reasons
    if alg is not None and alg.name not in ("sha256", "sha384", "sha512"):
        if alg.name == "sha1":
            raise _csr_error(path, "is signed with SHA-1; make a new CSR with SHA-256")
        raise _csr_error(path, f"is signed with {alg.name.upper()}; make a new CSR with SHA-256")
    try:
        valid = csr.is_signature_valid
    except Exception:
        valid = False
    if not valid:
        raise UsageError(f"CSR {path!r} has a bad signature: it was altered or not signed by its own key")
    return csr


def csr_names(csr, path: str) -> tuple[list[str], list[str]]:
    """(DNS names incl. the CN, IP addresses) a CSR asks for; hostile encodings (bad UTF-8,
    8-bit IA5, non-string CN values, malformed extensions) become one-line errors."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names: list[str] = []
    ips: list[str] = []
    try:
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names += san.get_values_for_type(x509.DNSName)
            ips += [str(i) for i in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except x509.DuplicateExtension as exc:
        raise _csr_error(path, f"has a duplicate extension ({exc.oid.dotted_string})") from None
    except Exception as exc:  # ValueError, UnicodeError, UnsupportedGeneralNameType ...: hostile bytes
        raise _csr_error(path, f"has a malformed subject or extension ({type(exc).__name__})") from None
    for attr in cns:
        value = attr.value
        if not isinstance(value, str):
            raise _csr_error(path, "has a commonName that is not a text string")
        if value not in names:
            names.insert(0, value)
    return names, ips


def sign_csr(store: Store, csr_path: str, *, extra_sans: list[str], ips: list[str], days: int | None,
             profile_name: str | None, now: _dt.datetime | None = None, replace: bool = False) -> Issued:
    """Sign a CSR made on the mail server: only its public key and names are used."""
    return sign_parsed_csr(store, load_csr(csr_path), csr_path, extra_sans=extra_sans, ips=ips, days=days,
                           profile_name=profile_name, now=now, replace=replace)


def sign_parsed_csr(store: Store, csr, csr_path: str, *, extra_sans: list[str], ips: list[str], days: int | None,
                    profile_name: str | None, now: _dt.datetime | None = None, replace: bool = False,
                    source: str = "csr", check=None, lock=None) -> Issued:
    """The one CSR signing path ('mailca sign' and the ACME server's finalize).  ``check``:
    called as check(dns, ips, key_type, public_key) after the names are validated and before
    anything is signed (raise to refuse); ``lock``: an extra (thread) lock held with the
    store lock."""
    import contextlib

    ca = load_ca(store)
    profile = profile_for(ca, profile_name)
    try:
        pub = csr.public_key()
    except Exception:  # unsupported curve/algorithm in hostile bytes
        raise _csr_error(csr_path, "has a public key of an unsupported type; use ECDSA P-256/P-384 or RSA") from None
    kt = keys.key_type_of(pub)
    if kt not in profile.allowed_key_types:
        raise UsageError(f"the CSR's key type {kt} is not allowed by profile {profile.name!r}; allowed: {', '.join(profile.allowed_key_types)}")
    names, csr_ips = csr_names(csr, csr_path)
    dns, addrs = normalize_request(ca, profile, names, extra_sans, csr_ips + list(ips))
    if check is not None:
        check(dns, addrs, kt, pub)
    days = resolve_days(profile, days)
    now = now or certinfo.utcnow()
    cert = sign_leaf(ca, pub, dns=dns, ips=addrs, days=days, profile=profile, now=now)
    with (lock if lock is not None else contextlib.nullcontext()), store.lock():
        cur = Index.load(store).current(dns[0], kt)
        # Re-signing a CSR for a CSR lineage is how such a certificate is renewed; replacing a
        # store-key lineage would leave live/ without key.pem and keyfullchain.pem.
        if not replace and cur is not None and cur.get("source") not in ("csr", "acme"):
            refuse_silent_replacement(store, dns[0], kt, what="serve the CSR's key instead")
        return commit_csr_version(store, ca, dns[0], kt, cert, profile, source=source)


def commit_csr_version(store: Store, ca: CA, name: str, kt: str, cert, profile: Profile, *, source: str = "csr") -> Issued:
    """A CSR-signed version has no key in the store: the key stays on the mail server."""
    pem = keys.ser().Encoding.PEM
    c, i, r = cert.public_bytes(pem), ca.intermediate.public_bytes(pem), ca.root.public_bytes(pem)
    files = {
        "cert.pem": (c, False), "chain.pem": (i, False), "fullchain.pem": (c + i, False),
        "fullchain-root.pem": (c + i + r, False),
        "meta.json": ((json.dumps({"name": name, "key_type": kt, "profile": profile.name, "source": source}) + "\n").encode(), False),
    }
    idx = Index.load(store)  # before the first write: a corrupt index must stop us with nothing written
    snapshot_profile(store, profile)
    version, vdir = store.write_version(name, kt, files)
    entry = certinfo.index_entry(cert, name=name, key_type=kt, path=store.relpath(vdir), version=version,
                                 profile=profile.name, source=source)
    idx.add(entry)
    idx.save()
    store.set_live(name, kt, version)
    return Issued(entry, store.live_dir(name, kt), vdir, cert)

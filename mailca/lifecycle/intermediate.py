"""``mailca ca renew-intermediate``: re-certify the intermediate CA's key before it expires.

Same key, subject and name constraints, new validity, signed by the root (needs the root
passphrase).  Existing leaves keep chaining (same issuer name and key, same SKI), DANE 2 1 1
(SPKI of the intermediate) stays valid; 2 0 1 (hash of the whole certificate) changes.  Every
current leaf is verified against the new intermediate before it is written; the old one is
kept in ``ca/archive/``.
"""

from __future__ import annotations

import datetime as _dt
from typing import NamedTuple

from ..core import certinfo
from ..errors import StoreError, UsageError, VerificationError
from ..storage.index import current_by_lineage

__all__ = ["renew_intermediate", "IntermediateRenewal", "IntermediateCert"]


class IntermediateCert(NamedTuple):
    serial: str
    not_after: str
    tlsa_2_0_1: str          # "2 0 1 <sha256 of the whole certificate>"
    not_before: str = ""
    path: str = ""           # the new one: where it is (ca/intermediate.crt)
    archived_as: str = ""    # the old one: its copy under ca/archive/ (not for a dry run)


class IntermediateRenewal(NamedTuple):
    """What ``ca renew-intermediate`` did (or would do).  ``as_dict()`` is the ``--json`` output."""

    dry_run: bool
    old: IntermediateCert
    new: IntermediateCert
    tlsa_2_1_1: str          # unchanged: same key
    leaves_checked: int
    name_constraints: tuple[str, ...]

    def as_dict(self) -> dict:
        old = {"serial": self.old.serial, "not_after": self.old.not_after, "tlsa_2_0_1": self.old.tlsa_2_0_1}
        if self.old.archived_as:
            old["archived_as"] = self.old.archived_as
        new = {"serial": self.new.serial, "not_before": self.new.not_before, "not_after": self.new.not_after,
               "tlsa_2_0_1": self.new.tlsa_2_0_1, "path": self.new.path}
        return {"dry_run": self.dry_run, "old": old, "new": new, "tlsa_2_1_1": self.tlsa_2_1_1, "key_kept": True,
                "leaves_checked": self.leaves_checked, "name_constraints": list(self.name_constraints)}


def _subject_fields(cert):
    from cryptography.x509.oid import NameOID

    from ..core.builders import SubjectFields

    def get(oid):
        v = cert.subject.get_attributes_for_oid(oid)
        return v[0].value if v else ""

    return SubjectFields(organization=get(NameOID.ORGANIZATION_NAME), organizational_unit=get(NameOID.ORGANIZATIONAL_UNIT_NAME),
                         country=get(NameOID.COUNTRY_NAME), state=get(NameOID.STATE_OR_PROVINCE_NAME),
                         locality=get(NameOID.LOCALITY_NAME)), get(NameOID.COMMON_NAME)


def _constraints_of(cert):
    from cryptography import x509

    from ..core.builders import Constraints

    nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    doms = tuple(g.value for g in (nc.permitted_subtrees or []) if isinstance(g, x509.DNSName))
    ips = tuple(str(g.value) for g in (nc.permitted_subtrees or []) if isinstance(g, x509.IPAddress))
    c = Constraints(doms, ips)
    if c.extension() != nc:
        raise StoreError("the intermediate's name constraints have a form mailca did not create; refusing to renew it")
    return c


def renew_intermediate(store, passphrase: bytes | None, *, days: int | None = None, dry_run: bool = False,
                       now: _dt.datetime | None = None) -> IntermediateRenewal:
    """Re-certify the intermediate's key: same key, subject and name constraints, new validity.

    Existing leaves keep chaining (same issuer name and key, same SKI); DANE 2 1 1 (SPKI of the
    intermediate) stays valid; 2 0 1 (hash of the whole certificate) changes."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from ..core import builders, keys, verify
    from ..issuance import ca as camod

    now = now or certinfo.utcnow()
    ca = camod.load_ca(store)
    prof = ca.profile
    if days is not None and not (30 <= days <= prof.intermediate_days):
        raise UsageError(f"--days {days} is outside 30..{prof.intermediate_days} allowed by profile {prof.name!r}")
    days = days or prof.intermediate_days
    if ca.root.not_valid_after_utc <= now + _dt.timedelta(days=30):
        raise StoreError(f"the root CA expires {certinfo.iso(ca.root.not_valid_after_utc)}; a new intermediate would be useless - "
                         "create a new CA ('mailca init' in another --dir) and roll users over")
    root_key = ca.root_key(passphrase)
    if keys.spki_der(root_key.public_key()) != keys.spki_der(ca.root.public_key()):
        raise StoreError(f"{store.ca_file('root.key')} does not match root.crt; restore both from a backup")
    int_key = ca.intermediate_key  # checks it matches intermediate.crt
    old = ca.intermediate
    subject, cn = _subject_fields(old)
    constraints = _constraints_of(old)
    not_after = min(now + _dt.timedelta(days=days), ca.root.not_valid_after_utc)
    new = builders.build_intermediate(
        int_key.public_key(), issuer_cert=ca.root, issuer_key=root_key, common_name=cn, subject=subject,
        constraints=constraints, not_before=now - _dt.timedelta(minutes=prof.backdate_minutes), not_after=not_after,
        serial=camod.new_serial(),
    )
    verify.check_lint(new, "intermediate", max_days=days + prof.backdate_minutes / 1440)
    verify.verify_ca_pair(new, ca.root)
    if new.subject != old.subject or new.extensions.get_extension_for_class(x509.NameConstraints) != \
            old.extensions.get_extension_for_class(x509.NameConstraints):
        raise VerificationError("renewed intermediate differs from the old one in subject or name constraints")
    # Every current leaf must still chain through the renewed intermediate.
    checked = 0
    for e in current_by_lineage(store.load_index()["certs"]).values():
        if e.get("status") == "revoked" or certinfo.parse_iso(e["not_after"]) <= now:
            continue
        p = store.version_path(e) / "cert.pem"
        try:
            leaf = x509.load_pem_x509_certificate(p.read_bytes())
        except (OSError, ValueError):
            continue
        verify.verify_server_chain(leaf, [new], ca.root, list(e.get("names", []) + e.get("ips", [])), now=now)
        checked += 1
    pem = serialization.Encoding.PEM
    der = serialization.Encoding.DER
    spki = keys.spki_sha256(int_key.public_key())
    old_201 = hashlib.sha256(old.public_bytes(der)).hexdigest()
    new_201 = hashlib.sha256(new.public_bytes(der)).hexdigest()
    info = IntermediateRenewal(
        dry_run=dry_run,
        old=IntermediateCert(format(old.serial_number, "x"), certinfo.iso(old.not_valid_after_utc), f"2 0 1 {old_201}"),
        new=IntermediateCert(format(new.serial_number, "x"), certinfo.iso(new.not_valid_after_utc), f"2 0 1 {new_201}",
                             not_before=certinfo.iso(new.not_valid_before_utc), path=str(store.ca_file("intermediate.crt"))),
        tlsa_2_1_1=f"2 1 1 {spki}",
        leaves_checked=checked,
        name_constraints=tuple(constraints.domains) + tuple(constraints.ip_ranges),
    )
    if dry_run:
        return info
    with store.lock():
        cur = store.ca_file("intermediate.crt").read_bytes()
        if cur != old.public_bytes(pem):
            raise StoreError("intermediate.crt changed while renewing (another mailca running?); run the command again")
        archive = store.ca_dir / "archive"
        store.ensure_dir(archive, durable=True)
        store.write_file(archive / f"intermediate-{format(old.serial_number, 'x')}.crt", cur)
        store.write_file(store.ca_file("intermediate.crt"), new.public_bytes(pem))
        archived = str(archive / f"intermediate-{format(old.serial_number, 'x')}.crt")
    return info._replace(old=info.old._replace(archived_as=archived))


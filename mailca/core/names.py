"""Hostname validation for certificate names.

Mail clients and MTAs match the SAN dNSName (RFC 6125 / RFC 7672), so every name goes into
the certificate as a lower-case A-label.  Rules enforced here, each with an error that
names the bad value and what would be valid:

* 1..253 octets in total, labels 1..63 octets, LDH only (letters, digits, hyphen), no
  leading or trailing hyphen, no underscore, at least two labels (a mail host is an FQDN);
* IDN input accepted as U-label or A-label; U-labels are converted with IDNA 2008 (the
  ``idna`` package, a declared dependency: Python's own codec is IDNA 2003, which maps
  ``straße`` to ``strasse`` - another name) and mixed-script labels
  (e.g. Latin + Cyrillic look-alikes) are refused;
* a wildcard only as the whole left-most label (``*.example.org``) and only when allowed;
* an IP address is not a DNS name (use ``--ip``);
* nothing that could escape a store directory (``/``, ``\\``, ``..``).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from ..errors import UsageError

__all__ = ["MAX_NAME", "normalize_dns_name", "normalize_domain", "is_ip_literal", "parse_ip", "within",
           "to_unicode", "safe_store_name"]

_LDH = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
MAX_NAME = 253
MAX_LABEL = 63


def _script_of(ch: str) -> str | None:
    """A coarse script name for a letter (from its Unicode name), None for non-letters."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    first = name.split(" ")[0]
    # CJK ideographs and kana are used together legitimately; treat them as one script
    # (including the prolonged sound mark 'ー' (KATAKANA-HIRAGANA ...) as in メール, and
    # the iteration mark '々' (IDEOGRAPHIC ...)).
    if first in ("CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "IDEOGRAPHIC"):
        return "HAN"
    return first or None


def _check_mixed_script(label: str, original: str) -> None:
    scripts = {s for s in (_script_of(c) for c in label) if s}
    if len(scripts) > 1:
        raise UsageError(
            f"name {original!r} mixes scripts ({', '.join(sorted(scripts))}) in label {label!r}; "
            "a label must use one script (look-alike names are refused)"
        )


def _to_alabel(label: str, original: str) -> str:
    if label.isascii():
        return label.lower()
    _check_mixed_script(label, original)
    import idna  # IDNA 2008; never the stdlib "idna" codec (IDNA 2003: straße -> strasse)

    try:
        return idna.encode(label, uts46=True).decode("ascii")
    except Exception as exc:  # idna.IDNAError and friends
        raise UsageError(f"name {original!r} is not a valid internationalized name: {exc}") from None


def _check_alabel(label: str, original: str) -> None:
    """An ASCII label starting with xn-- must decode to a valid, single-script U-label."""
    if not label.startswith("xn--"):
        return
    import idna

    try:
        ulabel = idna.decode(label)
    except Exception as exc:
        raise UsageError(f"name {original!r}: label {label!r} is not a valid A-label ({exc})") from None
    _check_mixed_script(ulabel, original)


def normalize_dns_name(name: str, *, allow_wildcard: bool = False, what: str = "name") -> str:
    """Return ``name`` as a lower-case A-label FQDN or raise UsageError naming the problem."""
    original = name
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"empty {what}: give a fully qualified host name such as mail.example.org")
    name = name.strip()
    if any(c in name for c in "/\\") or ".." in name:
        raise UsageError(
            f"{what} {original!r} contains '/', '\\' or '..'; a host name has only letters, digits, "
            "hyphens and single dots"
        )
    if name.endswith("."):
        name = name[:-1]
    if is_ip_literal(name.strip("[]")):
        raise UsageError(f"{what} {original!r} is an IP address, not a DNS name; pass it with --ip instead")
    labels = name.split(".")
    if len(labels) < 2:
        raise UsageError(f"{what} {original!r} is not fully qualified; use a name like mail.example.org")
    out = []
    for i, label in enumerate(labels):
        if label == "":
            raise UsageError(f"{what} {original!r} has an empty label; use single dots between labels")
        if "*" in label:
            if label != "*" or i != 0:
                raise UsageError(
                    f"{what} {original!r}: a wildcard must be the whole left-most label, as in *.example.org"
                )
            if not allow_wildcard:
                raise UsageError(
                    f"{what} {original!r}: wildcards are not allowed by this profile "
                    "(set allow_wildcard = true in the profile, or list each host name)"
                )
            if len(labels) < 3:
                raise UsageError(f"{what} {original!r}: a wildcard needs at least two labels after it (*.example.org)")
            out.append("*")
            continue
        alabel = _to_alabel(label, original)
        if len(alabel) > MAX_LABEL:
            raise UsageError(
                f"{what} {original!r}: label {alabel[:20]!r}... is {len(alabel)} octets; at most {MAX_LABEL} are allowed"
            )
        if "_" in alabel:
            raise UsageError(
                f"{what} {original!r}: underscores are not valid in host names (letters, digits and hyphens only)"
            )
        if alabel.startswith("-") or alabel.endswith("-"):
            raise UsageError(f"{what} {original!r}: label {alabel!r} starts or ends with a hyphen, which is not allowed")
        if not _LDH.match(alabel):
            raise UsageError(
                f"{what} {original!r}: label {alabel!r} has characters other than letters, digits and hyphens"
            )
        if alabel[2:4] == "--" and not alabel.startswith("xn--"):
            raise UsageError(f"{what} {original!r}: label {alabel!r} has '--' in positions 3-4, reserved for xn-- A-labels")
        _check_alabel(alabel, original)
        out.append(alabel)
    result = ".".join(out)
    if len(result) > MAX_NAME:
        raise UsageError(f"{what} {original!r} is {len(result)} octets long; a DNS name has at most {MAX_NAME}")
    if out[-1].isdigit():
        raise UsageError(f"{what} {original!r}: the top-level label {out[-1]!r} cannot be all digits")
    return result


def normalize_domain(domain: str) -> str:
    """A permitted name-constraint domain: a DNS name, no wildcard (a leading dot is accepted)."""
    d = domain.strip()
    if d.startswith("."):
        d = d[1:]
    return normalize_dns_name(d, what="domain")


def is_ip_literal(name: str) -> bool:
    """True for an IPv4/IPv6 address (such a name goes in no SNI and no dNSName)."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def parse_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise UsageError(f"--ip {value!r} is not an IPv4 or IPv6 address (e.g. 192.0.2.25 or 2001:db8::25)") from None


def within(name: str, domains) -> bool:
    """True if ``name`` (A-label, maybe ``*.``) is one of ``domains`` or below one of them."""
    bare = name[2:] if name.startswith("*.") else name
    for d in domains:
        if bare == d or bare.endswith("." + d):
            return True
    return False


def to_unicode(name: str) -> str:
    """Best-effort display form of an A-label name."""
    try:
        import idna

        return ".".join(idna.decode(lbl) if lbl.startswith("xn--") else lbl for lbl in name.split("."))
    except Exception:
        return name


def safe_store_name(name: str) -> str:
    """The directory name for a certificate in the store: the A-label name, wildcard spelled
    ``_wildcard_`` (names are already validated to contain no '/', '..')."""
    return name.replace("*", "_wildcard_")

"""Unit tests of mailca/core/names.py: what a certificate name may be, and the errors for what not."""

from __future__ import annotations

import pytest

from mailca.core import names as N
from mailca.errors import UsageError


def name_of_length(n: int) -> str:
    """A valid DNS name of exactly ``n`` octets (250..254): three 63-octet labels + one more."""
    name = ".".join(["a" * 63] * 3 + ["b" * (n - 3 * 64)])
    assert len(name) == n
    return name


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("mail.example.org", "mail.example.org"),
        ("MAIL.Example.ORG", "mail.example.org"),
        ("mail.example.org.", "mail.example.org"),  # absolute form
        ("  mail.example.org\n", "mail.example.org"),  # pasted with whitespace
        ("mx-1.example.org", "mx-1.example.org"),
        ("0.example.org", "0.example.org"),
        ("a" * 63 + ".example.org", "a" * 63 + ".example.org"),
        # IDN: U-label in, A-label out; A-label in, unchanged
        ("bücher.example.org", "xn--bcher-kva.example.org"),
        ("BÜCHER.example.org", "xn--bcher-kva.example.org"),
        ("bu\u0308cher.example.org", "xn--bcher-kva.example.org"),  # decomposed ü (NFD)
        ("xn--bcher-kva.example.org", "xn--bcher-kva.example.org"),
        ("XN--BCHER-KVA.example.org", "xn--bcher-kva.example.org"),
        ("straße.example.org", "xn--strae-oqa.example.org"),  # IDNA 2008: ß kept (not 'ss')
        ("почта.example.org", "xn--80a1acny.example.org"),  # all Cyrillic: one script, fine
        ("mail.xn--p1ai", "mail.xn--p1ai"),  # .рф
        ("メール.example.org", "xn--4dkua4c.example.org"),  # katakana + prolonged sound mark
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),  # kanji + hiragana; katakana
    ],
)
def test_valid_names(raw, expected):
    assert N.normalize_dns_name(raw) == expected


def test_length_limits():
    assert N.normalize_dns_name(name_of_length(253)) == name_of_length(253)
    with pytest.raises(UsageError, match="254 octets long; a DNS name has at most 253"):
        N.normalize_dns_name(name_of_length(254))
    with pytest.raises(UsageError, match="64 octets; at most 63"):
        N.normalize_dns_name("a" * 64 + ".example.org")
    # the limits apply to the A-label: 60 'ü' are 60 characters but far more than 63 octets
    with pytest.raises(UsageError, match="Label too long"):
        N.normalize_dns_name("ü" * 60 + ".example.org")


@pytest.mark.parametrize(
    "raw,message",
    [
        ("", "empty name"),
        ("   ", "empty name"),
        ("mail", "not fully qualified"),
        ("mail..example.org", "'..'"),
        (".mail.example.org", "empty label"),
        ("../x", "'..'"),
        ("a/b.example.org", "'/'"),
        ("a\\b.example.org", "contains '/', '\\' or '..'"),
        ("_dmarc.example.org", "underscores are not valid"),
        ("mail_1.example.org", "underscores are not valid"),
        ("-mail.example.org", "starts or ends with a hyphen"),
        ("mail-.example.org", "starts or ends with a hyphen"),
        ("mail.example-.org", "starts or ends with a hyphen"),
        ("ab--cd.example.org", "positions 3-4"),
        ("mail example.org", "other than letters, digits and hyphens"),
        ("mail!.example.org", "other than letters, digits and hyphens"),
        ("mail.example.123", "cannot be all digits"),
        ("192.0.2.25", "is an IP address, not a DNS name; pass it with --ip"),
        ("2001:db8::25", "is an IP address"),
        ("[2001:db8::25]", "is an IP address"),
        ("127.0.0.1.", "is an IP address"),
        ("pаypal.example.org", "mixes scripts (CYRILLIC, LATIN)"),  # Cyrillic а
        ("mail.еxample.org", "mixes scripts"),  # Cyrillic е in the domain label
        ("xn--pypal-4ve.example.org", "mixes scripts"),  # the same look-alike as an A-label
        ("examplε.org", "mixes scripts (GREEK, LATIN)"),
        ("xn--zzzz.example.org", "not a valid A-label"),
        ("💌.example.org", "not a valid internationalized name"),
        ("*.example.org", "wildcards are not allowed by this profile"),
    ],
)
def test_invalid_names(raw, message):
    with pytest.raises(UsageError) as exc:
        N.normalize_dns_name(raw)
    text = str(exc.value)
    assert message in text
    assert "\n" not in text
    if raw.strip():
        assert repr(raw) in text  # the error names the bad value


@pytest.mark.parametrize(
    "raw,message",
    [
        ("*.org", "needs at least two labels after it"),
        ("a.*.example.org", "whole left-most label"),
        ("*mail.example.org", "whole left-most label"),
        ("mail*.example.org", "whole left-most label"),
        ("**.example.org", "whole left-most label"),
        ("*", "not fully qualified"),
    ],
)
def test_wildcard_misuse(raw, message):
    with pytest.raises(UsageError, match=None) as exc:
        N.normalize_dns_name(raw, allow_wildcard=True)
    assert message in str(exc.value)


def test_wildcard_allowed_only_when_asked():
    assert N.normalize_dns_name("*.Example.org", allow_wildcard=True) == "*.example.org"
    assert N.normalize_dns_name("*.bücher.example.org", allow_wildcard=True) == "*.xn--bcher-kva.example.org"
    with pytest.raises(UsageError):
        N.normalize_dns_name("*.example.org")


def test_what_names_the_thing():
    with pytest.raises(UsageError, match="^domain 'a_b.org'"):
        N.normalize_domain("a_b.org")


def test_normalize_domain():
    assert N.normalize_domain("Example.ORG") == "example.org"
    assert N.normalize_domain(".example.org") == "example.org"  # name-constraint style
    assert N.normalize_domain("bücher.de") == "xn--bcher-kva.de"
    with pytest.raises(UsageError):
        N.normalize_domain("*.example.org")  # a domain is never a wildcard
    with pytest.raises(UsageError):
        N.normalize_domain("org")  # not a single label either


@pytest.mark.parametrize("raw,expected", [("192.0.2.25", "192.0.2.25"), (" 2001:DB8::25 ", "2001:db8::25"),
                                          ("[2001:db8::25]", "2001:db8::25"), ("::1", "::1")])
def test_parse_ip(raw, expected):
    assert N.parse_ip(raw) == expected


@pytest.mark.parametrize("raw", ["", "mail.example.org", "192.0.2.256", "1.2.3", "2001:db8:::1", "192.0.2.0/24"])
def test_parse_ip_rejects(raw):
    with pytest.raises(UsageError, match="is not an IPv4 or IPv6 address"):
        N.parse_ip(raw)


@pytest.mark.parametrize(
    "name,inside",
    [
        ("example.org", True),
        ("mail.example.org", True),
        ("a.b.c.example.org", True),
        ("*.example.org", True),
        ("mail.example.net", True),
        ("example.org.evil.com", False),  # look-alike suffix
        ("evilexample.org", False),  # no label boundary
        ("xample.org", False),
        ("org", False),
        ("*.org", False),
        ("mail.example.com", False),
    ],
)
def test_within(name, inside):
    assert N.within(name, ["example.org", "example.net"]) is inside


def test_to_unicode_and_store_name():
    assert N.to_unicode("xn--bcher-kva.example.org") == "bücher.example.org"
    assert N.to_unicode("mail.example.org") == "mail.example.org"
    assert N.to_unicode("xn--zzzz.example.org") == "xn--zzzz.example.org"  # best effort, no exception
    assert N.safe_store_name("*.example.org") == "_wildcard_.example.org"
    assert N.safe_store_name("mail.example.org") == "mail.example.org"


def test_every_valid_name_is_a_safe_path_component():
    """What normalize_dns_name accepts can never leave the store directory."""
    for raw in ["mail.example.org", "bücher.example.org", "*.example.org", "a" * 63 + ".example.org"]:
        n = N.safe_store_name(N.normalize_dns_name(raw, allow_wildcard=True))
        assert "/" not in n and "\\" not in n and n not in (".", "..") and not n.startswith(".")

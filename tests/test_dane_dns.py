"""DANE against real DNS: a Knot primary + Knot secondary (signed zone, TSIG updates) and a
validating unbound on loopback (tests/dns_harness.py).  `mailca dane publish` (RFC 2136 +
TSIG via dnspython) and the rekey gate that asks every authoritative server and the
validating resolver.  The gate's clock is MAILCA_NOW; DNS is real."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conftest import base_env, make_ca, require
from dns_harness import DnsHarness

HOST = "mail.example.org"


@pytest.fixture(scope="module")
def dnsz(tmp_path_factory):
    for t in ("knotd", "knotc", "kdig", "unbound"):
        require(t)
    with DnsHarness(tmp_path_factory.mktemp("dns"), "example.org", secondary=True) as h:
        yield h


def test_harness_signed_zone_validates_unsigned_does_not(dnsz):
    signed = dnsz.kdig("MX", "example.org", extra=["+dnssec"])
    assert "status: NOERROR" in signed.stdout and " ad" in signed.stdout.split("Flags:")[1].splitlines()[0], signed.stdout
    unsigned = dnsz.kdig("MX", "example.net", extra=["+dnssec"])
    assert "status: NOERROR" in unsigned.stdout and " ad" not in unsigned.stdout.split("Flags:")[1].splitlines()[0]
    # the secondary serves the same (signed) zone, transferred from the primary
    sec = dnsz.kdig("SOA", "example.org", server=dnsz.secondary)
    assert " aa" in sec.stdout.split("Flags:")[1].splitlines()[0], sec.stdout

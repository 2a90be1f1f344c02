"""DNS, shared by the capabilities that need it: ``client`` (queries with DNSSEC flags, TSIG
keys, RFC 2136 updates; dnspython) and ``gate`` (has every authoritative server and the
validating resolver served a TLSA record for 2 x its TTL?).  Used by DANE publishing
(mailconf), the rekey/renew gate (lifecycle) and ``check --dane`` (probe)."""

__all__ = ["client", "gate"]

"""The live auditor behind ``mailca check``: :mod:`.smtp` (SMTP/IMAP/POP3 sessions and
STARTTLS), :mod:`.hello` (hand-built ClientHello probes), :mod:`.certcheck` (chain, names,
DANE), :mod:`.audit` (runs the checks) and :mod:`.report` (findings, text/JSON).  Nothing is
imported here."""

__all__ = ["smtp", "hello", "certcheck", "audit", "report"]

"""Mail-server configuration: :mod:`.postfix`, :mod:`.dovecot`, :mod:`.tlsprofiles` (the TLS
settings both render from) and :mod:`.dane` (TLSA records).  Nothing is imported here."""

__all__ = ["postfix", "dovecot", "tlsprofiles", "dane"]

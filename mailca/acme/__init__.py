"""The ACME (RFC 8555) server behind 'mailca acme' (layer 5, beside mailconf): :mod:`.state`
(accounts, orders, nonces, bindings in the store) and :mod:`.server` (protocol, HTTP).  Nothing
is imported here."""

__all__ = ["state", "server"]

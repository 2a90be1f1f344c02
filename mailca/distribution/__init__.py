"""Getting the root to users: :mod:`.bundles` (files + HTML page) and :mod:`.trust` (install
into system/NSS/Java stores).  Nothing is imported here."""

__all__ = ["bundles", "trust"]

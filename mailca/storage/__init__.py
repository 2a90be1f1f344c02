"""The only code that knows the on-disk formats: :mod:`.store` (layout, lock, atomic writes,
journal, recovery, versions and live links), :mod:`.index` (``index.json``: its only writer,
and "which version of a lineage is current") and :mod:`.castate` (``ca/ca.json``, read once).
Nothing is imported here."""

__all__ = ["store", "index", "castate"]

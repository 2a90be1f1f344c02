"""The only code that knows the on-disk formats: the store (lock, atomic writes, journal,
recovery), lineages (versions, live link) and the index."""

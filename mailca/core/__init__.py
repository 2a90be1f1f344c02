"""Pure parts, no I/O of the store: names, keys, builders, verify (lint + path validation),
profiles (validated, snapshotted) and certinfo.  Nothing here imports another mailca package
except ``mailca.errors``."""

__all__ = ["names", "keys", "builders", "verify", "profiles", "certinfo"]

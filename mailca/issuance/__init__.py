"""Creating the CA and issuing certificates: :mod:`.ca` (init, load_ca, issue, sign a CSR,
commit_version) and :mod:`.batch` (``issue --batch``).  Nothing is imported here."""

__all__ = ["ca", "batch"]

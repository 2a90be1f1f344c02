"""Output paths outside the store (``--out``/``--write`` of crl, bundle, schedule, postfix).

An output option must never reach into the store: ``crl --out store/ca/intermediate.key``
used to overwrite the intermediate key with a 0644 CRL.  The check resolves symlinks of the
existing part of the path (``realpath``), so a link pointing into the store is caught too.
Directories mailca creates for an output get 0755 at every level whatever the umask
(``os.makedirs`` gives parents ``0777 & ~umask``: world-writable under umask 000).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreError, UsageError

__all__ = ["refuse_inside_store", "make_public_dirs"]


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def refuse_inside_store(path: str | os.PathLike, store_path: str | os.PathLike, option: str) -> Path:
    """The absolute ``path``; UsageError if it (after resolving links) lies in the store."""
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    real = Path(os.path.realpath(p))
    store_real = Path(os.path.realpath(os.fspath(store_path)))
    if _inside(real, store_real) or _inside(p, Path(os.path.abspath(os.fspath(store_path)))):
        raise UsageError(f"{option} {os.fspath(path)!r} is inside the store {os.fspath(store_path)}, which holds the "
                         "private keys and state; choose a path outside it (e.g. /var/www/html or /etc/postfix)")
    return p


def make_public_dirs(path: str | os.PathLike, mode: int = 0o755) -> None:
    """Create ``path`` and its missing parents, each exactly ``mode`` (never umask-widened)."""
    path = Path(os.path.abspath(os.fspath(path)))
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot create directory {d}: {exc.strerror}") from None
        os.chmod(d, mode)

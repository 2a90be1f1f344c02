"""Re-encrypt the root CA key with the current KDF (``mailca ca rewrap-key``).

Stores made before PBKDF2 was raised to ``keys.KDF_ITERATIONS`` hold a root key protected
by 2,048 rounds (cryptography's default): about 3,500 offline guesses per second and core.
Rewrapping decrypts it with the current passphrase, checks it is the root certificate's
key, encrypts it again (optionally under a new passphrase, which must pass the policy),
proves the new bytes load and match, and only then replaces ``ca/root.key`` atomically.
The old file is kept as ``ca/root.key.pre-rewrap`` until the new file on disk has been
read back and verified; then the backup is removed (it is the weaker copy).
"""

from __future__ import annotations

import contextlib
import os

from ..core import keys, pkcs8
from ..errors import StoreError, UsageError
from ..storage.store import Store, fsync_dir

__all__ = ["BACKUP_NAME", "rewrap_root_key", "root_key_kdf"]

BACKUP_NAME = "root.key.pre-rewrap"


def root_key_kdf(store: Store) -> pkcs8.KdfInfo:
    path = store.ca_file("root.key")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; restore it from a backup") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return pkcs8.kdf_info(data)
    except (ValueError, IndexError):
        raise StoreError(f"{path} is not a readable PKCS#8 key; restore it from a backup") from None


def _matches_root(key, root_cert) -> bool:
    return keys.spki_der(key.public_key()) == keys.spki_der(root_cert.public_key())


def rewrap_root_key(store: Store, passphrase: bytes, new_passphrase: bytes | None = None) -> dict:
    """Re-encrypt ca/root.key; returns {'before': str, 'after': str, 'passphrase_changed': bool}."""
    from ..issuance.ca import load_ca

    ca = load_ca(store)
    path = store.ca_file("root.key")
    backup = store.ca_file(BACKUP_NAME)
    target = new_passphrase if new_passphrase is not None else passphrase
    if new_passphrase is None:
        why = keys.passphrase_problem(passphrase.decode("utf-8", "replace"))
        if why:
            raise UsageError(f"the current passphrase is too weak to keep ({why}); give a new one with "
                             f"--new-passphrase-file FILE ({keys.PASSPHRASE_ADVICE})")
    with store.lock():
        if backup.exists() or backup.is_symlink():
            raise StoreError(f"{backup} exists: an earlier rewrap did not finish; check that {path} opens with "
                             f"'mailca ca rewrap-key' again after moving the backup out of the way")
        old_pem = path.read_bytes()
        before = root_key_kdf(store)
        key = keys.load_private_pem(old_pem, str(path), passphrase)
        if not _matches_root(key, ca.root):
            raise StoreError(f"{path} does not belong to root.crt; restore the right key from a backup")
        new_pem = keys.private_pem(key, target)
        # Prove the new bytes before anything is written: they load and hold the root's key.
        if not _matches_root(keys.load_private_pem(new_pem, str(path), target), ca.root):
            raise StoreError("the re-encrypted key does not match root.crt; nothing was changed")  # pragma: no cover
        store.write_file(backup, old_pem, private=True)
        store.write_file(path, new_pem, private=True)
        on_disk = path.read_bytes()
        if on_disk != new_pem or not _matches_root(keys.load_private_pem(on_disk, str(path), target), ca.root):
            raise StoreError(f"{path} did not read back as written; the old key is kept in {backup}")  # pragma: no cover
        with contextlib.suppress(FileNotFoundError):
            os.unlink(backup)
        fsync_dir(store.ca_dir)
        after = pkcs8.kdf_info(on_disk)
    return {"key": str(path), "before": before.describe(), "after": after.describe(),
            "iterations": after.iterations, "passphrase_changed": new_passphrase is not None}

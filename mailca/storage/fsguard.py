"""The store is a trust boundary: safe file-system primitives for paths inside it.

Whoever can write to a store directory can steer what root's unattended ``mailca renew``
signs and what Postfix reads.  So mailca

* refuses a store whose directory (or a directory mailca keeps inside it, or any directory
  above it) is owned by someone other than the caller or root, or is writable by group or
  others (directories above the store may be group/world-writable only with the sticky bit,
  like /tmp) - :func:`check_store`;
* never follows a symlink inside the store, except a lineage's ``live`` link when it reads
  ``archive/NNNN`` (the only kind mailca makes) - :func:`check_components`, and every
  open/chmod here uses ``O_NOFOLLOW`` and compares the opened inode with the ``lstat`` result;
* bounds every read of a store file (:func:`read_bytes`) and turns unparsable JSON of any
  shape into one :class:`StoreError` line (:func:`load_json`).

Everything raises :class:`StoreError` (exit 3) with one line that names the path and says
what to do.  The checks are ``lstat`` calls, a few per command (no walk of the store).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from ..errors import StoreError

__all__ = [
    "LIVE_TARGET", "check_store", "check_components", "check_dir", "ensure_dir_inside", "safe_chmod",
    "read_bytes", "readlink_safe", "parse_json", "load_json", "is_live_link_ok", "trusted_uid", "problem_of_dir",
]

#: the only symlink target mailca writes (a lineage's ``live`` link)
LIVE_TARGET = re.compile(r"archive/[0-9]{4,9}\Z")
#: upper bound of any store file mailca reads (index.json of ~100,000 certificates fits)
MAX_READ = 256 * 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: top-level entries of a store that must be real directories / real files when present
STORE_DIRS = ("ca", "certs", "crl", "ca/archive")
STORE_FILES = (".lock", ".intent", "index.json", "ca/ca.json", "ca/root.key", "ca/root.crt",
               "ca/intermediate.key", "ca/intermediate.crt")


def trusted_uid(uid: int) -> bool:
    return uid == 0 or uid == os.geteuid()


def problem_of_dir(path, st: os.stat_result, *, inside: bool = True) -> str | None:
    """What is wrong with directory ``path`` (already lstat-ed), or None.

    ``inside``: a directory of the store (no group/other write at all); otherwise a
    directory above the store (group/other write allowed only with the sticky bit)."""
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink; mailca does not follow symlinks inside a store (replace it with the real directory)"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if not trusted_uid(st.st_uid):
        return (f"{path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}) or root: that user could "
                f"steer what mailca signs; check its contents, then 'chown -R {os.geteuid()} {path}'")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and (inside or not mode & stat.S_ISVTX):
        return (f"{path} is writable by group or others (mode {mode:o}): they could steer what mailca signs; "
                f"check its contents, then 'chmod go-w {path}'" + (" (or 'mailca doctor --fix')" if inside else ""))
    return None


def check_dir(path, *, inside: bool = True, missing_ok: bool = True) -> bool:
    """Raise StoreError unless ``path`` is a trustworthy real directory; False when missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return False
        raise StoreError(f"{path} is missing") from None
    except OSError as exc:
        raise StoreError(f"cannot examine {path}: {exc.strerror}") from None
    problem = problem_of_dir(path, st, inside=inside)
    if problem:
        raise StoreError(f"refusing to use the store: {problem}")
    return True


def _check_ancestors(root: Path) -> None:
    real = Path(os.path.realpath(root))
    for anc in reversed(real.parents):
        try:
            st = os.stat(anc)
        except OSError as exc:
            raise StoreError(f"cannot examine {anc}: {exc.strerror}") from None
        problem = problem_of_dir(anc, st, inside=False)
        if problem:
            raise StoreError(f"refusing to use the store {root}: {problem}")


def check_store(root) -> bool:
    """Refuse a store someone else can steer.  False when ``root`` does not exist yet.

    The store directory itself may be reached through a symlink (``/etc/mailca`` ->
    ``/srv/mailca``): its target and every directory above it are checked instead."""
    root = Path(root)
    try:
        st = os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        _check_ancestors_of_missing(root)
        return False
    except OSError as exc:
        raise StoreError(f"cannot examine store directory {root}: {exc.strerror}") from None
    problem = problem_of_dir(root, st)
    if problem:
        raise StoreError(f"refusing to use the store: {problem}")
    _check_ancestors(root)
    for rel in STORE_DIRS:
        check_dir(root / rel)
    for rel in STORE_FILES:
        p = root / rel
        try:
            fst = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot examine {p}: {exc.strerror}") from None
        if not stat.S_ISREG(fst.st_mode):
            kind = "a symlink" if stat.S_ISLNK(fst.st_mode) else "not a regular file"
            raise StoreError(f"refusing to use the store: {p} is {kind}; mailca does not follow links inside a "
                             f"store (move it away and restore the file from a backup; 'mailca doctor' lists all)")
        if not trusted_uid(fst.st_uid):
            raise StoreError(f"refusing to use the store: {p} is owned by uid {fst.st_uid}, not by you "
                             f"(uid {os.geteuid()}) or root; check it, then 'chown {os.geteuid()} {p}'")
    return True


def _check_ancestors_of_missing(root: Path) -> None:
    """A store about to be created: the nearest existing directory above it and everything
    above that must not be writable by others (mkdir there could be raced)."""
    p = root.parent
    while not os.path.exists(p) and p.parent != p:
        p = p.parent
    try:
        st = os.stat(p)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        return  # a file where a directory should be: creating the store reports it
    problem = problem_of_dir(p, st, inside=False)
    if problem:
        raise StoreError(f"refusing to create the store {root}: {problem}")
    _check_ancestors(p / "x")


def is_live_link_ok(path) -> bool:
    """``path`` is a symlink whose target is ``archive/NNNN`` (inside its own lineage)."""
    try:
        return LIVE_TARGET.match(os.readlink(path)) is not None
    except OSError:
        return False


def check_components(root, path, *, allow_live: bool = False, leaf_dir: bool = False) -> None:
    """Every directory between ``root`` (exclusive) and ``path`` (its parent, or ``path``
    itself with ``leaf_dir``) must be a real, trustworthy directory inside the store.

    ``allow_live``: a component named ``live`` may be mailca's own link to archive/NNNN.
    Missing components are fine (the caller creates them with :func:`ensure_dir_inside`)."""
    root, path = Path(root), Path(path)
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise StoreError(f"{path} is outside the store {root}; refusing to touch it") from None
    parts = rel.parts if leaf_dir else rel.parts[:-1]
    if any(p in ("..", ".") for p in rel.parts):
        raise StoreError(f"{path} leaves the store {root}; refusing to touch it")
    cur = root
    for part in parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot examine {cur}: {exc.strerror}") from None
        if allow_live and part == "live" and stat.S_ISLNK(st.st_mode):
            if not is_live_link_ok(cur):
                raise StoreError(f"refusing to read through {cur}: it points at {readlink_safe(cur)!r}, not at "
                                 "archive/NNNN of its own lineage; run 'mailca doctor --fix' to repoint it")
            continue
        problem = problem_of_dir(cur, st)
        if problem:
            raise StoreError(f"refusing to use the store: {problem}")


def readlink_safe(p) -> str:
    try:
        return os.readlink(p)
    except OSError:
        return "?"


def ensure_dir_inside(root, path, mode: int = 0o700, *, durable: bool = False) -> None:
    """Create ``path`` (and missing parents) below ``root`` without following any link:
    each existing component is lstat-checked, each new one is created with ``mode`` and
    fchmod-ed through an ``O_NOFOLLOW`` descriptor (umask does not widen it)."""
    root, path = Path(root), Path(path)
    check_components(root, path, leaf_dir=True)
    rel = path.relative_to(root)
    cur = root
    for part in rel.parts:
        cur = cur / part
        try:
            os.mkdir(cur, mode)
        except FileExistsError:
            check_dir(cur, missing_ok=False)
            continue
        except PermissionError:
            raise StoreError(f"cannot create directory {cur}: permission denied") from None
        except OSError as exc:
            raise StoreError(f"cannot create directory {cur}: {exc.strerror}") from None
        fd = os.open(cur, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        if durable:
            from .store import fsync_dir

            fsync_dir(cur.parent)


def safe_chmod(path, mode: int) -> bool:
    """chmod ``path`` only if it is a regular file or directory, never through a link
    (``O_NOFOLLOW`` descriptor, same inode as the lstat).  False when nothing was done."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except OSError:
        return False
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            return False
        os.fchmod(fd, mode)
        return True
    finally:
        os.close(fd)


def read_bytes(path, *, limit: int = MAX_READ) -> bytes:
    """The content of regular file ``path``, opened with ``O_NOFOLLOW`` and read up to
    ``limit`` bytes.  FileNotFoundError passes through; anything else is a StoreError."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise
    except PermissionError:
        raise StoreError(f"cannot read {path}: permission denied (run as the store's owner)") from None
    except OSError as exc:
        if os.path.islink(path):
            raise StoreError(f"refusing to read {path}: it is a symlink, and mailca does not follow links "
                             "inside a store ('mailca doctor' lists them)") from None
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"refusing to read {path}: not a regular file")
        chunks, size = [], 0
        while True:
            b = os.read(fd, min(1 << 20, limit + 1 - size))
            if not b:
                break
            chunks.append(b)
            size += len(b)
            if size > limit:
                raise StoreError(f"{path} is larger than {limit} bytes; not a file mailca wrote (restore it from a backup)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes):
    """json.loads that fails only with ValueError (one short line): bad UTF-8, bad syntax,
    NaN/Infinity, absurd nesting, numbers too long."""
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (ValueError, MemoryError) as exc:
        msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ValueError(msg) from None


def load_json(path, *, fix: str, limit: int = MAX_READ):
    """Parse JSON file ``path`` (read as :func:`read_bytes`); any parse failure is one
    StoreError line ending in ``fix``.  FileNotFoundError passes through.  The caller
    checks the shape (:mod:`.schema`)."""
    raw = read_bytes(path, limit=limit)
    try:
        return parse_json(raw)
    except ValueError as exc:
        raise StoreError(f"{path} is corrupt ({exc}); {fix}") from None

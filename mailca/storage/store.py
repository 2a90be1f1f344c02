"""The on-disk store: layout, lock, atomic writes, versioned certificates, JSON index.

Layout (certbot/step-ca practice, with one lineage per host *and key type* so that a dual
RSA+ECDSA pair for one host lives side by side)::

    <dir>/ca/ca.json                 CA metadata (domains, org, profile snapshot)
    <dir>/ca/root.crt  root.key      root key encrypted at rest (PKCS#8, PBES2/AES-256)
    <dir>/ca/intermediate.crt  intermediate.key   (0600, unencrypted: unattended renewal)
    <dir>/certs/<name>/<key-type>/archive/NNNN/{cert,chain,fullchain,key,...}.pem
    <dir>/certs/<name>/<key-type>/live -> archive/NNNN
    <dir>/index.json                 every certificate ever issued (source of truth for listings)
    <dir>/.lock                      fcntl.flock around every mutation

Crash safety: every file is written as ``.tmp-*`` in the same directory, fsynced,
``os.replace``d into place and the directory fsynced.  A certificate version is first
written as a complete hidden directory and then renamed to ``archive/NNNN`` in one step;
the index is replaced next, and the ``live`` symlink last.  Before the first change to a
lineage, its path is recorded in ``<dir>/.intent`` (written atomically); the file is removed
when the locked operation ends without error.  Taking the lock while an ``.intent`` file
exists means an operation was interrupted: :meth:`Store.recover` then rolls it forward for
the recorded lineages only (so the cost does not grow with the store): leftover temp files
are removed, a complete archive version missing from the index is added back, and each
``live`` link is pointed at the version the index calls current.  ``mailca doctor`` runs
the same recovery over the whole store.  A crash at any point therefore leaves the old
state or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from ..errors import StoreError
from . import fsguard, schema
from .index import INDEX_VERSION, Index

__all__ = ["Store", "open_store", "default_store_dir", "atomic_write", "atomic_symlink", "ensure_dir", "fsync_dir",
           "INTENT", "TMP_PREFIX", "DIR_MODE", "KEY_MODE", "PUBLIC_MODE"]

TMP_PREFIX = ".tmp-"
INTENT = ".intent"
DIR_MODE = 0o700
KEY_MODE = 0o600
PUBLIC_MODE = 0o644


def default_store_dir() -> str:
    env = os.environ.get("MAILCA_DIR")
    if env:
        return env
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/etc/mailca"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mailca")


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(directory: str | os.PathLike, suffix: str = "") -> str:
    return os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}{suffix}")


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = PUBLIC_MODE, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, os.replace,
    fsync the directory.  The file has ``mode`` from its first byte on (keys are never
    world-readable, not even briefly)."""
    path = os.fspath(path)
    d = os.path.dirname(path) or "."
    tmp = _tmp_name(d)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # regardless of umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(d)


def atomic_symlink(target: str, link: str | os.PathLike) -> None:
    """Point ``link`` at ``target`` atomically (symlink under a temp name, then os.replace)."""
    link = os.fspath(link)
    d = os.path.dirname(link)
    tmp = _tmp_name(d, ".link")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(d)


def ensure_dir(path: str | os.PathLike, mode: int = DIR_MODE, *, durable: bool = False) -> None:
    """Create ``path`` and missing parents.  ``durable``: fsync the parent of every directory
    created, so that a new directory survives a power loss along with what is later
    written into it (costs nothing when the directory exists already)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if not missing:
        return
    try:
        for d in reversed(missing):  # each level created 0700 (makedirs gives parents 0777 & ~umask)
            try:
                os.mkdir(d, mode)
            except FileExistsError:
                continue
            fsguard.safe_chmod(d, mode)  # the directory just made; never through a link
        if durable:
            for d in reversed(missing):
                fsync_dir(d.parent)
    except PermissionError:
        raise StoreError(f"cannot create directory {path}: permission denied") from None
    except OSError as exc:
        raise StoreError(f"cannot create directory {path}: {exc.strerror}") from None


def _version_name(n: int) -> str:
    return f"{n:04d}"


class Store:
    """A mailca store rooted at ``path``.  Cheap to construct; touches nothing until used."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).absolute()
        self._lock_fd: int | None = None
        self._index_cache: dict | None = None
        self._intent: set[str] = set()
        #: refuse a store someone else can steer (doctor turns it off to report instead)
        self.guarded = True
        self._guard_passed = False  # check_store passed for this object (see guard)
        self.notes: list[str] = []  # what recovery ignored (shown as warnings by the CLI)

    # ----------------------------------------------------------------- layout
    @property
    def ca_dir(self) -> Path:
        return self.path / "ca"

    @property
    def certs_dir(self) -> Path:
        return self.path / "certs"

    @property
    def index_path(self) -> Path:
        return self.path / "index.json"

    def ca_file(self, name: str) -> Path:
        return self.ca_dir / name

    def lineage_dir(self, name: str, key_type: str) -> Path:
        from ..core.names import safe_store_name

        return self.certs_dir / safe_store_name(name) / key_type

    def live_dir(self, name: str, key_type: str) -> Path:
        return self.lineage_dir(name, key_type) / "live"

    # ------------------------------------------------------------ existence
    def exists(self) -> bool:
        return (self.ca_dir / "ca.json").exists()

    def ca_leftovers(self) -> list[str]:
        """CA or certificate files present although ca/ca.json is not (a damaged store, or an
        'init' interrupted before its last write): 'init' must not write over them."""
        names = ["ca/root.key", "ca/root.crt", "ca/intermediate.key", "ca/intermediate.crt", "index.json", "certs"]
        return [n for n in names if (self.path / n).exists()]

    def guard(self) -> bool:
        """Refuse a store whose directories are owned by another user or writable by others,
        or that holds symlinks where mailca keeps real files (see :mod:`.fsguard`).

        A store that passed is not walked again by this Store object (``require_ca`` and
        ``lock`` both guard, a command calls both): once its directories are the caller's or
        root's and writable by no one else, nobody else can change that.  Paths inside it are
        still checked on every open (``fsguard.check_components``)."""
        if not self.guarded:
            return self.path.exists()
        if not self._guard_passed:
            self._guard_passed = fsguard.check_store(self.path)
        return self._guard_passed

    def check_lineage(self, name: str, key_type: str) -> None:
        """Refuse a lineage whose directories (down to ``live`` and what it points at) are
        not real, trustworthy directories of this store (see :func:`fsguard.check_components`)."""
        live = self.live_dir(name, key_type)
        fsguard.check_components(self.path, live, allow_live=True, leaf_dir=True)
        if live.is_symlink():
            fsguard.check_components(self.path, live.resolve(strict=False), leaf_dir=True)

    def ensure_dir(self, path: str | os.PathLike, mode: int = DIR_MODE, *, durable: bool = False) -> None:
        """Create a directory inside the store, never through a link."""
        fsguard.ensure_dir_inside(self.path, path, mode, durable=durable)

    def read_json(self, path: str | os.PathLike, *, fix: str):
        """A JSON file of the store (no link followed, bounded read, one-line error)."""
        fsguard.check_components(self.path, path)
        return fsguard.load_json(path, fix=fix)

    def read_ca_meta(self) -> dict:
        """ca/ca.json, shape-checked."""
        p = self.ca_file("ca.json")
        try:
            meta = self.read_json(p, fix="restore it from a backup")
        except FileNotFoundError:
            raise StoreError(f"{p} is missing; restore it from a backup") from None
        return schema.check_ca_meta(meta, p)

    def require_ca(self) -> None:
        self.guard()
        if not self.path.exists():
            raise StoreError(f"no mailca store at {self.path}; create one with 'mailca init --dir {self.path} --domain example.org'")
        if not self.exists():
            left = self.ca_leftovers()
            if left:
                raise StoreError(f"{self.ca_file('ca.json')} is missing but {', '.join(left)} exist; restore ca.json "
                                 "from a backup (do not run 'mailca init': it would not replace your CA)")
            raise StoreError(f"no CA in {self.path} yet; run 'mailca init --dir {self.path} --domain YOUR.DOMAIN' first")
        for fname in ("root.crt", "intermediate.crt", "intermediate.key"):
            if not self.ca_file(fname).exists():
                raise StoreError(f"CA file {self.ca_file(fname)} is missing; restore it from a backup")

    def check_writable(self) -> None:
        target = self.path if self.path.exists() else self.path.parent
        if not os.access(target, os.W_OK | os.X_OK):
            raise StoreError(f"store directory {target} is not writable by this user; run as its owner (or root)")

    # ---------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self, *, recover: bool = True):
        """Exclusive lock around a mutation.  Re-entrant within one Store object."""
        if self._lock_fd is not None:
            yield self
            return
        self.guard()
        ensure_dir(self.path, durable=True)
        self.guard()
        self.check_writable()
        try:
            # O_NOFOLLOW: a planted '.lock' symlink must not make us create a file elsewhere
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if os.path.islink(self.path / ".lock"):
                raise StoreError(f"refusing to use the store: {self.path / '.lock'} is a symlink; mailca does not "
                                 "follow links inside a store (remove it, then run the command again)") from None
            raise StoreError(f"cannot open lock file in {self.path}: {exc.strerror}") from None
        ok = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            self._index_cache = None
            self._intent = set()
            if recover:
                self._recover_interrupted()
            yield self
            ok = True
        finally:
            if self._intent:
                if not ok:
                    # The operation failed part-way (an error, not a crash): roll its lineages
                    # forward now rather than leave the journal for the next command.
                    with contextlib.suppress(Exception):
                        self.recover(lineages=sorted(self._intent))
                        ok = True
                if ok:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path / INTENT)
            self._intent = set()
            self._lock_fd = None
            self._index_cache = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def job_lock(self, name: str):
        """A non-blocking lock for a long job (``.NAME.lock``, e.g. the scheduled job): yields
        True when this process holds it, False when another one does.  Independent of
        :meth:`lock`, which the job's steps take for each mutation."""
        p = self.path / f".{name}.lock"
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {p}: {exc.strerror} (a symlink? remove it)") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _recover_interrupted(self) -> list[str]:
        """Roll forward an operation that a crash interrupted (cheap when there was none)."""
        intent = self.path / INTENT
        try:
            raw = fsguard.read_bytes(intent, limit=16 * 1024 * 1024)
        except FileNotFoundError:
            # A kill while the journal itself was being written leaves only its temp file
            # (nothing else was touched yet): sweep the store's top level, which is cheap.
            swept = []
            for f in os.listdir(self.path):
                if f.startswith(TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(self.path / f)
                    swept.append(f"removed unfinished file {self.path / f}")
            return swept
        try:
            lineages, rejected = schema.check_intent(json.loads(raw))
        except (ValueError, RecursionError):
            lineages, rejected = [], ["(unparsable)"]
        if rejected:
            # Journal entries are lineage paths inside the store (certs/NAME/KEYTYPE); anything
            # else is never acted upon: recover the whole store (which stays inside it) instead.
            self.notes.append(f"ignored journal entries {', '.join(rejected)[:200]} in {intent} (not "
                              "certs/NAME/KEYTYPE inside the store); checked the whole store instead")
            import sys

            sys.stderr.write(f"mailca: warning: {self.notes[-1]}\n")  # repr() above escaped control chars
            lineages = None
        actions = self.recover(lineages=lineages) if self.exists() else []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(intent)
        fsync_dir(self.path)
        return actions

    def note_intent(self, lineage: Path) -> None:
        """Record that ``lineage`` is about to change (before its first change in this lock)."""
        self.note_intents([lineage])

    def note_intents(self, lineages) -> None:
        """Record several lineages with one journal write (``issue --batch``)."""
        self._require_lock()
        new = {self.relpath(lin) for lin in lineages} - self._intent
        for rel in new:
            if not schema.LINEAGE_PATH.match(rel):
                raise RuntimeError(f"journal entry {rel!r} is not a lineage")  # programming error
        if not new:
            return
        self._intent |= new
        atomic_write(self.path / INTENT, json.dumps(sorted(self._intent)).encode(), 0o600)

    def require_lock(self) -> None:
        """Raise unless this Store holds the lock (a programming error, not a user error)."""
        if self._lock_fd is None:
            raise RuntimeError("store mutation without the lock")  # programming error

    _require_lock = require_lock  # the store's own (older) spelling; other modules use require_lock()

    # --------------------------------------------------------------- writes
    def write_file(self, path: str | os.PathLike, data: bytes, *, private: bool = False, durable: bool = True) -> None:
        self._require_lock()
        fsguard.check_components(self.path, path)
        atomic_write(path, data, KEY_MODE if private else PUBLIC_MODE, durable=durable)

    # --------------------------------------------------------------- index
    def load_index(self) -> dict:
        if self._index_cache is not None:
            return self._index_cache
        fix = "run 'mailca doctor --fix' to rebuild it from the archive (the corrupt file is kept)"
        try:
            data = schema.check_index(fsguard.load_json(self.index_path, fix=fix), self.index_path)
        except FileNotFoundError:
            if self.certs_dir.is_dir() and next(self.certs_dir.glob("*/*/archive/[0-9]*"), None) is not None:
                raise StoreError(f"{self.index_path} is missing but certificates exist; run 'mailca doctor --fix' "
                                 "to rebuild it from the archive") from None
            return {"version": INDEX_VERSION, "certs": []}
        if self._lock_fd is not None:
            self._index_cache = data
        return data

    def remember_index(self, data: dict) -> None:
        """Called by :meth:`Index.save` (the only writer of index.json): what was written is
        what :meth:`load_index` returns for the rest of this locked operation."""
        self._index_cache = data if self._lock_fd is not None else None

    def index(self) -> Index:
        """The index (see :mod:`mailca.storage.index`), loaded once per locked operation."""
        return Index(self, self.load_index())

    def entries(self) -> list[dict]:
        return self.load_index()["certs"]

    # ------------------------------------------------------------ versions
    def next_version(self, name: str, key_type: str) -> int:
        archive = self.lineage_dir(name, key_type) / "archive"
        highest = 0
        if archive.exists():
            for p in archive.iterdir():
                if p.name.isdigit():
                    highest = max(highest, int(p.name))
        return max(highest, self.index().highest_version(name, key_type)) + 1

    def write_version(self, name: str, key_type: str, files: dict[str, tuple[bytes, bool]], *, durable: bool = True) -> tuple[int, Path]:
        """Write a complete certificate version: ``files`` maps file name to (data, private).

        The files go into a hidden temp directory, each fsynced; the directory is then
        renamed to ``archive/NNNN`` in one step.  Returns (version, path).  The caller
        records it in the index and then calls :meth:`set_live`."""
        self._require_lock()
        lineage = self.lineage_dir(name, key_type)
        archive = lineage / "archive"
        self.ensure_dir(archive, durable=durable)
        self.note_intent(lineage)
        for p in (self.certs_dir, lineage.parent, lineage):
            fsguard.safe_chmod(p, DIR_MODE)  # never through a link (ensure_dir refused those)
        version = self.next_version(name, key_type)
        tmpdir = Path(_tmp_name(archive, ".dir"))
        os.mkdir(tmpdir, DIR_MODE)
        try:
            os.chmod(tmpdir, DIR_MODE)
            for fname, (data, private) in files.items():
                p = tmpdir / fname
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE if private else PUBLIC_MODE)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    if durable:
                        fh.flush()
                        os.fsync(fh.fileno())
            if durable:
                fsync_dir(tmpdir)
            final = archive / _version_name(version)
            os.rename(tmpdir, final)
        except BaseException:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        if durable:
            fsync_dir(archive)
        return version, final

    def set_live(self, name: str, key_type: str, version: int) -> None:
        self._require_lock()
        self.note_intent(self.lineage_dir(name, key_type))
        fsguard.check_components(self.path, self.live_dir(name, key_type))
        atomic_symlink(f"archive/{_version_name(version)}", self.live_dir(name, key_type))

    def version_path(self, entry: dict) -> Path:
        if not schema.ARCHIVE_PATH.match(entry["path"]):  # load_index checked it; belt and braces
            raise StoreError(f"index path {entry['path'][:80]!r} is not inside the store; run 'mailca doctor'")
        p = self.path / entry["path"]
        fsguard.check_components(self.path, p, leaf_dir=True)
        return p

    def relpath(self, p: Path) -> str:
        return str(p.relative_to(self.path))

    # ------------------------------------------------------------- recovery
    def recover(self, lineages: list[str] | None = None) -> list[str]:
        """Roll interrupted operations forward (see module docstring).  ``lineages``: the
        relative lineage dirs to look at (None: the whole store).  Returns what it did."""
        self._require_lock()
        actions: list[str] = []
        if lineages is None:
            roots = [str(self.path)]
        else:
            lineages = [rel for rel in lineages if schema.LINEAGE_PATH.match(rel)]
            for rel in lineages:
                fsguard.check_components(self.path, self.path / rel, leaf_dir=True)
            roots = [str(self.path / rel) for rel in lineages if (self.path / rel).is_dir()]
            # top-level and CA temp files (index, intent, CA files) need no walk
            for d in (self.path, self.ca_dir, self.path / "crl"):
                if d.is_dir():
                    for f in os.listdir(d):
                        if f.startswith(TMP_PREFIX):
                            with contextlib.suppress(OSError):
                                os.unlink(d / f)
                            actions.append(f"removed unfinished file {d / f}")
        # 1. leftover temp files and directories
        for root, dirs, files in (w for r in roots for w in os.walk(r)):
            for d in list(dirs):
                if d.startswith(TMP_PREFIX):
                    import shutil

                    p = os.path.join(root, d)
                    if os.path.islink(p):  # a temp symlink to a version dir (atomic_symlink)
                        with contextlib.suppress(OSError):
                            os.unlink(p)
                    else:
                        shutil.rmtree(p, ignore_errors=True)
                    dirs.remove(d)
                    actions.append(f"removed unfinished directory {os.path.join(root, d)}")
            for f in files:
                if f.startswith(TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(root, f))
                    actions.append(f"removed unfinished file {os.path.join(root, f)}")
        if not self.certs_dir.exists():
            return actions
        index = self.index()
        known = index.paths()
        added = False
        if lineages is None:
            lineage_dirs = []
            for p in sorted(self.certs_dir.glob("*/*")):
                if p.is_symlink() or p.is_dir():
                    fsguard.check_components(self.path, p, leaf_dir=True)
                    lineage_dirs.append(p)
        else:
            lineage_dirs = [self.path / rel for rel in lineages if (self.path / rel).is_dir()]
        # 2. complete archive versions missing from the index (crash between rename and index)
        for vdir in sorted(v for lin in lineage_dirs for v in lin.glob("archive/[0-9]*")):
            rel = self.relpath(vdir)
            if rel in known:
                continue
            entry = self.entry_from_version_dir(vdir)
            if entry is not None:
                index.add(entry)
                known.add(rel)
                added = True
                actions.append(f"added {rel} to the index")
        if added:
            index.save()
        # 3. live links point at the newest version of each lineage, revoked or not: after
        #    'mailca revoke' the revoked certificate stays live until a new one is issued
        #    (falling back to an older version could serve other names or another key)
        newest = index.live_targets()
        for lineage in lineage_dirs:
            if not (lineage / "archive").is_dir():
                continue
            want = newest.get(self.relpath(lineage))
            if want is None:
                continue
            link = lineage / "live"
            current = os.readlink(link) if link.is_symlink() else None
            if current != want:
                atomic_symlink(want, link)
                actions.append(f"pointed {self.relpath(link)} at {want}")
        return actions

    def entry_from_version_dir(self, vdir: Path) -> dict | None:
        """Rebuild an index entry from a complete archive directory (cert.pem, and key.pem
        unless the key lives elsewhere because the certificate was signed from a CSR)."""
        from ..core import certinfo

        cert_p, key_p = vdir / "cert.pem", vdir / "key.pem"
        if not cert_p.exists():
            return None
        try:
            meta = {}
            mp = vdir / "meta.json"
            if mp.exists():
                meta = schema.check_meta(fsguard.load_json(mp, fix="remove it"), mp)
            if not key_p.exists() and meta.get("source") != "csr":
                return None
            if os.path.islink(cert_p) or os.path.islink(key_p) or not schema.ARCHIVE_PATH.match(self.relpath(vdir)):
                return None
            return certinfo.index_entry_from_pem(fsguard.read_bytes(cert_p), path=self.relpath(vdir),
                                                 version=int(vdir.name), extra=meta)
        except Exception:
            return None


def open_store(store_dir: str | None) -> Store:
    return Store(store_dir or default_store_dir())

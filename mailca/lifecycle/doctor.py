"""``mailca doctor``: check a store's consistency and say exactly what is wrong and how to fix it.

Findings come in three levels:

* ``error``   - the store is inconsistent: a missing certificate or key, a key that does not
  match its certificate, a corrupt index, a dangling ``live`` link, a private file readable
  by others.  Each carries a fix.  ``doctor`` exits 5 when there is one.
* ``pending`` - the leftovers of an interrupted operation (a kill -9, a power cut): temp files,
  a complete archive version the index does not list yet, a ``live`` link still pointing at the
  previous version.  The store is consistent (old or new state, never a mix); the next mailca
  command that takes the lock, or ``doctor --fix``, rolls the operation forward.
* ``warning`` - harmless but worth knowing (e.g. an incomplete archive directory nobody uses).

Trust (the store is a trust boundary, see :mod:`mailca.storage.fsguard`): a directory or file
owned by another user, a directory writable by group/others, a directory above the store
that others may write, and any symlink inside the store other than a lineage's
``live -> archive/NNNN`` are errors.  Other commands refuse such a store; ``doctor`` reports.

``doctor --fix`` takes the lock, rebuilds a corrupt index from the archive, runs
:meth:`Store.recover` and repairs permissions.  It never invents or deletes keys, never
chmods through a link (``O_NOFOLLOW`` descriptor), removes foreign symlinks themselves
(never their targets), and never changes ownership: a foreign owner is for a human to judge.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core import keys
from ..errors import MailcaError, StoreError
from ..storage import fsguard, schema
from ..storage.index import Index, live_targets
from ..storage.store import INTENT, KEYLESS_SOURCES, TMP_PREFIX, Store

__all__ = ["Finding", "DoctorReport", "check", "diagnose", "fix", "as_json", "rebuild_index"]

PRIVATE_FILES = ("key.pem", "keyfullchain.pem", "keyfullchain-root.pem")
REQUIRED_FIELDS = ("serial", "name", "key_type", "not_before", "not_after", "path", "version")


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _printable(s: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


@dataclass(frozen=True)
class Finding:
    level: str  # error | pending | warning
    path: str
    problem: str
    fix: str

    def line(self) -> str:
        # paths and link targets come from the file system (anyone who could write there chose
        # them): no control character reaches the terminal; --json keeps the original
        return _printable(f"{self.level.upper():<8} {self.path}: {self.problem}\n         fix: {self.fix}")


class Doctor:
    def __init__(self, store: Store):
        self.store = store
        self.findings: list[Finding] = []
        self.index_ok = True
        self.foreign_links: list[Path] = []   # symlinks mailca did not make ('--fix' removes the link)
        self.writable_dirs: list[Path] = []   # store dirs writable by group/others ('--fix': chmod 700)
        self.foreign_owned: list[Path] = []   # owned by another user (no automatic fix)
        self.bad_links: set[str] = set()      # store-relative paths of links, for the other checks to skip

    def add(self, level, path, problem, fix):
        self.findings.append(Finding(level, str(path), problem, fix))

    # -------------------------------------------------------------- checks
    def check_mode(self, path: Path, *, private: bool = False, directory: bool = False):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            return  # reported by check_trust; a link's own mode means nothing
        mode = stat.S_IMODE(st.st_mode)
        if (directory or private) and mode & 0o077:
            want = "700" if directory else "600"
            what = "directory" if directory else "private key file"
            self.add("error", path, f"{what} has mode {mode:o}; others can read it",
                     f"chmod {want} {path}  (or 'mailca doctor --fix')")

    def check_ca(self):
        s = self.store
        self.check_mode(s.path, directory=True)
        self.check_mode(s.ca_dir, directory=True)
        for fname in ("ca.json", "root.crt", "intermediate.crt", "intermediate.key", "root.key"):
            p = s.ca_file(fname)
            if not p.exists():
                fix = "restore it from a backup" if fname != "root.key" else \
                    "fine if you keep the root key offline; restore it before 'mailca ca renew-intermediate'"
                self.add("error" if fname != "root.key" else "warning", p, "missing", fix)
        for fname in ("root.key", "intermediate.key"):
            self.check_mode(s.ca_file(fname), private=True)
        try:
            from ..issuance.ca import load_ca

            ca = load_ca(s)
            ca.intermediate_key  # noqa: B018 - checks key/cert match
            try:
                ca.intermediate.verify_directly_issued_by(ca.root)
            except Exception:
                self.add("error", s.ca_file("intermediate.crt"), "not signed by root.crt",
                         "restore ca/ from a backup")
            return ca
        except MailcaError as exc:
            self.add("error", s.ca_dir, str(exc), "restore the CA files from a backup")
            return None

    def load_index(self) -> list[dict] | None:
        s = self.store
        if not s.index_path.exists():
            if s.certs_dir.exists() and any(s.certs_dir.glob("*/*/archive/[0-9]*")):
                self.add("error", s.index_path, "missing although certificates exist",
                         "'mailca doctor --fix' rebuilds it from the archive")
                self.index_ok = False
            return []
        self.check_mode(s.index_path, private=True)
        try:
            # the same shape check every other command applies (so doctor never calls a store
            # consistent that makes 'status' fail)
            try:
                data = fsguard.parse_json(fsguard.read_bytes(s.index_path))
            except MailcaError as exc:
                raise ValueError(exc.message) from None
            problem = schema.index_problem(data)
            if problem:
                raise ValueError(problem)
        except (ValueError, OSError) as exc:
            self.index_ok = False
            self.add("error", s.index_path, f"corrupt ({exc})",
                     "'mailca doctor --fix' rebuilds it from the archive (the corrupt file is kept as "
                     "index.json.corrupt-*) and restores revocations from the revocation journal")
            return None
        return data["certs"]

    def check_entries(self, entries: list[dict]):
        s = self.store
        seen: dict[str, str] = {}
        paths: set[str] = set()
        for e in entries:
            vdir = s.path / e["path"]
            if self._linked(e["path"]):
                continue  # reported by check_trust; never read through it
            label = f"{e['name']} ({e['key_type']}) v{e['version']}"
            if e["serial"] in seen and seen[e["serial"]] != e["path"]:
                self.add("error", s.index_path, f"serial {e['serial']} appears twice ({seen[e['serial']]} and {e['path']})",
                         "restore index.json from a backup, or move it away and run 'mailca doctor --fix'")
            seen[e["serial"]] = e["path"]
            if e["path"] in paths:
                self.add("error", s.index_path, f"{e['path']} is listed twice",
                         "move index.json away and run 'mailca doctor --fix' to rebuild it")
            paths.add(e["path"])
            if not vdir.is_dir():
                self.add("error", vdir, f"archive directory of {label} is missing",
                         "restore it from a backup (the index lists it)")
                continue
            self.check_mode(vdir, directory=True)
            cert_p = vdir / "cert.pem"
            try:
                from cryptography import x509
                from cryptography.hazmat.primitives import serialization

                cert = x509.load_pem_x509_certificate(fsguard.read_bytes(cert_p, limit=1 << 20))
            except FileNotFoundError:
                self.add("error", cert_p, f"certificate of {label} is missing", "restore it from a backup")
                continue
            except (ValueError, OSError):
                self.add("error", cert_p, f"certificate of {label} is unreadable or corrupt", "restore it from a backup")
                continue
            der = cert.public_bytes(serialization.Encoding.DER)
            if e.get("cert_sha256") and hashlib.sha256(der).hexdigest() != e["cert_sha256"]:
                self.add("error", cert_p, f"is not the certificate the index lists for {label} (fingerprint differs)",
                         "restore it from a backup, or move index.json away and run 'mailca doctor --fix'")
            spki = keys.spki_sha256(cert.public_key())
            if e.get("spki_sha256") and e["spki_sha256"] != spki:
                self.add("error", cert_p, f"public key differs from the index entry of {label}", "restore it from a backup")
            if e.get("source") in KEYLESS_SOURCES and not (vdir / "key.pem").exists():
                continue
            key_p = vdir / "key.pem"
            for f in PRIVATE_FILES:
                self.check_mode(vdir / f, private=True)
            try:
                key = keys.load_private_pem(fsguard.read_bytes(key_p, limit=1 << 20), str(key_p))
            except FileNotFoundError:
                self.add("error", key_p, f"private key of {label} is missing",
                         f"restore it from a backup, or replace the certificate: 'mailca renew {e['name']} --new-key'")
                continue
            except (MailcaError, OSError) as exc:
                self.add("error", key_p, f"private key of {label} is unreadable ({exc})",
                         f"restore it from a backup, or 'mailca renew {e['name']} --new-key'")
                continue
            if keys.spki_sha256(key.public_key()) != spki:
                self.add("error", key_p, f"does not match the certificate of {label}",
                         f"restore the matching key from a backup, or 'mailca renew {e['name']} --new-key'")

    def check_trust(self):
        """Owners, group/world-writable directories and foreign symlinks, one walk that
        never follows a link; the directories above the store too."""
        s = self.store
        real = Path(os.path.realpath(s.path))
        for anc in reversed(real.parents):
            with_st = _stat(anc, follow=True)
            problem = with_st and fsguard.problem_of_dir(anc, with_st, inside=False)
            if problem:
                self.foreign_owned.append(anc)
                self.add("error", anc, "directory above the store: " + problem.split(": ", 1)[-1].split(";")[0],
                         "fix its owner/mode by hand, or move the store below a directory only root can write")
        st = _stat(s.path, follow=True)
        if st is not None:
            self._judge(s.path, st, "")
        stack = [(s.path, "")]
        while stack:
            d, rel = stack.pop()
            try:
                it = list(os.scandir(d))
            except OSError:
                continue
            for ent in it:
                r = f"{rel}/{ent.name}" if rel else ent.name
                try:
                    est = ent.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISLNK(est.st_mode):
                    self._judge_link(Path(ent.path), r)
                    continue
                self._judge(Path(ent.path), est, r)
                if stat.S_ISDIR(est.st_mode) and not ent.name.startswith(TMP_PREFIX):
                    stack.append((Path(ent.path), r))

    def _judge(self, path: Path, st: os.stat_result, rel: str):
        if not fsguard.trusted_uid(st.st_uid):
            self.foreign_owned.append(path)
            self.add("error", path, f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()}) or root: that user "
                     "could steer what mailca signs; other commands refuse this store",
                     f"check its contents, then 'chown {os.geteuid()} {path}' (doctor --fix does not change owners)")
        elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022:
            self.writable_dirs.append(path)
            self.add("error", path, f"directory has mode {stat.S_IMODE(st.st_mode):o}; group/others can write it "
                     "(and steer what mailca signs); other commands refuse this store",
                     f"check its contents, then chmod 700 {path}  (or 'mailca doctor --fix')")

    def _judge_link(self, path: Path, rel: str):
        target = fsguard.readlink_safe(path)
        parts = rel.split("/")
        if len(parts) == 4 and parts[0] == "certs" and parts[3] == "live":
            if fsguard.LIVE_TARGET.match(target):
                return  # mailca's own link; check_lineages judges where it points
            self.bad_links.add(rel)
            self.add("error", path, f"points at {target!r}, outside its lineage's archive/NNNN; other commands "
                     "refuse to read through it", "'mailca doctor --fix' points it at the current version")
            return
        if path.name.startswith(TMP_PREFIX):
            return  # an interrupted atomic_symlink (check_temp reports it as pending)
        self.bad_links.add(rel)
        self.foreign_links.append(path)
        self.add("error", path, f"symlink to {target!r}: mailca makes no such link and does not follow links "
                 "inside a store; other commands refuse or ignore it",
                 f"inspect it, then remove the link (not its target): 'rm {path}' (or 'mailca doctor --fix')")

    def _linked(self, rel: str) -> bool:
        """``rel`` (store-relative) is, or is below, a foreign symlink."""
        return any(rel == b or rel.startswith(b + "/") for b in self.bad_links)

    def check_lineages(self, entries: list[dict] | None):
        s = self.store
        if not s.certs_dir.exists() or self._linked("certs"):
            return
        self.check_mode(s.certs_dir, directory=True)
        indexed = {e["path"] for e in entries} if entries is not None else None
        targets = live_targets(entries) if entries is not None else {}
        for lineage in sorted(s.certs_dir.glob("*/*")):
            if not lineage.is_dir() or lineage.name.startswith(TMP_PREFIX) or self._linked(s.relpath(lineage)):
                continue
            self.check_mode(lineage.parent, directory=True)
            self.check_mode(lineage, directory=True)
            for f in lineage.glob("*key*.pem"):  # e.g. the staged key of 'mailca rekey --stage'
                if f.is_file() and not f.is_symlink():
                    self.check_mode(f, private=True)
            archive = lineage / "archive"
            if not archive.is_dir() or self._linked(s.relpath(archive)):
                continue
            for vdir in sorted(archive.iterdir()):
                if not vdir.name.isdigit() or indexed is None:
                    continue
                rel = s.relpath(vdir)
                if rel not in indexed:
                    if s.entry_from_version_dir(vdir) is not None:
                        self.add("pending", vdir, "complete version not in the index yet (interrupted issue/renew)",
                                 "none needed: the next mailca command (or 'mailca doctor --fix') adds it")
                    else:
                        self.add("warning", vdir, "incomplete archive version, not in the index and unused",
                                 f"remove it: rm -r {vdir}")
            link = lineage / "live"
            want = targets.get(s.relpath(lineage))
            if not os.path.lexists(link):
                if want:
                    self.add("pending", link, "missing (interrupted first issue)",
                             f"none needed: the next mailca command (or 'mailca doctor --fix') points it at {want}")
                continue
            if not os.path.islink(link):
                self.add("error", link, "is not a symlink",
                         f"move it away; 'mailca doctor --fix' then links it to {want or 'the newest version'}")
                continue
            target = os.readlink(link)
            if self._linked(s.relpath(link)):
                continue  # reported by check_trust
            if not (lineage / target).is_dir():
                self.add("error", link, f"dangling: points at {target}, which does not exist",
                         f"'mailca doctor --fix' points it at {want}" if want else "restore the archive from a backup")
            elif want and target != want:
                self.add("pending", link, f"points at {target}, the current version is {want}",
                         "none needed: the next mailca command (or 'mailca doctor --fix') repoints it")

    def check_temp(self):
        intent = self.store.path / INTENT
        if intent.exists():
            self.add("pending", intent, "journal of an interrupted operation",
                     "none needed: the next mailca command (or 'mailca doctor --fix') finishes it")
        for root, dirs, files in os.walk(self.store.path):  # never follows links
            for d in list(dirs):
                if d.startswith(TMP_PREFIX):
                    dirs.remove(d)
                    kind = "symlink" if os.path.islink(os.path.join(root, d)) else "directory"
                    self.add("pending", os.path.join(root, d), f"unfinished temp {kind} (interrupted write)",
                             "none needed: removed by the next mailca command (or 'mailca doctor --fix')")
            for f in files:
                if f.startswith(TMP_PREFIX):
                    self.add("pending", os.path.join(root, f), "unfinished temp file (interrupted write)",
                             "none needed: removed by the next mailca command (or 'mailca doctor --fix')")

    def run(self) -> list[Finding]:
        s = self.store
        guarded, s.guarded = s.guarded, False  # report what the guard would refuse
        try:
            if not s.path.exists():
                s.require_ca()
            if not s.exists():
                raise StoreError(f"no CA in {s.path}; nothing to check (create one with 'mailca init --dir {s.path} "
                                 "--domain YOUR.DOMAIN')")
            self.check_trust()
            self.check_ca()
            entries = self.load_index()
            if entries:
                self.check_entries(entries)
            self.check_lineages(entries)
            self.check_temp()
        finally:
            s.guarded = guarded
        return self.findings


def _stat(p, *, follow: bool) -> os.stat_result | None:
    try:
        return os.stat(p) if follow else os.lstat(p)
    except OSError:
        return None


def diagnose(store: Store) -> list[Finding]:
    return Doctor(store).run()


def rebuild_index(store: Store) -> list[str]:
    """Move a corrupt index away and rebuild it from the archive (under the lock)."""
    actions = []
    if store.index_path.exists():
        keep = store.path / f"index.json.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(store.index_path, keep)
        actions.append(f"moved the corrupt index to {keep}")
    entries = []
    for vdir in sorted(store.certs_dir.glob("*/*/archive/[0-9]*")) if store.certs_dir.exists() else []:
        e = store.entry_from_version_dir(vdir)
        if e is not None:
            entries.append(e)
    Index.rebuild(store, entries)
    actions.append(f"rebuilt index.json from {len(entries)} archive versions")
    # The archive knows nothing of revocations; the revocation journal (crl/revocations.tsv)
    # does, so the rebuilt index gets its marks back.
    from .revoke import reapply_journal

    notes = reapply_journal(store)
    if notes:
        actions.append(f"restored {len(notes)} revocation mark(s) from the revocation journal")
    return actions


def fix(store: Store) -> list[str]:
    """Repair what can be repaired without a backup; returns the actions taken."""
    d = Doctor(store)
    d.run()
    actions: list[str] = []
    # Trust repairs first (the lock refuses the store until they are done), none through a link:
    # remove foreign links themselves, chmod writable directories through O_NOFOLLOW descriptors.
    for p in d.foreign_links:
        target = fsguard.readlink_safe(p)
        try:
            os.unlink(p)  # unlink acts on the link, never on what it points at
        except OSError as exc:
            raise StoreError(f"cannot remove the symlink {p}: {exc.strerror}") from None
        actions.append(f"removed the symlink {p} (it pointed at {target!r}; the target was not touched)")
    for p in d.writable_dirs:
        if fsguard.safe_chmod(p, 0o700):
            actions.append(f"chmod 700 {p}")
    if d.foreign_owned:
        raise StoreError(f"not repairing {store.path}: {d.foreign_owned[0]} is owned by another user (or a directory "
                         "above the store is writable by others); check the contents, fix owner/mode by hand, then run "
                         "'mailca doctor --fix' again")
    with store.lock(recover=False):
        if not d.index_ok:
            actions += rebuild_index(store)
        try:
            actions += store.recover()  # the whole store, not only the journalled lineages
        except OSError as exc:
            raise StoreError(f"recovery failed: {exc}; fix the path named above by hand, then run 'mailca doctor' again") from None
        intent = store.path / INTENT
        if intent.exists():
            os.unlink(intent)
            actions.append(f"removed the finished journal {intent}")
        for f in d.findings:
            if f.level == "error" and "others can read it" in f.problem:
                p = Path(f.path)
                mode = 0o700 if p.is_dir() and not p.is_symlink() else 0o600
                if fsguard.safe_chmod(p, mode):  # never through a link
                    actions.append(f"chmod {mode:o} {p}")
    return actions


def as_json(findings: list[Finding], fixed: list[str] | None = None) -> dict:
    errors = [f for f in findings if f.level == "error"]
    return {"consistent": not errors, "errors": len(errors),
            "pending": sum(1 for f in findings if f.level == "pending"),
            "warnings": sum(1 for f in findings if f.level == "warning"),
            "findings": [asdict(f) for f in findings], "fixed": fixed or []}


@dataclass(frozen=True)
class DoctorReport:
    """One ``mailca doctor`` run: what was repaired (``--fix``) and what is still found."""

    findings: tuple[Finding, ...]
    fixed: tuple[str, ...] = ()

    def count(self, level: str) -> int:
        return sum(1 for f in self.findings if f.level == level)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def pending(self) -> int:
        return self.count("pending")

    @property
    def consistent(self) -> bool:
        return self.errors == 0

    def as_dict(self) -> dict:
        """The documented ``--json`` output."""
        return as_json(list(self.findings), list(self.fixed))


def check(store: Store, *, repair: bool = False) -> DoctorReport:
    """``repair``: :func:`fix` first (under the lock); then diagnose."""
    fixed = fix(store) if repair else []
    return DoctorReport(tuple(diagnose(store)), tuple(fixed))

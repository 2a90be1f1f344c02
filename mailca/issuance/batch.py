"""``mailca issue --batch FILE``: many certificates in one process.

One line = one certificate (per key type) whose SAN holds the line's names (space-separated;
the first is the lineage name).  Blank lines and ``#`` comments are skipped.  Each line is
all-or-nothing: every name is validated and every certificate of the line is built, linted
and verified before any of its files is written; a bad line is reported and the others go on.

Speed without giving up crash safety: the CA is loaded once, the store lock is taken once,
every file still gets its own fsync and every version directory is renamed into place
atomically, but ``index.json`` (which grows with every line) is rewritten only every
``flush_every`` lines and at the end instead of once per line (rewriting it per line makes a
batch O(n^2)).  A crash between two flushes loses nothing: :meth:`Store.recover`, run under
the lock by the next mailca command, re-indexes every complete archive version the index
does not list yet and repoints the live links.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from . import ca as camod
from ..core import certinfo, keys
from ..errors import MailcaError, StoreError, UsageError

__all__ = ["BatchResult", "issue_batch", "read_lines", "WORKERS", "FLUSH_EVERY"]

FLUSH_EVERY = 100
WORKERS = 4  # writer threads (measured: more threads only add GIL and journal contention)


@dataclass(frozen=True)
class BatchResult:
    """``issued``: certificates written; ``failed``: lines that failed (``errors``: {line,
    error}, by line); ``certificates``: {line, name, key_type, serial, not_after, live_dir}.
    ``as_dict()`` is the ``--json`` output."""

    issued: int
    failed: int
    errors: tuple[dict, ...]
    certificates: tuple[dict, ...]

    def as_dict(self) -> dict:
        return {"issued": self.issued, "failed": self.failed, "errors": list(self.errors),
                "certificates": list(self.certificates)}


def read_lines(batch_file: str) -> list[tuple[int, list[str]]]:
    if batch_file == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(batch_file, "r", encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise UsageError(f"--batch file {batch_file!r} does not exist; give a file with one certificate's names per line (or '-' for stdin)") from None
        except IsADirectoryError:
            raise UsageError(f"--batch {batch_file!r} is a directory; give a text file with one certificate's names per line") from None
        except PermissionError:
            raise UsageError(f"--batch file {batch_file!r} is not readable (permission denied)") from None
        except UnicodeDecodeError:
            raise UsageError(f"--batch file {batch_file!r} is not UTF-8 text") from None
    lines = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append((no, line.split()))
    if not lines:
        raise UsageError(f"--batch file {batch_file!r} names no certificates; write one line per certificate, e.g. 'mail.example.org smtp.example.org'")
    return lines


def issue_batch(store, batch_file: str, *, key_types: list[str] | None = None, days: int | None = None,
                profile: str | None = None, progress: bool = True, durable: bool = True,
                flush_every: int = FLUSH_EVERY, lines: list[tuple[int, list[str]]] | None = None,
                replace: bool = False) -> BatchResult:
    """Issue one certificate (per key type) for each line (see :class:`BatchResult`)."""
    ca = camod.load_ca(store)
    prof = camod.profile_for(ca, profile)
    kts = camod.resolve_key_types(prof, list(key_types or []))
    ndays = camod.resolve_days(prof, days)
    if lines is None:
        lines = read_lines(batch_file)
    if flush_every < 1:
        flush_every = 1
    ca.intermediate_key  # load (and check) once, before the lock
    store.check_writable()
    out = {"issued": 0, "failed": 0, "errors": [], "certificates": []}
    # 1. names: validate every line first (cheap), so bad lines cost nothing later
    valid = []
    for no, names in lines:
        try:
            dns, ips = camod.normalize_request(ca, prof, names, [], [])
            valid.append((no, dns, ips))
        except MailcaError as exc:
            out["errors"].append({"line": no, "error": str(exc)})
    bar = None
    if progress and sys.stderr.isatty():
        import click

        bar = click.progressbar(length=len(lines), label="Issuing", file=sys.stderr, show_pos=True)
        bar.__enter__()
        bar.update(len(lines) - len(valid))
    try:
        if not valid:
            return _finish(out)
        with store.lock():
            if not replace:  # a line for a host that already has a live certificate fails, as with 'issue'
                keep = []
                for no, dns, ips in valid:
                    try:
                        for kt in kts:
                            camod.refuse_silent_replacement(store, dns[0], kt, what="issue a new certificate")
                        keep.append((no, dns, ips))
                    except MailcaError as exc:
                        out["errors"].append({"line": no, "error": str(exc)})
                valid = keep
                if not valid:
                    return _finish(out)
            store.note_intents([store.lineage_dir(dns[0], kt) for _, dns, _ in valid for kt in kts])
            _pipeline(store, ca, prof, kts, ndays, valid, out, durable=durable, flush_every=flush_every, bar=bar)
    finally:
        if bar:
            bar.__exit__(None, None, None)
    return _finish(out)


def _finish(out: dict) -> BatchResult:
    out["errors"].sort(key=lambda e: e["line"])
    out["certificates"].sort(key=lambda c: (c["line"], c["key_type"]))
    return BatchResult(out["issued"], len(out["errors"]), tuple(out["errors"]), tuple(out["certificates"]))




def _partition(items: list, n: int) -> list[list]:
    """Split lines into ``n`` parts, all lines of one lineage name in the same part."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(item[1][0], []).append(item)
    parts: list[list] = [[] for _ in range(max(1, n))]
    for i, g in enumerate(groups.values()):
        parts[i % len(parts)].extend(g)
    return [p for p in parts if p]


def _pipeline(store, ca, prof, kts, ndays, valid, out, *, durable, flush_every, bar, workers: int | None = None) -> None:
    """Issue the valid lines with ``workers`` threads.

    Why threads: a durable certificate version costs about a dozen fsyncs, during which the
    GIL is free; several versions in flight let the file system merge their journal commits.
    Lines of one lineage name always go to the same worker (versions are numbered in order),
    each worker collects its index entries privately, and the shared index is extended and
    written under one mutex every ``flush_every`` certificates and at the end."""
    import threading

    from ..storage.index import Index

    parts = _partition(valid, workers or WORKERS)
    idx = Index.load(store)
    mutex = threading.Lock()
    state = {"pending": []}
    failure: list[BaseException] = []

    def flush_locked():
        if state["pending"]:
            idx.extend(state["pending"])
            state["pending"] = []
            idx.save(durable=durable)

    def work(items):
        local = Index(store)  # this worker's entries; the shared index gets them at the next flush
        try:
            for no, dns, ips in items:
                if failure:
                    return
                try:
                    now = certinfo.utcnow()
                    prepared = []
                    for kt in kts:
                        key = keys.generate(kt)
                        cert = camod.sign_leaf(ca, key.public_key(), dns=dns, ips=ips, days=ndays, profile=prof, now=now)
                        prepared.append((kt, key, cert))
                except MailcaError as exc:
                    with mutex:
                        out["errors"].append({"line": no, "error": str(exc)})
                    continue
                finally:
                    if bar:
                        with mutex:
                            bar.update(1)
                for kt, key, cert in prepared:
                    issued = camod.commit_version(store, ca, name=dns[0], key_type=kt, key=key, cert=cert, profile=prof,
                                                  source="issue", durable=durable, index=local, save_index=False)
                    e = issued.entry
                    cert_info = {"line": no, "name": e["name"], "key_type": kt, "serial": e["serial"],
                                 "not_after": e["not_after"], "live_dir": str(issued.live_dir)}
                    with mutex:
                        out["certificates"].append(cert_info)
                        out["issued"] += 1
                        state["pending"].append(e)
                        if len(state["pending"]) >= flush_every:
                            flush_locked()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # hand the GIL back quickly to a thread whose fsync returned
    try:
        threads = [threading.Thread(target=work, args=(p,), name=f"mailca-batch-{i}", daemon=True)
                   for i, p in enumerate(parts) if p]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
        with mutex:
            try:
                flush_locked()
            except BaseException as exc:  # noqa: BLE001
                if not failure:
                    failure.append(exc)
    if failure:
        exc = failure[0]
        if isinstance(exc, MailcaError):
            raise exc
        if isinstance(exc, OSError):
            raise StoreError(f"writing the batch failed: {exc.strerror or exc}; other lines were issued") from None
        raise exc


def timed_issue_batch(*args, **kw) -> tuple[BatchResult, float]:  # used by the benchmark
    t = time.perf_counter()
    r = issue_batch(*args, **kw)
    return r, time.perf_counter() - t

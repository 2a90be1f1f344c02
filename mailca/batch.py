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

from . import ca as camod
from . import certinfo, keys
from .errors import MailcaError, StoreError, UsageError

FLUSH_EVERY = 100


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
                flush_every: int = FLUSH_EVERY, lines: list[tuple[int, list[str]]] | None = None) -> dict:
    """Issue one certificate (per key type) for each line; returns
    ``{"issued": n_certs, "failed": n_lines, "errors": [{line, error}], "certificates": [...]}``."""
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
    bar = None
    if progress and sys.stderr.isatty():
        import click

        bar = click.progressbar(length=len(lines), label="Issuing", file=sys.stderr, show_pos=True)
        bar.__enter__()
    try:
        with store.lock():
            idx = store.load_index()
            pending = 0
            for no, names in lines:
                try:
                    now = certinfo.utcnow()
                    dns, ips = camod.normalize_request(ca, prof, names, [], [])
                    prepared = []
                    for kt in kts:
                        key = keys.generate(kt)
                        cert = camod.sign_leaf(ca, key.public_key(), dns=dns, ips=ips, days=ndays, profile=prof, now=now)
                        prepared.append((kt, key, cert))
                except MailcaError as exc:
                    out["failed"] += 1
                    out["errors"].append({"line": no, "error": str(exc)})
                    if bar:
                        bar.update(1)
                    continue
                try:
                    for kt, key, cert in prepared:
                        issued = camod.commit_version(store, ca, name=dns[0], key_type=kt, key=key, cert=cert,
                                                      profile=prof, source="issue", durable=durable, index=idx,
                                                      save_index=False)
                        e = issued.entry
                        out["certificates"].append({"line": no, "name": e["name"], "key_type": kt, "serial": e["serial"],
                                                    "not_after": e["not_after"], "live_dir": str(issued.live_dir)})
                        out["issued"] += 1
                        pending += 1
                except OSError as exc:
                    if pending:
                        store.save_index(idx, durable=durable)
                    raise StoreError(f"writing line {no} failed: {exc.strerror or exc}; lines before it were issued") from None
                if pending >= flush_every:
                    store.save_index(idx, durable=durable)
                    pending = 0
                if bar:
                    bar.update(1)
            if pending:
                store.save_index(idx, durable=durable)
    finally:
        if bar:
            bar.__exit__(None, None, None)
    return out


def timed_issue_batch(*args, **kw) -> tuple[dict, float]:  # used by the benchmark
    t = time.perf_counter()
    r = issue_batch(*args, **kw)
    return r, time.perf_counter() - t

"""A real, isolated Postfix instance on loopback high ports, for tests (shared infrastructure).

Used by the ``mailca postfix`` tests (issue #4) and by ``mailca check`` (issue #5) to run a
deliberately weak server.  Nothing here is mocked: it runs the Debian ``postfix`` (and, with
``sasl=True``, ``dovecot``) binaries as root with their own configuration, queue and data
directories, bound to 127.0.0.1 only.

API (stable, keep it)::

    class PostfixServer:  # context manager; start() on __enter__, stop() on __exit__
        def __init__(self, workdir: Path, *, main_cf: str, master_cf: str,
                     sasl: bool = False, users: dict[str, str] | None = None): ...
        ports: dict[str, int]   # {"smtp": p, "submission": p, "submissions": p}, free high
                                # ports on 127.0.0.1, chosen in __init__
        config_dir: Path        # holds the generated main.cf / master.cf
        log_file: Path          # Postfix's maillog_file (postlogd)
        def start(self): ...    # `postfix -c config_dir start`, waits until every port accepts a
                                # connection (timeout), raises RuntimeError with the log tail otherwise
                                # (only the ports whose service master_cf defines: a master_cf with
                                # just "smtp" gets ports for all three, but only smtp listens)
        def reload(self): ...   # `postfix -c config_dir reload`, waits until ready again
        def stop(self): ...     # stops Postfix (and Dovecot); safe to call twice
        def postconf(self, *args) -> str   # runs `postconf -c config_dir ARGS`, returns stdout
                                           # (raises RuntimeError on a non-zero exit)

Example::

    with PostfixServer(tmp_path / "pf", main_cf=MAIN, master_cf=MASTER, sasl=True,
                       users={"alice": "secret"}) as srv:
        smtp_port = srv.ports["submission"]
        ...

What ``main_cf`` / ``master_cf`` may contain: the text mailca (or a test) wants.  ``master_cf``
may be a complete master.cf or only the service entries of interest: the harness starts from
a minimal set of Postfix's internal services (pickup, cleanup, qmgr, tlsmgr, rewrite, bounce,
..., ``postlog``) and entries in ``master_cf`` replace those with the same service name and
type.  The harness then makes the instance isolated:

* main.cf: ``config_directory``, ``queue_directory``, ``data_directory`` (below ``workdir``),
  ``inet_interfaces = 127.0.0.1``, ``inet_protocols = ipv4``, ``maillog_file``,
  ``myhostname = mail.example.org`` (only if the text sets none), ``mydestination = localhost``,
  ``maillog_file_prefixes``, ``compatibility_level = 3.6``, empty ``alias_maps``/``alias_database``, and
  ``default_transport``/``relay_transport`` = ``error`` and ``local_transport`` = ``discard``
  (mail for @localhost is queued, then dropped) so that the test instance can never send or
  deliver mail anywhere.  Settings of these names in ``main_cf`` are removed
  (not duplicated, so ``postconf -n`` prints no "overriding earlier entry" warning).
* master.cf: the ``inet`` services ``smtp``, ``submission``, ``submissions`` (and the old name
  ``smtps``) are rewritten to ``127.0.0.1:<port>``; other ``inet`` services are dropped; the
  chroot column is set to ``n`` everywhere (a chroot jail would need copies of system files).
* ``sasl=True``: a real Dovecot auth-only instance (own ``base_dir``, ``passdb passwd-file``
  with ``users``, auth listener ``<queue>/private/auth`` owned by postfix) so that
  ``smtpd_sasl_type = dovecot`` + ``smtpd_sasl_path = private/auth`` work and AUTH is offered.

* ``keep_chroot=True`` (a Debian-like set-up): the chroot column of the entries in ``master_cf`` is
  kept as given (``y`` for postscreen/smtpd as Debian ships them), and the files Debian's
  init script copies into the jail (``etc/services``, ``hosts``, ``resolv.conf``, ...) are
  copied into the queue directory.
* ``imap_cert=(cert, key)``: the Dovecot instance is a full one (implies ``sasl=True``): IMAP on
  ``ports["imap"]`` (STARTTLS) and ``ports["imaps"]`` (implicit TLS) on 127.0.0.1 with that
  certificate pair, LMTP on ``<queue>/private/dovecot-lmtp``, maildirs below the run directory,
  and ``!include_try conf.d/*.conf`` so a drop-in in ``config_dir/conf.d`` is read.
  ``dovecot_reload()`` reloads it.

* ``hosts={"mail.example.org": "127.0.0.1"}``: this instance (master and every daemon it forks)
  runs in a private mount namespace (``unshare --mount``) where ``/etc/hosts`` is a bind mount of
  a file with these entries added, so a sending instance can reach a loopback server by name
  (``smtp_host_lookup = native``) without touching the machine's ``/etc/hosts``.
  :func:`with_hosts` gives the same for any other program (Exim, fetchmail).

Several instances may run at once (distinct workdirs and ports).

Permissions: Postfix daemons drop to the ``postfix`` user.  pytest's temporary directories sit
below a 0700 ``/tmp/pytest-of-root``, which that user cannot traverse, so when ``workdir`` is
not reachable for others the runtime directories (queue, data, Dovecot) live in a private
``/tmp/mailca-pfx-*`` directory (0711), linked from ``workdir/run``, and removed by stop() (the logs are copied to ``workdir`` first
and ``log_file`` then names the copy).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

LISTENER_SERVICES = ("smtp", "submission", "submissions")
_ALIASES = {"smtps": "submissions"}

# Postfix's own internal services (from the stock master.cf), chroot off.
BASE_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# A minimal plain server (useful default for tests that only need "a Postfix").
PLAIN_MASTER_CF = """\
smtp       inet  n       -       n       -       -       smtpd
submission inet  n       -       n       -       -       smtpd
submissions inet n       -       n       -       -       smtpd
"""

START_TIMEOUT = 30.0


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel's choice from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hosts_file(path: Path, hosts: dict[str, str]) -> Path:
    """The machine's /etc/hosts plus ``hosts`` (name -> loopback address), written to ``path``."""
    for addr in hosts.values():
        if not (addr.startswith("127.") or addr == "::1"):
            raise ValueError(f"hosts entries must be loopback addresses, not {addr!r}")
    text = Path("/etc/hosts").read_text() + "".join(f"{a} {n}\n" for n, a in hosts.items())
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def with_hosts(hosts_path: Path, argv: list[str]) -> list[str]:
    """``argv`` run in a private mount namespace where /etc/hosts is ``hosts_path``."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
            'mount --bind "$1" /etc/hosts; shift; exec "$@"', "sh", str(hosts_path), *map(str, argv)]


def _others_can_traverse(path: Path) -> bool:
    p = path.resolve()
    for d in [p, *p.parents]:
        try:
            st = d.stat()
        except FileNotFoundError:
            continue
        if not st.st_mode & stat.S_IXOTH:
            return False
    return True


# ------------------------------------------------------------------ main.cf / master.cf text
def _main_cf_entries(text: str) -> list[tuple[str | None, list[str]]]:
    """Split main.cf text into (parameter name or None, lines) logical entries."""
    out: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and line.strip() and not line.lstrip().startswith("#") and out and out[-1][0]:
            out[-1][1].append(line)
            continue
        m = re.match(r"^([A-Za-z0-9_]+)\s*=", line)
        out.append((m.group(1) if m else None, [line]))
    return out


def merge_main_cf(text: str, overrides: dict[str, str], defaults: dict[str, str] | None = None) -> str:
    """``text`` without the parameters named in ``overrides``, then the overrides appended;
    ``defaults`` are appended only when ``text`` does not set them."""
    entries = _main_cf_entries(text)
    present = {n for n, _ in entries if n}
    lines = [ln for n, ls in entries if n not in overrides for ln in ls]
    lines.append("")
    lines.append("# --- test-instance isolation (tests/postfix_harness.py) ---")
    for k, v in (defaults or {}).items():
        if k not in present and k not in overrides:
            lines.append(f"{k} = {v}")
    for k, v in overrides.items():
        lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


def _master_cf_entries(text: str) -> list[list[str]]:
    """Split master.cf text into entries (first line + continuation lines); comments dropped."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1] in (" ", "\t"):
            if entries:
                entries[-1].append(line)
            continue
        entries.append([line])
    return entries


def merge_master_cf(text: str, ports: dict[str, int], active: set[str] | None = None, *,
                    keep_chroot: bool = False) -> str:
    """Base services + ``text`` (same name/type replaces), listeners bound to 127.0.0.1:PORT.
    The listener services found are added to ``active``.  ``keep_chroot``: entries of ``text``
    keep their chroot column."""
    merged: dict[tuple[str, str], list[str]] = {}
    for src in (BASE_MASTER_CF, text):
        for entry in _master_cf_entries(src):
            fields = entry[0].split()
            if len(fields) < 8:
                raise ValueError(f"master.cf line has fewer than 8 fields: {entry[0]!r}")
            name, typ = fields[0], fields[1]
            if typ == "inet":
                svc = name.rsplit(":", 1)[-1]
                svc = _ALIASES.get(svc, svc)
                if svc not in ports:
                    continue  # an inet service the harness does not manage: never bind it
                name = f"127.0.0.1:{ports[svc]}"
                if active is not None:
                    active.add(svc)
            fields[0] = name
            if not (keep_chroot and src is text):
                fields[4] = "n"  # no chroot
            merged[(name, typ)] = [" ".join(fields)] + entry[1:]
    return "\n".join(ln for e in merged.values() for ln in e) + "\n"


# ------------------------------------------------------------------------------- the server
class PostfixServer:
    """One isolated Postfix (+ optional Dovecot auth) instance; see the module docstring."""

    def __init__(self, workdir: Path, *, main_cf: str, master_cf: str, sasl: bool = False,
                 users: dict[str, str] | None = None, keep_chroot: bool = False,
                 imap_cert: tuple[Path, Path] | None = None, hosts: dict[str, str] | None = None):
        self.workdir = Path(workdir).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.main_cf_text = main_cf
        self.master_cf_text = master_cf
        self.imap_cert = imap_cert
        self.sasl = sasl or imap_cert is not None
        self.keep_chroot = keep_chroot
        self.users = dict(users or {})
        ports: dict[str, int] = {}
        names = LISTENER_SERVICES + (("imap", "imaps") if imap_cert else ())
        while len(ports) < len(names):
            p = free_port()
            if p not in ports.values():
                ports[names[len(ports)]] = p
        self.ports = ports
        self.config_dir = self.workdir / "etc"
        self._private_run: Path | None = None
        if _others_can_traverse(self.workdir):
            self.run_dir = self.workdir / "run"
        else:
            self._private_run = Path(tempfile.mkdtemp(prefix="mailca-pfx-"))
            os.chmod(self._private_run, 0o711)
            self.run_dir = self.workdir / "run"
            if self.run_dir.is_symlink() or self.run_dir.exists():
                if self.run_dir.is_symlink():
                    self.run_dir.unlink()
                else:
                    shutil.rmtree(self.run_dir)
            self.run_dir.symlink_to(self._private_run)
            self.run_dir = self._private_run  # configs name the real path: workdir is not traversable
        self.queue_dir = self.run_dir / "queue"
        self.data_dir = self.run_dir / "data"
        self.log_file = self.run_dir / "maillog"
        self.dovecot_dir = self.run_dir / "dovecot"
        self.dovecot_conf = self.config_dir / "dovecot.conf"
        self._started = False
        self._dovecot_started = False
        self.hosts = dict(hosts or {})

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "PostfixServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------ config
    def isolation_overrides(self) -> dict[str, str]:
        return {
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.run_dir),
            "mydestination": "localhost",
            "compatibility_level": "3.6",
            "alias_maps": "",
            "alias_database": "",
            "default_transport": "error:test instance sends no mail",
            "relay_transport": "error:test instance sends no mail",
            # mail for @localhost is accepted, queued and discarded (a full submission can be
            # tested end to end without delivering anything anywhere)
            "local_transport": "discard:test instance delivers no mail",
        }

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)  # root-owned, as Postfix expects
        main = merge_main_cf(self.main_cf_text, self.isolation_overrides(),
                             defaults={"myhostname": "mail.example.org"})
        (self.config_dir / "main.cf").write_text(main)
        active: set[str] = set()
        (self.config_dir / "master.cf").write_text(
            merge_master_cf(self.master_cf_text, self.ports, active, keep_chroot=self.keep_chroot))
        self.active_services = active
        if self.keep_chroot:
            self._populate_chroot()

    def _populate_chroot(self) -> None:
        """The files Debian's postfix init script copies into the jail."""
        etc = self.queue_dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        for name in ("localtime", "services", "resolv.conf", "hosts", "host.conf", "nsswitch.conf"):
            src = Path("/etc") / name
            if src.exists():
                shutil.copyfile(src, etc / name)

    def _write_dovecot(self) -> None:
        d = self.dovecot_dir
        (d / "base").mkdir(parents=True, exist_ok=True)
        (d / "state").mkdir(parents=True, exist_ok=True)
        users = d / "users"
        fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            for u, pw in self.users.items():
                if ":" in u or ":" in pw or "\n" in u + pw:
                    raise ValueError(f"user/password for {u!r} must not contain ':' or newlines")
                fh.write(f"{u}:{{PLAIN}}{pw}::::::\n")
        if self.imap_cert is not None:
            self.dovecot_conf.write_text(self._imap_dovecot_conf(users))
            return
        conf = f"""\
# Dovecot auth-only instance for a Postfix test (tests/postfix_harness.py)
instance_name = mailca-test-{self.ports['smtp']}
base_dir = {d / 'base'}
state_dir = {d / 'state'}
protocols =
ssl = no
log_path = {d / 'dovecot.log'}
auth_mechanisms = plain login
disable_plaintext_auth = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  user = root
  unix_listener {self.queue_dir / 'private' / 'auth'} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""
        self.dovecot_conf.write_text(conf)

    def _imap_dovecot_conf(self, users: Path) -> str:
        d = self.dovecot_dir
        mail = d / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, 65534, 65534)  # nobody: the static userdb below
        cert, key = self.imap_cert
        return f"""\
# Dovecot with IMAP, LMTP and SASL for a Postfix test (tests/postfix_harness.py)
instance_name = mailca-test-{self.ports['smtp']}
base_dir = {d / 'base'}
state_dir = {d / 'state'}
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
log_path = {d / 'dovecot.log'}
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.ports['imap']}
  }}
  inet_listener imaps {{
    port = {self.ports['imaps']}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener {self.queue_dir / 'private' / 'dovecot-lmtp'} {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
service auth {{
  user = root
  unix_listener {self.queue_dir / 'private' / 'auth'} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
!include_try conf.d/*.conf
"""

    def dovecot_reload(self) -> None:
        r = self._run(["dovecot", "-c", str(self.dovecot_conf), "reload"])
        if r.returncode != 0:
            self._fail("dovecot reload failed", r)

    # ---------------------------------------------------------------------- process
    def _run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def postconf(self, *args) -> str:
        r = self._run(["postconf", "-c", str(self.config_dir), *map(str, args)])
        if r.returncode != 0:
            raise RuntimeError(f"postconf {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def log_tail(self, n: int = 40) -> str:
        parts = []
        for f in (self.log_file, self.dovecot_dir / "dovecot.log"):
            try:
                parts.append(f"--- {f}:\n" + "\n".join(f.read_text(errors="replace").splitlines()[-n:]))
            except OSError:
                pass
        return "\n".join(parts)

    def _fail(self, what: str, r: subprocess.CompletedProcess | None = None) -> None:
        extra = f"\nstdout: {r.stdout}\nstderr: {r.stderr}" if r is not None else ""
        raise RuntimeError(f"{what}{extra}\n{self.log_tail()}")

    def _postfix(self, action: str) -> subprocess.CompletedProcess:
        """Run `postfix -c DIR ACTION`.  Postfix writes its own errors to stderr only when
        stderr is a terminal (else to syslog, absent here), so give it a pseudo-terminal."""
        argv = ["postfix", "-c", str(self.config_dir), action]
        if action == "start" and self.hosts:
            argv = with_hosts(hosts_file(self.run_dir / "hosts", self.hosts), argv)
        master, slave = pty.openpty()
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=slave, timeout=60)
            os.close(slave)
            slave = -1
            err = b""
            while select.select([master], [], [], 0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                err += chunk
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
        return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                           err.decode(errors="replace").replace("\r\n", "\n"))

    def _port_ready(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        active = getattr(self, "active_services", None) or set(self.ports)
        pending = {svc: p for svc, p in self.ports.items() if svc in active}
        while pending and time.monotonic() < deadline:
            for svc, port in list(pending.items()):
                if self._port_ready(port):
                    del pending[svc]
            if pending:
                time.sleep(0.1)
        if pending:
            self._fail(f"Postfix did not accept connections on {pending} within {timeout:.0f}s")

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        self.write_config()
        if self.sasl:
            # `postfix check` creates the queue directories (private/ for the auth socket)
            r = self._postfix("check")
            if r.returncode != 0:
                self._fail("postfix check failed", r)
            self._write_dovecot()
            # the daemon keeps inherited fds open: send its output to a file, not a pipe
            with open(self.dovecot_dir / "start.out", "w+") as out:
                p = subprocess.run(["dovecot", "-c", str(self.dovecot_conf)], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=out, timeout=60)
                out.seek(0)
                r = subprocess.CompletedProcess(p.args, p.returncode, "", out.read())
            if r.returncode != 0:
                self._fail("dovecot failed to start", r)
            self._dovecot_started = True
            sock = self.queue_dir / "private" / "auth"
            deadline = time.monotonic() + START_TIMEOUT
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not sock.exists():
                self._fail(f"Dovecot did not create {sock}")
            for svc in ("imap", "imaps"):
                if svc in self.ports:
                    deadline = time.monotonic() + START_TIMEOUT
                    while not self._port_ready(self.ports[svc]) and time.monotonic() < deadline:
                        time.sleep(0.1)
                    if not self._port_ready(self.ports[svc]):
                        self._fail(f"Dovecot does not listen on {svc} port {self.ports[svc]}")
        r = self._postfix("start")
        if r.returncode != 0:
            self._fail("postfix start failed", r)
        self._started = True
        self.wait_ready()

    def _reload_count(self) -> int:
        try:
            return self.log_file.read_text(errors="replace").count("reload -- version")
        except OSError:
            return 0

    def reload(self) -> None:
        self.write_config()
        before = self._reload_count()
        r = self._postfix("reload")
        if r.returncode != 0:
            self._fail("postfix reload failed", r)
        deadline = time.monotonic() + START_TIMEOUT
        while self._reload_count() <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._reload_count() <= before:
            self._fail("Postfix did not log the reload")
        self.wait_ready()

    def stop(self) -> None:
        if self._started:
            pid = self._master_pid()
            self._postfix("stop")
            deadline = time.monotonic() + 20
            while pid and time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                if pid:
                    self._postfix("abort")
            self._started = False
        if self._dovecot_started:
            pidfile = self.dovecot_dir / "base" / "master.pid"
            try:
                dpid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                dpid = None
            self._run(["dovecot", "-c", str(self.dovecot_conf), "stop"])
            deadline = time.monotonic() + 20
            while dpid and time.monotonic() < deadline:
                try:
                    os.kill(dpid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            self._dovecot_started = False
        if self._private_run is not None and self._private_run.exists():
            # keep the log for post-mortems: copy it next to the config before removing
            for f in (self.log_file, self.dovecot_dir / "dovecot.log"):
                if f.exists():
                    shutil.copy2(f, self.workdir / f.name)
            shutil.rmtree(self._private_run, ignore_errors=True)
            self.log_file = self.workdir / "maillog"  # the copy survives

"""``mailca deploy``: put a host's certificate and TLS settings onto a live Postfix (+ Dovecot),
prove on the wire that they are served, and roll back by itself when they are not.

One straight line (each step is a function below):

1. :func:`read_live` - what the server runs now: ``postconf -n``, ``postconf -M``, ``postconf -P``,
   ``postconf -h queue_directory``, ``doveconf -n``.  Nothing is parsed from main.cf by hand.
2. :func:`plan` - the minimal change set (:class:`Change`, each with a one-line reason).  What
   mailca does not need to own stays: the ``smtp inet`` line (postscreen or smtpd) and its
   companions, chroot columns, the admin's ``-o`` overrides other than the TLS/AUTH ones, the
   admin's SASL backend (Dovecot, Cyrus - detected; with none and 587/465 wanted it refuses),
   existing policy maps and CA files (mailca's own-domain policy is not part of a deploy).
3. :func:`apply` - timestamped backup (in the store, ``deploy/<stamp>/``), ``postconf -e/-M/-P``,
   a Dovecot drop-in ``conf.d/99-mailca.conf``, ``postfix check``, ``postconf -n`` without
   warnings, ``doveconf -n``, reload, then :func:`probe_all`: every configured port must serve
   the new serial with a chain and host name that verify against the mailca root, AUTH only
   after TLS.  Any failure -> :func:`restore` (byte-identical files) + reload + one-line error.

The root key is never needed: only the live directories and ``ca/root.crt`` are read.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConnectError, MailcaError, StoreError, UsageError, VerificationError

__all__ = ["Change", "Live", "Plan", "Target", "read_live", "plan", "apply", "rollback", "probe_all",
           "format_plan", "verify_deployed", "install_root", "check_root_copy", "DROPIN_NAME"]

DROPIN_NAME = "99-mailca.conf"
TOOL_TIMEOUT = 60
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# master.cf -o parameters mailca owns on 587/465 (others the admin set stay as they are)
_OWNED_OPTS = {"smtpd_tls_security_level", "smtpd_tls_wrappermode", "smtpd_sasl_auth_enable", "smtpd_tls_auth_only"}
# main.cf parameters a deploy never touches (the admin's backend, policy tables, trust files)
_KEEP_MAIN = {"smtp_tls_CAfile", "smtp_tls_policy_maps"}
_SASL_MAIN = {"smtpd_sasl_type", "smtpd_sasl_path"}
# Dovecot settings that may hold key material inline: their old value is shown only as a '<path'
_SECRET_DOVECOT = {"ssl_key", "ssl_alt_key", "ssl_server_key_file", "ssl_server_alt_key_file", "ssl_key_password"}


def _clean(text: str, limit: int = 300) -> str:
    """A line from a tool or a server, safe to print."""
    return _CTRL.sub("?", text.strip().splitlines()[-1] if text.strip() else "")[:limit]


def _run(argv: list[str], timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        from ..core.childenv import child_env

        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=child_env())  # postconf/postfix/doveconf never see MAILCA_PASSPHRASE
    except FileNotFoundError:
        raise UsageError(f"{argv[0]} is not installed (needed to read or change the live configuration)") from None
    except subprocess.TimeoutExpired:
        raise ConnectError(f"{' '.join(argv[:3])} did not finish within {timeout:.0f}s") from None


# ------------------------------------------------------------------------------ live state
@dataclass(frozen=True)
class MasterEntry:
    name: str
    type: str
    fields: tuple[str, ...]  # private unpriv chroot wakeup maxproc
    command: str  # command + args (as postconf -M prints them, -o folded in)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.type}"

    @property
    def program(self) -> str:
        return self.command.split()[0] if self.command.split() else ""


@dataclass(frozen=True)
class Listener:
    """One port that must serve the certificate after a deploy."""

    proto: str  # smtp | submission | submissions | imap | imaps
    address: str | None  # None: the --connect address
    port: int
    source: str  # where it was found (master.cf entry, dovecot listener)


@dataclass(frozen=True)
class Live:
    config_dir: str | None
    main_cf: Path
    master_cf: Path
    main: dict[str, str]  # postconf -n: what the admin set
    effective: dict[str, str]  # postconf NAME...: the value in force (defaults included)
    master: tuple[MasterEntry, ...]
    params: dict[str, dict[str, str]]  # "name/type" -> {param: value}
    queue_directory: str
    version: tuple[int, int]
    dovecot_conf: Path | None = None
    dovecot: dict[str, str] = field(default_factory=dict)  # top-level settings of doveconf -n
    dovecot_text: str = ""
    dovecot_listeners: tuple[Listener, ...] = ()
    dovecot_unix_listeners: tuple[str, ...] = ()


def _postconf(config_dir: str | None, *args: str) -> subprocess.CompletedProcess:
    argv = ["postconf"] + (["-c", config_dir] if config_dir else []) + list(args)
    return _run(argv)


def _kv(line: str) -> tuple[str, str] | None:
    if " = " in line:
        k, v = line.split(" = ", 1)
    elif line.rstrip().endswith(" ="):
        k, v = line.rstrip()[:-2], ""
    else:
        return None
    return k.strip(), v.strip()


def parse_doveconf(text: str) -> tuple[dict[str, str], list[Listener], list[str]]:
    """Top-level settings, inet listeners (imap/imaps/pop3/pop3s with their ports) and
    unix_listener paths of ``doveconf -n`` output."""
    top: dict[str, str] = {}
    stack: list[str] = []
    listeners: list[Listener] = []
    unix: list[str] = []
    cur: dict | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            head = line[:-1].strip()
            stack.append(head)
            if head.startswith("inet_listener "):
                cur = {"name": head.split(None, 1)[1], "service": stack[-2] if len(stack) > 1 else ""}
            elif head.startswith("unix_listener "):
                unix.append(head.split(None, 1)[1])
            continue
        if line == "}":
            if stack and stack[-1].startswith("inet_listener ") and cur is not None:
                if cur.get("port", "0").isdigit() and int(cur["port"]) > 0 and "imap-login" in cur["service"]:
                    ssl_ = cur.get("ssl") == "yes" or cur["name"] == "imaps" and "ssl" not in cur
                    addr = cur.get("address") or None
                    listeners.append(Listener("imaps" if ssl_ else "imap", addr if addr not in ("*", "::") else None,
                                              int(cur["port"]), f"dovecot {cur['service']} {cur['name']}"))
                cur = None
            if stack:
                stack.pop()
            continue
        kv = _kv(line)
        if kv is None:
            continue
        if not stack:
            top[kv[0]] = kv[1]
        elif cur is not None:
            cur[kv[0]] = kv[1]
    return top, listeners, unix


def read_live(config_dir: str | None, dovecot_conf: str | None) -> Live:
    """The live configuration, read with Postfix's and Dovecot's own tools."""
    from . import postfix as pf

    if config_dir is not None and not os.path.isfile(os.path.join(config_dir, "main.cf")):
        raise UsageError(f"--postfix-config {config_dir!r} has no main.cf; give the directory of the instance's main.cf")
    r = _postconf(config_dir, "-n")
    if r.returncode != 0:
        raise UsageError(f"postconf -n failed for {config_dir or 'the default instance'}: {_clean(r.stderr)}")
    main = dict(kv for kv in map(_kv, r.stdout.splitlines()) if kv)
    r = _postconf(config_dir, "-M")
    if r.returncode != 0:
        raise UsageError(f"postconf -M failed: {_clean(r.stderr)}")
    master = []
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 8:
            master.append(MasterEntry(f[0], f[1], tuple(f[2:7]), " ".join(f[7:])))
    r = _postconf(config_dir, "-P")
    params: dict[str, dict[str, str]] = {}
    for line in r.stdout.splitlines():
        kv = _kv(line)
        if kv and kv[0].count("/") >= 2:
            name, typ, param = kv[0].rsplit("/", 2)
            params.setdefault(f"{name}/{typ}", {})[param] = kv[1]
    queue = _postconf(config_dir, "-h", "queue_directory").stdout.strip() or "/var/spool/postfix"
    cdir = _postconf(config_dir, "-h", "config_directory").stdout.strip() or (config_dir or "/etc/postfix")
    version = pf.parse_version(_postconf(config_dir, "-h", "mail_version").stdout.strip() or "3.7")
    effective = dict(kv for kv in map(_kv, _postconf(config_dir, *sorted(pf.PARAM_SINCE)).stdout.splitlines()) if kv)
    live = dict(config_dir=config_dir, main_cf=Path(cdir) / "main.cf", master_cf=Path(cdir) / "master.cf",
                main=main, effective=effective, master=tuple(master), params=params, queue_directory=queue, version=version)
    if dovecot_conf:
        p = Path(dovecot_conf)
        if not p.is_file():
            raise UsageError(f"--dovecot-config {dovecot_conf!r} is not a file; give dovecot.conf (or --no-dovecot)")
        r = _run(["doveconf", "-c", str(p), "-n"])
        if r.returncode != 0:
            raise UsageError(f"doveconf -n failed for {p}: {_clean(r.stderr)}")
        top, listeners, unix = parse_doveconf(r.stdout)
        live.update(dovecot_conf=p.absolute(), dovecot=top, dovecot_text=r.stdout,
                    dovecot_listeners=tuple(listeners), dovecot_unix_listeners=tuple(unix))
    return Live(**live)


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Change:
    where: str  # main.cf | master.cf | dovecot
    key: str  # parameter | service/type | service/type/parameter | dovecot setting
    old: str | None
    new: str | None
    why: str


@dataclass(frozen=True)
class Target:
    """What is being deployed: the lineage's current certificates."""

    host: str
    serials: tuple[int, ...]  # every current key type's serial (any one may be served)
    root: Path
    certs: tuple  # postfix.CertFiles


@dataclass
class Plan:
    target: Target
    changes: list[Change]
    listeners: list[Listener]
    sasl: str  # dovecot | cyrus | none
    sasl_detail: str
    dropin: Path | None = None
    dropin_text: str | None = None


def _role_of(entry: MasterEntry, params: dict[str, str]) -> str | None:
    """smtp | submission | submissions for an inet smtpd/postscreen entry, else None."""
    if entry.type != "inet" or entry.program not in ("smtpd", "postscreen"):
        return None
    port = entry.name.rsplit(":", 1)[-1]
    if entry.program == "postscreen" or port in ("smtp", "25"):
        return "smtp"
    if port in ("submission", "587"):
        return "submission"
    if port in ("submissions", "smtps", "465"):
        return "submissions"
    if params.get("smtpd_tls_wrappermode") == "yes":
        return "submissions"
    syslog = params.get("syslog_name", "")
    if syslog.endswith(("/submissions", "/smtps")):
        return "submissions"
    if syslog.endswith("/submission") or params.get("smtpd_sasl_auth_enable") == "yes":
        return "submission"
    return "smtp"


_PORT_OF = {"smtp": 25, "submission": 587, "submissions": 465, "imap": 143, "imaps": 993}


def _listener(entry: MasterEntry, role: str) -> Listener:
    host, _, port = entry.name.rpartition(":")
    num = int(port) if port.isdigit() else _PORT_OF[role]
    return Listener(role, host.strip("[]") or None, num, f"master.cf {entry.key}")


def dovecot_auth_answers(path: str, timeout: float = 3.0) -> bool:
    """True when a Dovecot auth server answers the client handshake on the unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
            data = b""
            deadline = time.monotonic() + timeout
            while b"\nDONE" not in data and len(data) < 65536 and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.startswith(b"VERSION\t1\t") and b"MECH\t" in data


def _cyrus_dirs(live: Live) -> tuple[list[str], list[str]]:
    """(directories smtpd reads its Cyrus SASL application file from, directories it ignores).
    Upstream Postfix hands cyrus_sasl_config_path to libsasl2 (else libsasl2's defaults).
    Debian's Postfix (patch 07_sasl_config) reads $config_directory/sasl and /usr/lib/sasl
    only and ignores cyrus_sasl_config_path - seen with strace: smtpd opens
    <config_directory>/sasl/smtpd.conf, then /usr/lib/sasl/smtpd.conf, nothing else."""
    given = [d for d in re.split(r"[\s,:]+", live.main.get("cyrus_sasl_config_path", "")) if d]
    debian = [str(live.main_cf.parent / "sasl"), "/usr/lib/sasl"]
    if os.path.isfile("/etc/debian_version"):
        return debian, given
    return (given or ["/etc/sasl2", "/etc/sasl", "/usr/lib/x86_64-linux-gnu/sasl2", "/usr/lib/sasl2"]), []


def _cyrus_config(live: Live) -> tuple[Path | None, Path | None]:
    """(the Cyrus SASL application file smtpd reads - smtpd_sasl_path, default 'smtpd' - or
    None, a file of that name in a directory this Postfix ignores, or None)."""
    app = live.main.get("smtpd_sasl_path", "smtpd") or "smtpd"
    read, ignored = _cyrus_dirs(live)
    found = next((Path(d) / f"{app}.conf" for d in read if (Path(d) / f"{app}.conf").is_file()), None)
    stray = next((Path(d) / f"{app}.conf" for d in ignored if (Path(d) / f"{app}.conf").is_file()), None)
    return found, stray


def _sasl_socket(live: Live, path: str) -> str:
    return path if path.startswith("/") else os.path.join(live.queue_directory, path)


def plan(live: Live, target: Target, *, profile, ports: list[int], dovecot_version: str | None = None) -> Plan:
    """The minimal change set that makes ``live`` serve ``target`` (pure apart from probing the
    SASL socket and looking for a Cyrus config file)."""
    from . import dovecot as dc
    from . import postfix as pf

    want_auth = any(p in (587, 465) for p in ports)
    sasl_type = live.main.get("smtpd_sasl_type")
    dovecot_path = live.main.get("smtpd_sasl_path", "private/auth") if sasl_type == "dovecot" else "private/auth"
    add_listener = False
    if sasl_type == "dovecot":
        sock = _sasl_socket(live, dovecot_path)
        sasl, detail = "dovecot", f"Dovecot auth socket {sock}"
        if not dovecot_auth_answers(sock):
            if live.dovecot_conf is not None and sock not in live.dovecot_unix_listeners:
                add_listener = True
                detail += " (mailca adds the listener to Dovecot)"
            elif want_auth:
                raise UsageError(f"smtpd_sasl_type = dovecot but nothing answers on {sock}; start Dovecot (or give "
                                 "--dovecot-config) before deploying 587/465, or deploy only --ports 25; nothing changed")
    elif sasl_type is not None or any(p.get("smtpd_sasl_auth_enable") == "yes" for p in live.params.values()) \
            or live.main.get("smtpd_sasl_auth_enable") == "yes":
        conf, stray = _cyrus_config(live)
        app = live.main.get("smtpd_sasl_path", "smtpd") or "smtpd"
        sasl, detail = "cyrus", f"Cyrus SASL ({conf or f'no {app}.conf found'})"
        if sasl_type not in (None, "cyrus"):
            sasl, detail = sasl_type, f"smtpd_sasl_type = {sasl_type}"
        elif conf is None and want_auth:
            where = ", ".join(_cyrus_dirs(live)[0])
            hint = (f"; {stray} is in cyrus_sasl_config_path, which Debian's Postfix ignores: move it to "
                    f"{live.main_cf.parent / 'sasl'}/") if stray else ""
            raise UsageError(f"587/465 need AUTH but Cyrus SASL has no {app}.conf where this Postfix reads it ({where})"
                             f"{hint}: smtpd would offer no working AUTH; configure saslauthd or Dovecot SASL first, "
                             "or deploy --ports 25; nothing changed")
    elif live.dovecot_conf is not None:
        sasl, detail = "dovecot", f"Dovecot (detected at {live.dovecot_conf}; mailca adds the auth listener)"
        sock = _sasl_socket(live, dovecot_path)
        add_listener = sock not in live.dovecot_unix_listeners
    else:
        sasl, detail = "none", "no SASL backend"
        if want_auth:
            raise UsageError("587/465 need AUTH but no SASL backend is configured (no smtpd_sasl_type, no Dovecot): "
                             "give --dovecot-config FILE, set up Cyrus SASL, or deploy --ports 25; nothing changed")

    cfg = pf.render(target.host, version=live.version, profile=profile, certs=list(target.certs),
                    root_path=target.root, domains=[], ports=ports,
                    policy_dir=str(live.main_cf.parent), sasl_path=dovecot_path)
    changes: list[Change] = []
    for s in cfg.main:
        if s.name in _KEEP_MAIN:
            continue
        if s.name in _SASL_MAIN and sasl != "dovecot":
            continue
        if s.name in _SASL_MAIN and sasl_type == "dovecot":
            continue  # the admin's Dovecot settings already answer (or get a listener)
        if live.effective.get(s.name, live.main.get(s.name)) != s.value:
            changes.append(Change("main.cf", s.name, live.main.get(s.name), s.value, s.why))

    # master.cf: smtp inet is never replaced; 587/465 entries keep fields and foreign -o lines
    by_role: dict[str, tuple[MasterEntry, dict[str, str]]] = {}
    for e in live.master:
        role = _role_of(e, live.params.get(e.key, {}))
        if role and role not in by_role:
            by_role[role] = (e, live.params.get(e.key, {}))
    smtp_chroot = by_role["smtp"][0].fields[2] if "smtp" in by_role else "-"
    listeners: list[Listener] = []
    for svc in cfg.master:
        role = pf.ROLES[svc.port]
        if role in by_role:
            entry, have = by_role[role]
            listeners.append(_listener(entry, role))
            if role == "smtp":
                continue  # postscreen/smtpd, chroot and -o lines stay: 25 takes its TLS from main.cf
            for o in svc.options:
                if o.name in _OWNED_OPTS or o.name not in have:
                    if have.get(o.name) != o.value:
                        changes.append(Change("master.cf", f"{entry.key}/{o.name}", have.get(o.name), o.value, o.why))
        else:
            if role == "smtp":
                continue  # no port 25 here: a deploy does not start an MX
            fields = list(svc.fields)
            fields[2] = smtp_chroot  # same chroot choice as the admin's port 25
            entry = MasterEntry(svc.name, svc.type, tuple(fields[:5]), fields[5])
            changes.append(Change("master.cf", entry.key, None, f"{svc.name} {svc.type} {' '.join(fields)}", svc.why))
            for o in svc.options:
                changes.append(Change("master.cf", f"{entry.key}/{o.name}", None, o.value, o.why))
            listeners.append(_listener(entry, role))

    result = Plan(target, changes, listeners, sasl, detail)
    if live.dovecot_conf is not None:
        _plan_dovecot(result, live, target, profile, dovecot_version or dc.detect_version() or "2.3",
                      _sasl_socket(live, dovecot_path) if add_listener else None)
    return result


def _plan_dovecot(result: Plan, live: Live, target: Target, profile, version: str, listener: str | None) -> None:
    from . import dovecot as dc

    conf = live.dovecot_conf
    text = conf.read_text(errors="replace")
    if not re.search(r"^\s*!include(_try)?\s+(\S*/)?conf\.d/\*\.conf\s*$", text, re.M):
        raise UsageError(f"{conf} does not include conf.d/*.conf, so a drop-in would not be read; add "
                         "'!include_try conf.d/*.conf' to it (Debian's has '!include conf.d/*.conf'); nothing changed")
    version = dc.parse_version(version)
    rendered = dc.render(target.host, version=version, profile=profile, certs=list(target.certs),
                         sasl_listener=listener is not None, sasl_socket=listener)
    wanted = []
    for line in rendered.splitlines():
        if line.startswith(("#", " ")) or line.strip() in ("", "}") or line.endswith("{"):
            continue
        kv = _kv(line)
        if kv:
            wanted.append((kv, line))
    # values in force, defaults included (doveconf -n leaves defaults out; -P: paths of keys
    # instead of '# hidden' - compared only, never printed)
    r = _run(["doveconf", "-c", str(conf), "-P", *[kv[0] for kv, _ in wanted]])
    if r.returncode != 0:
        raise UsageError(f"doveconf -c {conf} could not read the TLS settings: {_clean(r.stderr)}")
    effective = dict(kv for kv in map(_kv, r.stdout.splitlines()) if kv)
    for (key, value), line in wanted:
        old = effective.get(key)
        if old != value:
            if key in _SECRET_DOVECOT and old is not None:
                old = old if old.startswith("<") and "\n" not in old and "BEGIN" not in old else "(hidden)"
            result.changes.append(Change("dovecot", key, old, value, _why_of(rendered, line)))
    if listener:
        result.changes.append(Change("dovecot", f"service auth/unix_listener {listener}", None, "mode 0660, postfix:postfix",
                                     "the SASL socket Postfix authenticates 587/465 users against"))
    result.dropin = conf.parent / "conf.d" / DROPIN_NAME
    result.dropin_text = rendered
    result.listeners.extend(live.dovecot_listeners)


def _why_of(rendered: str, line: str) -> str:
    lines = rendered.splitlines()
    i = lines.index(line)
    why = []
    while i > 0 and lines[i - 1].startswith("# "):
        i -= 1
        why.insert(0, lines[i][2:])
    return " ".join(why)


def format_plan(p: Plan) -> str:
    out = [f"# mailca deploy {p.target.host}: {len(p.changes)} change(s); SASL: {p.sasl_detail}"]
    where = None
    for c in p.changes:
        if c.where != where:
            where = c.where
            out.append(f"--- {where}")
        out.append(f"  # {c.why}")
        if c.old is not None:
            out.append(f"- {c.key} = {c.old}")
        out.append(f"+ {c.key} = {c.new}")
    out.append("# will then be probed: " + ", ".join(f"{ls.proto} {ls.port}" for ls in p.listeners))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ backup
def _deploy_dir(store) -> Path:
    return Path(store.path) / "deploy"


def _new_backup_dir(store) -> Path:
    from ..core.certinfo import utcnow

    base = _deploy_dir(store)
    store.ensure_dir(base, 0o700, durable=True)  # inside the store: never through a link
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    n = 0
    while True:
        d = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            os.mkdir(d, 0o700)
            return d
        except FileExistsError:
            n += 1


def _backup(store, live: Live, p: Plan) -> Path:
    d = _new_backup_dir(store)
    files = {}
    for label, path in (("main.cf", live.main_cf), ("master.cf", live.master_cf)):
        st = path.stat()
        store.write_file(d / label, path.read_bytes(), private=True)
        files[label] = {"path": str(path), "mode": st.st_mode & 0o7777, "existed": True}
    if p.dropin is not None:
        existed = p.dropin.is_file() and not p.dropin.is_symlink()
        if existed:
            store.write_file(d / "dovecot-dropin", p.dropin.read_bytes(), private=True)
        files["dovecot-dropin"] = {"path": str(p.dropin), "mode": 0o644, "existed": existed}
    manifest = {"host": p.target.host, "config_dir": live.config_dir, "files": files,
                "dovecot_conf": str(live.dovecot_conf) if live.dovecot_conf else None}
    store.write_file(d / "manifest.json", json.dumps(manifest, indent=2).encode(), private=True)
    store.write_file(_deploy_dir(store) / "last-backup", d.name.encode() + b"\n", private=True)
    return d


def restore(store, backup: Path) -> dict:
    """Put every backed-up file back byte for byte (a drop-in that did not exist is removed)."""
    from ..storage.store import atomic_write

    try:
        manifest = json.loads((backup / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"backup {backup} is unreadable ({exc}); restore main.cf/master.cf from it by hand") from None
    for label, f in manifest["files"].items():
        path = Path(f["path"])
        if f["existed"]:
            atomic_write(path, (backup / label).read_bytes(), f["mode"])
        elif path.is_file() and not path.is_symlink():
            path.unlink()
    return manifest


# ------------------------------------------------------------------------------ apply
def _postfix_cmd(config_dir: str | None, action: str) -> subprocess.CompletedProcess:
    return _run(["postfix"] + (["-c", config_dir] if config_dir else []) + [action])


def _dovecot_cmd(conf: str | Path, action: str) -> subprocess.CompletedProcess:
    return _run(["dovecot", "-c", str(conf), action])


def reload_all(config_dir: str | None, dovecot_conf: str | Path | None) -> None:
    r = _postfix_cmd(config_dir, "reload")
    if r.returncode != 0:
        raise ConnectError(f"postfix reload failed: {_clean(r.stderr) or 'see the mail log'}")
    if dovecot_conf:
        r = _dovecot_cmd(dovecot_conf, "reload")
        if r.returncode != 0:
            raise ConnectError(f"dovecot reload failed: {_clean(r.stderr) or 'see the Dovecot log'}")


def _apply_changes(live: Live, p: Plan) -> None:
    from ..storage.store import atomic_write, ensure_dir

    cd = live.config_dir
    main = [f"{c.key}={c.new}" for c in p.changes if c.where == "main.cf"]
    if main:
        r = _postconf(cd, "-e", *main)
        if r.returncode != 0:
            raise VerificationError(f"postconf -e failed: {_clean(r.stderr)}")
    for c in p.changes:
        if c.where != "master.cf":
            continue
        if c.key.count("/") == 1:
            r = _postconf(cd, "-M", f"{c.key}={c.new}")
        else:
            r = _postconf(cd, "-P", f"{c.key}={c.new}")
        if r.returncode != 0:
            raise VerificationError(f"postconf -M/-P {c.key} failed: {_clean(r.stderr)}")
    if p.dropin is not None and any(c.where == "dovecot" for c in p.changes):
        if p.dropin.is_symlink():
            raise UsageError(f"{p.dropin} is a symlink mailca did not make; remove it first")
        ensure_dir(p.dropin.parent, 0o755)
        atomic_write(p.dropin, p.dropin_text.encode(), 0o644)


def _check_configs(live: Live) -> None:
    r = _postfix_cmd(live.config_dir, "check")
    if r.returncode != 0 or "warning" in r.stderr:
        raise VerificationError(f"postfix check failed: {_clean(r.stderr) or 'see the mail log'}")
    r = _postconf(live.config_dir, "-n")
    if r.returncode != 0 or r.stderr.strip():
        raise VerificationError(f"postconf -n warns after the change: {_clean(r.stderr)}")
    if live.dovecot_conf is not None:
        r = _run(["doveconf", "-c", str(live.dovecot_conf), "-n"])
        if r.returncode != 0:
            raise VerificationError(f"doveconf -n failed after the change: {_clean(r.stderr)}")


def _log_hint(live: Live) -> str:
    log = live.main.get("maillog_file") or "the mail log (journalctl -u postfix / /var/log/mail.log)"
    if live.dovecot_conf is not None:
        log += " and " + (live.dovecot.get("log_path") or "the Dovecot log")
    return log


def apply(store, live: Live, p: Plan, *, connect: str, wait: float) -> dict:
    """Under the store lock (re-entrant): see :func:`_apply_locked`."""
    with store.lock():
        return _apply_locked(store, live, p, connect=connect, wait=wait)


def _apply_locked(store, live: Live, p: Plan, *, connect: str, wait: float) -> dict:
    """Backup, change, check, reload, probe; roll back on any failure.  Returns a summary."""
    if not p.changes:
        results = probe_all(p, connect=connect, wait=wait)
        _record(store, p, live, connect, None, wait)
        return {"backup": None, "changes": 0, "probes": results}
    r = _postfix_cmd(live.config_dir, "status")
    if r.returncode != 0:
        raise ConnectError("Postfix is not running: deploy proves its result on the live ports, start Postfix first; "
                           "nothing changed")
    backup = _backup(store, live, p)
    try:
        _apply_changes(live, p)
        _check_configs(live)
        reload_all(live.config_dir, live.dovecot_conf)
        results = probe_all(p, connect=connect, wait=wait)
    except MailcaError as exc:
        restore(store, backup)
        try:
            reload_all(live.config_dir, live.dovecot_conf)
            back = f"rolled back to {backup.name}" + _unthrottle(live, p, connect)
        except MailcaError as exc2:
            back = f"rolled back the files to {backup.name}, but the reload failed too ({exc2.message})"
        raise VerificationError(f"deploy failed: {exc.message}; {back} - log: {_log_hint(live)}") from None
    _record(store, p, live, connect, backup, wait)
    return {"backup": str(backup), "changes": len(p.changes), "probes": results}


def _answers(ls: Listener, addr: str, timeout: float) -> bool:
    """True when a Postfix port is served by a process: the 220 greeting on 25/587, a TLS
    handshake on 465 (no verification: this only asks whether anybody is there)."""
    import ssl

    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((addr, ls.port), timeout=timeout) as raw:
            if ls.proto != "submissions":
                return _readline(raw, deadline).startswith(b"220")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            raw.settimeout(max(0.1, deadline - time.monotonic()))
            with ctx.wrap_socket(raw):
                return True
    except (OSError, ValueError):
        return False


def _unthrottle(live: Live, p: Plan, connect: str, timeout: float = 5.0) -> str:
    """After the rollback's reload: a Postfix service whose processes died under the failed
    configuration stays throttled by master(8) for service_throttle_time (60 s), reload or not,
    and its port accepts connections nobody answers.  Restart Postfix then (the only way to
    clear it) and say so."""
    dead = [ls for ls in p.listeners if ls.proto in ("smtp", "submission", "submissions")
            and not _answers(ls, ls.address or connect, timeout)]
    if not dead:
        return ""
    _postfix_cmd(live.config_dir, "stop")  # a failure shows in 'status' and 'start' below
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _postfix_cmd(live.config_dir, "status").returncode == 0:
        time.sleep(0.2)
    r = _postfix_cmd(live.config_dir, "start")
    if r.returncode != 0:
        return f", but restarting Postfix (for {dead[0].proto} {dead[0].port}, throttled) failed: {_clean(r.stderr)}"
    return f", Postfix restarted ({dead[0].proto} {dead[0].port} stayed throttled after the reload)"


def rollback(store) -> dict:
    """Under the store lock (re-entrant): see :func:`_rollback_locked`."""
    with store.lock():
        return _rollback_locked(store)


def _rollback_locked(store) -> dict:
    last = _deploy_dir(store) / "last-backup"
    try:
        name = last.read_text().strip()
    except OSError:
        raise StoreError(f"no deploy backup in {_deploy_dir(store)}; nothing to roll back") from None
    if not re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", name):
        raise StoreError(f"{last} names {name!r}, not a backup directory; restore by hand")
    manifest = restore(store, _deploy_dir(store) / name)
    reload_all(manifest.get("config_dir"), manifest.get("dovecot_conf"))
    return {"restored": name, "files": sorted(f["path"] for f in manifest["files"].values())}


def _record(store, p: Plan, live: Live, connect: str, backup: Path | None, wait: float) -> None:
    """What was deployed where: renew/rekey reload and probe these after a renewal."""
    path = _deploy_dir(store) / "deployed.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[p.target.host] = {
        "config_dir": live.config_dir, "dovecot_conf": str(live.dovecot_conf) if live.dovecot_conf else None,
        "connect": connect, "backup": backup.name if backup else None, "wait": wait,
        "listeners": [{"proto": ls.proto, "address": ls.address, "port": ls.port} for ls in p.listeners],
    }
    store.write_file(path, json.dumps(data, indent=2, sort_keys=True).encode(), private=True)


# --------------------------------------------------------------- root copy for local services
def install_root(store, path: str) -> dict:
    """A world-readable (0644) copy of ``ca/root.crt`` at ``path`` for local services and users
    that cannot read the 0700 store: Exim as Debian-exim, fetchmail, a sending Postfix's
    smtp_tls_CAfile / tafile=.  Written atomically under the store lock; only the public root
    certificate, never key material.  Returns {"path", "note"} (note: a parent directory other
    users cannot traverse, which makes the copy useless to them)."""
    from ..storage.store import atomic_write, ensure_dir

    p = check_root_copy(store, path)
    pem = store.ca_file("root.crt").read_bytes()
    with store.lock():
        ensure_dir(p.parent, 0o755)
        atomic_write(p, pem, 0o644)
    note = None
    for d in [p.parent.resolve(), *p.parent.resolve().parents]:
        if not d.stat().st_mode & 0o001:
            note = f"{d} is not searchable by other users (mode {d.stat().st_mode & 0o7777:o}): they cannot open {p}"
            break
    return {"path": str(p), "note": note}


def check_root_copy(store, path: str) -> Path:
    """``--root-copy PATH`` checked before anything is changed (UsageError naming it)."""
    p = Path(path)
    if not p.is_absolute() or p.name in ("", ".", ".."):
        raise UsageError(f"--root-copy {path!r} is not an absolute file path; give e.g. /etc/ssl/mailca/root.crt")
    store_dir = Path(store.path).resolve()
    if p.parent.resolve() == store_dir or store_dir in p.parent.resolve().parents:
        raise UsageError(f"--root-copy {path!r} is inside the store {store_dir} (0700: no other user can read it); "
                         "give a path outside it, e.g. /etc/ssl/mailca/root.crt")
    if p.is_dir():
        raise UsageError(f"--root-copy {path!r} is a directory; give the file name, e.g. {p / 'root.crt'}")
    return p


# ------------------------------------------------------------------------------- probe
def _probe_smtp(ls: Listener, addr: str, target: Target, roots: list, timeout: float) -> tuple[int | None, str | None]:
    from ..core.certinfo import utcnow
    from ..probe import certcheck
    from ..probe.audit import Options, policy_session
    from ..probe.report import at_least
    from ..probe.smtp import Endpoint

    ep = Endpoint(addr, ls.port, ls.proto, timeout)
    try:
        facts, _fs, chain = policy_session(ep, Options(name=target.host, ca_certs=tuple(roots), timeout=timeout))
    except ConnectError as exc:
        return None, exc.message
    if facts.get("starttls") is False:
        return None, "EHLO does not offer STARTTLS"
    if not chain:
        return None, "no certificate was sent"
    _, cfs = certcheck.analyze(chain, port=ls.port, name=target.host, ca_certs=roots, tlsa=[], now=utcnow())
    bad = [f for f in cfs if at_least(f.severity)]
    if bad:
        return _serial(chain[0]), f"{bad[0].title}" + (f" ({_clean(bad[0].detail)})" if bad[0].detail else "")
    if facts.get("auth_before_tls"):
        return _serial(chain[0]), "AUTH is offered before TLS"
    if ls.proto in ("submission", "submissions") and not facts.get("auth_after_tls"):
        return _serial(chain[0]), "no AUTH after TLS (is the SASL backend answering?)"
    return _serial(chain[0]), None


def _serial(der: bytes) -> int | None:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).serial_number
    except ValueError:
        return None


def _readline(sock, deadline: float) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < 4096:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        ch = sock.recv(1)
        if not ch:
            break
        buf += ch
    return buf


def _probe_imap(ls: Listener, addr: str, target: Target, root: Path, timeout: float) -> tuple[int | None, str | None]:
    import ssl

    ctx = ssl.create_default_context(cafile=str(root))
    ctx.load_verify_locations(cafile=str(root))
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((addr, ls.port), timeout=timeout) as raw:
            if ls.proto == "imap":
                greet = _readline(raw, deadline)
                if not greet.startswith(b"* OK"):
                    return None, f"no IMAP greeting ({_clean(greet.decode('latin-1'))!r})"
                raw.sendall(b"a1 STARTTLS\r\n")
                while True:
                    line = _readline(raw, deadline)
                    if not line or line.startswith(b"a1 "):
                        break
                if not line.startswith(b"a1 OK"):
                    return None, f"STARTTLS refused ({_clean(line.decode('latin-1'))!r})"
            raw.settimeout(max(0.1, deadline - time.monotonic()))
            with ctx.wrap_socket(raw, server_hostname=target.host) as tls:
                der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        return None, f"certificate does not verify against the mailca root: {exc.verify_message}"
    except (OSError, ssl.SSLError) as exc:
        return None, f"connection failed: {_clean(str(exc))}"
    return _serial(der), None


def probe_all(p: Plan, *, connect: str, wait: float, timeout: float = 10.0) -> list[dict]:
    """Probe every listener until it serves one of the target serials (or ``wait`` runs out)."""
    from ..probe import certcheck

    roots = certcheck.load_ca_file(str(p.target.root))
    results = []
    failures = []
    for ls in p.listeners:
        addr = ls.address or connect
        deadline = time.monotonic() + wait
        while True:
            if ls.proto in ("imap", "imaps"):
                serial, err = _probe_imap(ls, addr, p.target, p.target.root, timeout)
            else:
                serial, err = _probe_smtp(ls, addr, p.target, roots, timeout)
            if err is None and serial not in p.target.serials:
                err = f"serves serial {serial:x}, not the current {'/'.join(f'{s:x}' for s in p.target.serials)}" \
                    if serial is not None else "no certificate"
            if err is None or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        results.append({"proto": ls.proto, "address": addr, "port": ls.port,
                        "serial": f"{serial:x}" if serial is not None else None, "ok": err is None, "error": err})
        if err is not None:
            failures.append(f"{ls.proto} {addr}:{ls.port}: {err}")
    if failures:
        raise VerificationError(failures[0] + (f" (and {len(failures) - 1} more port(s))" if len(failures) > 1 else ""))
    return results


# ------------------------------------------------------------------- after a renewal
def verify_deployed(store, names: list[str], *, wait: float | None = None, connect: str | None = None) -> list[dict]:
    """Reload and probe every deployed host among ``names`` (lineage names).  Raises
    VerificationError naming the port still serving an old certificate, with the fix."""
    path = _deploy_dir(store) / "deployed.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for host, rec in sorted(data.items()):
        if host not in names:
            continue
        target = make_target(store, host)
        reload_all(rec.get("config_dir"), rec.get("dovecot_conf"))
        ls = [Listener(x["proto"], x.get("address"), int(x["port"]), "deployed.json") for x in rec.get("listeners", [])]
        p = Plan(target, [], ls, "", "")
        try:
            out += probe_all(p, connect=connect or rec.get("connect") or "127.0.0.1",
                             wait=wait if wait is not None else float(rec.get("wait") or 30))
        except VerificationError as exc:
            fix = (f"run 'postfix{' -c ' + shlex.quote(rec['config_dir']) if rec.get('config_dir') else ''} reload'"
                   + (f" and 'dovecot -c {shlex.quote(rec['dovecot_conf'])} reload'" if rec.get("dovecot_conf") else "")
                   + f", then 'mailca deploy {host}' to re-check")
            raise VerificationError(f"{host} was renewed but {exc.message}; {fix}") from None
    return out


def make_target(store, host: str) -> Target:
    from .dane import find_lineages
    from .postfix import CertFiles

    entries = find_lineages(store, host)
    certs = []
    for e in entries:
        live = store.live_dir(e["name"], e["key_type"])
        certs.append(CertFiles(e["key_type"], live, has_key=(live / "key.pem").exists()))
    for c in certs:
        if not c.has_key:
            raise UsageError(f"the {c.key_type} certificate of {host} was signed from a CSR (no key in the store); "
                             "deploy needs the key next to the certificate")
        kf = c.live_dir / "keyfullchain.pem"
        if not kf.is_file():
            raise StoreError(f"{kf} is missing; run 'mailca doctor'")
    serials = tuple(int(e["serial"], 16) for e in entries)
    return Target(entries[0]["name"], serials, store.ca_file("root.crt"), tuple(certs))

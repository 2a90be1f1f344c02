"""Shared fixtures.  Tests drive the real `mailca` CLI in a subprocess (true exit codes,
no in-process shortcuts) and check results with real external tools."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "correct horse battery staple"
ARTIFACTS = ROOT / "tests" / "artifacts"

# The test clock.  Every time a test uses is relative to T0: the (possibly faked) system clock
# read once when the session starts, to the second.  Every `mailca` a test runs gets
# MAILCA_NOW=T0 unless the test says otherwise, so a CA is created at the same injected time as
# the operations on it, and no test depends on the calendar: the suite passes the same way
# under `faketime +400d` (scripts/test.sh runs the date-sensitive files so).  Real tools that
# read the system clock (openssl verify, Postfix) see a time a few minutes after T0, inside
# every certificate's validity.
T0 = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def iso(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(*, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> str:
    """T0 plus an offset, as MAILCA_NOW wants it."""
    return iso(T0 + _dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds))


# The `mailca` the CLI tests run: the console script of a plain `pip install .` into a virtualenv
# of its own (scripts/test.sh makes it and exports MAILCA_BIN), so that the tests see exactly
# what a user's install does, with no test-only package importable.  Without MAILCA_BIN (a
# developer's ad-hoc run) it is this interpreter's `-m mailca`.
MAILCA_BIN = os.environ.get("MAILCA_BIN")


def mailca_argv() -> list[str]:
    return [MAILCA_BIN] if MAILCA_BIN else [sys.executable, "-m", "mailca"]


def base_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("MAILCA_DIR", None)
    env["MAILCA_PASSPHRASE"] = PASSPHRASE
    env["MAILCA_NOW"] = iso(T0)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update({k: v for k, v in extra.items() if v is not None})
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
    return env


def run(args, *, env: dict | None = None, input: str | bytes | None = None, cwd=None, timeout=120):
    """Run `mailca ARGS` as a subprocess; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(
        [*mailca_argv(), *map(str, args)],
        env=env if env is not None else base_env(),
        input=input,
        capture_output=True,
        text=not isinstance(input, bytes),
        cwd=cwd,
        timeout=timeout,
    )


def tool(*args, check=False, timeout=60, **kw):
    """Run an external tool (openssl, certtool, ...) and return CompletedProcess."""
    return subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=timeout, check=check, **kw)


def require(binary: str) -> str:
    """Path of a required external binary.  Missing tools FAIL (scripts/test.sh installs them);
    set MAILCA_ALLOW_MISSING_TOOLS=1 to skip instead on a developer machine."""
    path = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if path is None:
        if os.environ.get("MAILCA_ALLOW_MISSING_TOOLS"):
            pytest.skip(f"{binary} not installed")
        pytest.fail(f"{binary} is not installed; run scripts/test.sh (it installs scripts/apt-packages.txt)")
    return path


def snapshot(directory: Path) -> dict:
    """Every file/dir/symlink below ``directory`` with its mode and content hash."""
    out = {}
    if not directory.exists():
        return out
    for p in sorted(directory.rglob("*")):
        rel = str(p.relative_to(directory))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", p.stat().st_mode)
        else:
            out[rel] = ("file", p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@dataclass
class CAHandle:
    dir: Path
    domains: tuple[str, ...]
    env: dict | None = None  # the environment of every run (default: base_env(), clock T0)

    @property
    def root(self) -> Path:
        return self.dir / "ca" / "root.crt"

    @property
    def intermediate(self) -> Path:
        return self.dir / "ca" / "intermediate.crt"

    @property
    def intermediate_key(self) -> Path:
        return self.dir / "ca" / "intermediate.key"

    def run(self, *args, **kw):
        if self.env is not None:
            kw.setdefault("env", self.env)
        return run(["--dir", self.dir, *args], **kw)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, f"mailca {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr}"
        return r

    def live(self, name: str, key_type: str = "ecdsa-p256") -> Path:
        return self.dir / "certs" / name.replace("*", "_wildcard_") / key_type / "live"

    def issue(self, *args) -> dict:
        import json

        r = self.ok("issue", *args, "--json")
        return json.loads(r.stdout)["certificates"]


def make_ca(path: Path, *domains: str, extra=(), now: str | None = None) -> CAHandle:
    """A CA created at ``now`` (MAILCA_NOW form; default T0), the clock of the operations on it."""
    domains = domains or ("example.org",)
    args = ["--dir", path, "init", "--org", "Test Mail"]
    for d in domains:
        args += ["--domain", d]
    r = run([*args, *extra], env=base_env(MAILCA_NOW=now or iso(T0)))
    assert r.returncode == 0, r.stderr
    return CAHandle(path, tuple(domains))


@pytest.fixture
def ca(tmp_path) -> CAHandle:
    """A fresh CA for example.org (and example.net) in a temporary store."""
    return make_ca(tmp_path / "store", "example.org", "example.net")


@pytest.fixture(scope="session")
def shared_ca(tmp_path_factory) -> CAHandle:
    """One CA for read-only tests (do not mutate it in ways other tests would notice)."""
    return make_ca(tmp_path_factory.mktemp("shared") / "store", "example.org", "example.net")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

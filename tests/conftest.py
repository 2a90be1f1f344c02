"""Shared fixtures.  Tests drive the real `mailca` CLI in a subprocess (true exit codes,
no in-process shortcuts) and check results with real external tools."""

from __future__ import annotations

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


def base_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("MAILCA_DIR", None)
    env["MAILCA_PASSPHRASE"] = PASSPHRASE
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update({k: v for k, v in extra.items() if v is not None})
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
    return env


def run(args, *, env: dict | None = None, input: str | bytes | None = None, cwd=None, timeout=120):
    """Run `mailca ARGS` as a subprocess; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(
        [sys.executable, "-m", "mailca", *map(str, args)],
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


def make_ca(path: Path, *domains: str, extra=()) -> CAHandle:
    domains = domains or ("example.org",)
    args = ["--dir", path, "init", "--org", "Test Mail"]
    for d in domains:
        args += ["--domain", d]
    r = run([*args, *extra])
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

"""The tested install is the user's install (issue #9).

scripts/test.sh makes a virtualenv with Debian's python3 and a plain `pip install .` (nothing
else) and exports its console script as MAILCA_BIN; every CLI test runs that `mailca`.  These
tests prove that it is what we say: a regular install outside the checkout, with every runtime
dependency declared (an undeclared one is simply absent there), and no test-only package
importable by it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MAILCA_BIN, ROOT, base_env, run

pytestmark = pytest.mark.skipif(not MAILCA_BIN and os.environ.get("CI") != "true",
                                reason="MAILCA_BIN not set (scripts/test.sh sets it); ad-hoc run")


def app_python() -> str:
    """The interpreter of the installed console script (its shebang)."""
    assert MAILCA_BIN, "CI must run the installed mailca: scripts/test.sh exports MAILCA_BIN"
    first = Path(MAILCA_BIN).read_text().splitlines()[0]
    assert first.startswith("#!"), first
    return first[2:].strip()


def in_app(code: str) -> subprocess.CompletedProcess:
    # cwd=/ and -I: nothing of the checkout can leak in through the current directory or PYTHON*
    return subprocess.run([app_python(), "-I", "-c", code], capture_output=True, text=True, cwd="/", timeout=60)


def test_installed_package_is_a_regular_install_not_the_checkout():
    r = in_app("import mailca, json, sys; print(json.dumps([mailca.__file__, sys.prefix]))")
    assert r.returncode == 0, r.stderr
    where, prefix = json.loads(r.stdout)
    assert "site-packages" in where and where.startswith(prefix), where
    assert not where.startswith(str(ROOT / "mailca")), f"the tests would run the source tree: {where}"
    # no editable-install hook pointing back into the checkout
    r = in_app("import sys, json; print(json.dumps(sys.path))")
    leaks = [p for p in json.loads(r.stdout) if p.startswith(str(ROOT)) and not p.startswith(prefix)]
    assert not leaks, r.stdout
    r = in_app("import importlib.metadata as m, json; print(json.dumps(m.distribution('mailca').read_text('direct_url.json')))")
    direct = json.loads(json.loads(r.stdout) or "{}")
    assert not direct.get("dir_info", {}).get("editable"), f"the app install is editable: {direct}"


@pytest.mark.parametrize("module", ["pytest", "pkilint", "selenium", "html5lib", "sslyze"])
def test_no_test_only_package_is_importable_by_the_installed_mailca(module):
    r = in_app(f"import {module}")
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, f"{module} is importable by the app install"


def _third_party_imports() -> set[str]:
    """Top-level names of every non-stdlib module that mailca's code imports anywhere."""
    found = set()
    for p in (ROOT / "mailca").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("mailca", "__future__")}


def test_every_imported_package_is_a_declared_dependency():
    """An import the code makes but pyproject.toml does not declare is missing from a plain
    `pip install .`: each one must be importable in the app install."""
    mods = sorted(_third_party_imports())
    assert {"cryptography", "click", "idna"} <= set(mods), mods
    r = in_app("import importlib.util, json, sys; "
               f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {mods!r}}}))")
    assert r.returncode == 0, r.stderr
    missing = [m for m, ok in json.loads(r.stdout).items() if not ok and m != "tomli"]  # tomli: < 3.11 only
    assert not missing, f"imported by mailca but not installed by 'pip install .': {missing}"


def test_idna2008_from_the_user_install(tmp_path):
    """straße.example.org is xn--strae-oqa.example.org (IDNA 2008), never strasse.example.org
    (Python's own IDNA 2003 codec, which a missing idna dependency used to fall back to)."""
    store = tmp_path / "store"
    env = base_env()
    r = subprocess.run([MAILCA_BIN, "--dir", str(store), "init", "--domain", "example.org"], env=env,
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([MAILCA_BIN, "--dir", str(store), "issue", "straße.example.org", "--json"], env=env,
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    cert = json.loads(r.stdout)["certificates"][0]
    assert cert["name"] == "xn--strae-oqa.example.org" and cert["names"] == ["xn--strae-oqa.example.org"]
    r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", cert["paths"]["cert"]],
                       capture_output=True, text=True, timeout=30)
    assert "DNS:xn--strae-oqa.example.org" in r.stdout and "strasse" not in r.stdout


def test_the_cli_tests_run_the_installed_script():
    r = run(["--version"])
    assert r.returncode == 0 and "mailca" in r.stdout
    from conftest import mailca_argv

    assert mailca_argv() == [MAILCA_BIN]

"""The house rules of docs/DEVELOPING.md ("The map"), checked on the source itself.

Each check parses mailca/ with ast (no import, no mock) and names the offending file and
line, so a new private import, a second writer of index.json or an upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "mailca"

# lower layers first; a package may import its own layer or lower ones only
LAYERS = {
    "errors": 0, "__init__": 0,
    "core": 1, "profiles_data": 1,
    "storage": 2,
    "issuance": 3, "dns": 3,
    "lifecycle": 4, "distribution": 4, "probe": 4,
    "mailconf": 5, "acme": 5,
    "commands": 6,
    "cli": 7, "entry": 8, "__main__": 9,
}


def modules():
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield p, ".".join(parts), is_pkg, ast.parse(p.read_text(), str(p))


def resolve(modname: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = modname.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def top_package(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def mailca_imports(modname, is_pkg, tree):
    """(lineno, imported module, imported names) for every import of a mailca module."""
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            target = resolve(modname, is_pkg, n)
            if target == "mailca" or target.startswith("mailca."):
                yield n.lineno, target, [a.name for a in n.names]
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.startswith("mailca"):
                    yield n.lineno, a.name, []


def test_no_module_imports_another_modules_private_name():
    bad = []
    for path, modname, is_pkg, tree in modules():
        aliases = {}  # local name -> mailca module, for 'mod._private' attribute access
        for line, target, names in mailca_imports(modname, is_pkg, tree):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{path}:{line}: imports {target}.{name}")
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                target = resolve(modname, is_pkg, n)
                if target.startswith("mailca"):
                    for a in n.names:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
        for n in ast.walk(tree):
            if (isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                    and isinstance(n.value, ast.Name) and n.value.id in aliases):
                bad.append(f"{path}:{n.lineno}: uses {aliases[n.value.id]}.{n.attr}")
            # private attributes of objects handed around (store._index_cache, ...)
            if (isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                    and isinstance(n.value, ast.Name) and n.value.id in ("store", "s", "ca", "idx", "index")):
                bad.append(f"{path}:{n.lineno}: uses {n.value.id}.{n.attr}")
    assert not bad, "\n".join(bad)


def test_imports_point_down_the_layers_only():
    bad = []
    for path, modname, is_pkg, tree in modules():
        src = top_package(modname)
        for line, target, _ in mailca_imports(modname, is_pkg, tree):
            dst = top_package(target)
            if dst == src:
                continue
            if LAYERS.get(dst, 99) > LAYERS.get(src, -1):
                bad.append(f"{path}:{line}: {src} (layer {LAYERS.get(src)}) imports {target} (layer {LAYERS.get(dst)})")
    assert not bad, "\n".join(bad)


def _calls(tree):
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            yield n, name


def test_index_json_has_one_writer_and_ca_json_one_reader():
    writers, ca_json = [], []
    for path, modname, is_pkg, tree in modules():
        for n, name in _calls(tree):
            # every write of index.json goes through atomic_write(<...>.index_path, ...)
            if name in ("atomic_write", "write_file") and n.args:
                a = n.args[0]
                if isinstance(a, ast.Attribute) and a.attr == "index_path":
                    writers.append(f"{modname}:{n.lineno}")
            if name == "encode_index":
                writers.append(f"{modname}:{n.lineno} (encode_index)")
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and n.value == "ca.json" and modname != "mailca.storage.castate":
                # the store may name the file (existence checks, messages); nobody else opens it
                if modname not in ("mailca.storage.store", "mailca.lifecycle.doctor"):
                    ca_json.append(f"{modname}:{n.lineno}")
    assert sorted({w.split(":")[0] for w in writers}) == ["mailca.storage.index"], writers
    assert not ca_json, ca_json


def test_commands_take_no_lock_and_write_no_file():
    bad = []
    for path, modname, is_pkg, tree in modules():
        if not modname.startswith("mailca.commands."):
            continue
        for n, name in _calls(tree):
            if name in ("lock", "write_file", "atomic_write", "write_version", "set_live", "save", "private_pem"):
                bad.append(f"{path}:{n.lineno}: {name}()")
    assert not bad, "\n".join(bad)


def test_every_capability_module_declares_its_public_surface():
    missing = []
    for path, modname, is_pkg, tree in modules():
        if modname.startswith("mailca.commands") or modname.count(".") < 1 and not is_pkg:
            continue
        if modname in ("mailca", "mailca.profiles_data", "mailca.cli", "mailca.entry", "mailca.__main__"):
            continue
        has_all = any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
                      for n in tree.body)
        if not has_all:
            missing.append(modname)
    assert not missing, missing

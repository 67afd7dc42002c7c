"""The architecture's rules, checked from the source (docs/architecture.md): layers, cycles, private names, sizes.

Every ``import`` of package code, at module level or inside a function, is an arrow from its module to the
imported one. Modules fall into groups (the longest dotted prefix in ``LAYERS``); an arrow may point into
its own group or to a group of a lower layer, never sideways or up. Arrows within a group must not form a
cycle. No module imports another module's private (``_name``) definitions. Package files stay under
``MAX_FILE`` lines and functions under ``MAX_FUNCTION`` lines, except where ``EXCEPTIONS`` says why.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sdmp_fast", "loaders", "benchmarks")

LAYERS = {
    # foundation: no project imports between these
    "sdmp_fast.registry": 0, "sdmp_fast.schema": 0, "sdmp_fast.dist": 0, "sdmp_fast.batch": 0,
    "sdmp_fast.streams": 0, "sdmp_fast.schedules": 0,
    "sdmp_fast.config": 1,
    "sdmp_fast.data": 2, "sdmp_fast.models": 2, "sdmp_fast.losses": 2, "sdmp_fast.augment.recipes": 2,
    "sdmp_fast.augment": 3, "sdmp_fast.mixing": 3,
    "sdmp_fast.kernels": 4,
    "sdmp_fast.methods": 5, "loaders": 5,
    "sdmp_fast.engine": 6,
    "sdmp_fast.export": 7,
    "sdmp_fast.eval": 8, "sdmp_fast.view_grid": 8, "sdmp_fast.health": 8,
    "sdmp_fast.cli": 9,
    # the commands: none imports another
    "sdmp_fast.pretrain": 10, "sdmp_fast.linear": 10, "sdmp_fast.finetune": 10, "sdmp_fast.knn": 10,
    "sdmp_fast.doctor": 10,
    "sdmp_fast.plot": 10,
    "sdmp_fast": 11,  # the package root: the public API, loaded lazily
    "benchmarks": 11,
}
MAX_FILE, MAX_FUNCTION = 400, 80
EXCEPTIONS: dict[str, str] = {}  # "path" or "path:function" -> the reason it may be longer


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def group(name: str) -> str:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS and (prefix != "sdmp_fast" or name == "sdmp_fast"):
            return prefix
    raise KeyError(f"{name}: no layer in LAYERS (add its group to tests/test_layers.py and docs/architecture.md)")


def imports(name: str, path: Path, mods: dict[str, Path]):
    """(target module, imported names, line) for every import of project code in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.split(".")[0] not in PACKAGES:
                continue
            plain = []
            for a in node.names:  # `from pkg import module` is an arrow to the module
                if f"{mod}.{a.name}" in mods:
                    yield f"{mod}.{a.name}", [], node.lineno
                else:
                    plain.append(a.name)
            if plain:
                yield mod, plain, node.lineno


def arrows(mods: dict[str, Path], root: Path = ROOT):
    for name, path in mods.items():
        for target, names, line in imports(name, path, mods):
            yield name, target, names, f"{path.relative_to(root)}:{line}"


def sideways_or_upward(mods: dict[str, Path], root: Path = ROOT) -> list[str]:
    bad = []
    for src, dst, _, where in arrows(mods, root):
        gs, gd = group(src), group(dst)
        if gs != gd and LAYERS[gd] >= LAYERS[gs]:
            bad.append(f"{where}: {src} (layer {LAYERS[gs]}) imports {dst} (layer {LAYERS[gd]})")
    return bad


def cycles(mods: dict[str, Path], root: Path = ROOT) -> list[list[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for src, dst, _, _ in arrows(mods, root):
        dst = dst if dst in mods else dst.rpartition(".")[0]
        if dst in mods and dst != src:
            graph[src].add(dst)
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def private_imports(mods: dict[str, Path], root: Path = ROOT) -> list[str]:
    return [f"{where}: {src} imports {', '.join(n for n in names if n.startswith('_'))} from {dst}"
            for src, dst, names, where in arrows(mods, root) if any(n.startswith("_") for n in names)]


def long_functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION:
                yield node.name, n


MODULES = modules()


def test_every_module_has_a_layer():
    for name in MODULES:
        group(name)


def test_no_sideways_or_upward_import():
    bad = sideways_or_upward(MODULES)
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    assert not cycles(MODULES)


def test_no_private_name_imported_across_modules():
    bad = private_imports(MODULES)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg", ["sdmp_fast", "loaders", "benchmarks"])
def test_files_and_functions_stay_small(pkg):
    bad = []
    for name, path in MODULES.items():
        if name.split(".")[0] != pkg:
            continue
        rel = str(path.relative_to(ROOT))
        n = len(path.read_text().splitlines())
        if n > MAX_FILE and rel not in EXCEPTIONS:
            bad.append(f"{rel}: {n} lines")
        bad += [f"{rel}:{fn}: {k} lines" for fn, k in long_functions(path) if f"{rel}:{fn}" not in EXCEPTIONS]
    assert not bad, "\n".join(bad)


def test_the_checks_see_what_they_forbid(tmp_path):
    """An upward import inside a function, a cycle and a private import in a small tree are each reported."""
    pkg = tmp_path / "sdmp_fast"
    (pkg / "engine").mkdir(parents=True)
    for f, text in {"__init__.py": "", "cli.py": "", "engine/__init__.py": "",
                    "engine/a.py": "from sdmp_fast.engine.b import _x\n",
                    "engine/b.py": "def f():\n    from sdmp_fast.engine import a\n    import sdmp_fast.cli\n"}.items():
        (pkg / f).write_text(text)
    mods = modules(tmp_path)
    assert any("imports sdmp_fast.cli" in b for b in sideways_or_upward(mods, tmp_path))
    assert cycles(mods, tmp_path) == [["sdmp_fast.engine.a", "sdmp_fast.engine.b"]]
    assert any("imports _x" in b for b in private_imports(mods, tmp_path))

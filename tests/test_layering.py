"""The package's import layering, read from the source with ``ast`` (every import, also the
ones inside functions): no module imports a layer above its own, and no modules import each
other in a circle. Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so it
counts as importing those packages too (an upward import or a circle through a package's
``__init__`` is found). docs/DESIGN.md ("Import layers") lists the same layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module belongs to the layer of the longest prefix that names it
LAYERS: list[tuple[str, ...]] = [
    ("tctseg", "tctseg.errors", "tctseg.settings", "tctseg.config", "tctseg.devices", "tctseg.predict_options",
     "tctseg.files"),
    ("tctseg.network", "tctseg.losses", "tctseg.metrics", "tctseg.data", "tctseg.data.io",
     "tctseg.data.dicom_geometry", "tctseg.data.conversion", "tctseg.data.phantom", "tctseg.data.augment"),
    ("tctseg.preprocessing",),
    ("tctseg.data.sampler", "tctseg.methods"),
    ("tctseg.checkpoint",),
    ("tctseg.inference",),
    ("tctseg.training",),
    ("tctseg.evaluation",),
    ("tctseg.report",),
    ("tctseg.experiment",),
    ("tctseg.compare",),
    ("tctseg.commands", "tctseg.cli", "tctseg.__main__"),
]


def module_names() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "tctseg").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The tctseg modules ``name`` imports: ``from a.b import c`` counts as ``a.b.c`` when that
    is a module, else as ``a.b``; and each imported module's packages (``a``, ``a.b``: their
    ``__init__`` runs first), except ``name`` itself and its own packages, which Python has
    run before ``name``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = _direct_imports(path, package, modules)
    own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
    for imported in list(found):
        parts = imported.split(".")
        found.update(p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in modules and p not in own)
    return found


def _direct_imports(path: Path, package: str, modules: dict[str, Path]) -> set[str]:
    """The tctseg modules ``path``'s import statements name (``package``: the package that
    relative imports start from)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tctseg")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "tctseg":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                found.add(full if full in modules else source)
    return found


def layer_of(name: str) -> int:
    best, best_length = None, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = rank, len(prefix)
    assert best is not None, f"{name} is in no layer: add it to LAYERS and to docs/DESIGN.md"
    return best


def test_every_module_has_a_layer():
    for name in module_names():
        layer_of(name)


def test_no_module_imports_a_layer_above_its_own():
    modules = module_names()
    upward = []
    for name, path in sorted(modules.items()):
        for imported in sorted(imports_of(name, path, modules)):
            if layer_of(imported) > layer_of(name):
                upward.append(f"{name} (layer {layer_of(name)}) imports {imported} (layer {layer_of(imported)})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circles():
    modules = module_names()
    graph = {name: imports_of(name, path, modules) & modules.keys() for name, path in modules.items()}
    # Tarjan's strongly connected components, iteratively
    index, low, on_stack, stack, circles, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    assert not circles, f"import circles: {circles}"


def test_the_checks_catch_an_upward_import_and_a_circle(tmp_path, monkeypatch):
    """The checks themselves fail on a planted upward import and a planted circle."""
    package = tmp_path / "tctseg"
    (package / "network").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("from tctseg import settings\n")
    (package / "settings.py").write_text("def f():\n    from tctseg import errors\n")
    (package / "network" / "__init__.py").write_text("")
    (package / "network" / "unet.py").write_text("from tctseg.training.trainer import Trainer\n")
    (package / "training").mkdir()
    (package / "training" / "__init__.py").write_text("")
    (package / "training" / "trainer.py").write_text("Trainer = 1\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)  # the checks read the planted package
    try:
        test_no_module_imports_a_layer_above_its_own()
    except AssertionError as error:
        assert "tctseg.network.unet (layer 1) imports tctseg.training.trainer (layer 6)" in str(error)
    else:
        raise AssertionError("the planted upward import was not found")
    try:
        test_no_import_circles()
    except AssertionError as error:
        assert "['tctseg.errors', 'tctseg.settings']" in str(error)
    else:
        raise AssertionError("the planted circle was not found")


def test_the_checks_follow_a_package_init(tmp_path, monkeypatch):
    """Importing a low module ``low.metrics`` runs ``low/__init__``, which imports a high module:
    the import counts as one of ``low`` too, so the upward import and the circle through the
    ``__init__`` are found; a module's import of a sibling does not count its own package."""
    package = tmp_path / "tctseg"
    for folder in ("low", "mid"):
        (package / folder).mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("from tctseg.low import table\n")
    (package / "low" / "table.py").write_text("from tctseg.mid import user\nfrom tctseg.low.metrics import dice\n")
    (package / "low" / "metrics.py").write_text("dice = 1\n")
    (package / "mid" / "__init__.py").write_text("")
    (package / "mid" / "user.py").write_text("def f():\n    from tctseg.low.metrics import dice\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    monkeypatch.setitem(globals(), "LAYERS", [("tctseg", "tctseg.low.metrics"), ("tctseg.mid",), ("tctseg.low",)])
    modules = module_names()
    assert imports_of("tctseg.mid.user", modules["tctseg.mid.user"], modules) == {"tctseg.low.metrics", "tctseg.low"}
    assert imports_of("tctseg.low.table", modules["tctseg.low.table"], modules) == {
        "tctseg.mid.user", "tctseg.mid", "tctseg.low.metrics"}
    try:
        test_no_module_imports_a_layer_above_its_own()
    except AssertionError as error:
        assert "tctseg.mid.user (layer 1) imports tctseg.low (layer 2)" in str(error)
    else:
        raise AssertionError("the upward import through low/__init__ was not found")
    try:
        test_no_import_circles()
    except AssertionError as error:
        assert "['tctseg.low', 'tctseg.low.table', 'tctseg.mid.user']" in str(error)
    else:
        raise AssertionError("the circle through low/__init__ was not found")

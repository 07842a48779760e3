"""The layers of the house (docs/design.md): the core owns its protocol and never reaches for a
backend or a framework; backends are found through the registry."""
from __future__ import annotations

import ast
import re
import pkgutil
import subprocess
import sys
from pathlib import Path

import netspec

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("backends", "netspec_backends", "torch", "jax", "jaxlib", "flax", "optax")


def core_modules() -> list[str]:
    """Every module of netspec/ but the `python -m netspec` entry point (importing it runs the command)."""
    return sorted(m.name for m in pkgutil.walk_packages(netspec.__path__, "netspec.") if m.name != "netspec.__main__")


def test_importing_every_core_module_loads_no_backend_or_framework() -> None:
    modules = core_modules()
    assert len(modules) > 10
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(n for n in sys.modules if n.split('.')[0] in {FRAMEWORKS!r}))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded


def test_no_core_module_imports_backends_even_lazily() -> None:
    """Backends are handed to the core as objects (or loaded by name through netspec.protocol.backend's
    entry points), so not even a function-level `import backends` may appear in netspec/."""
    offenders = []
    for path in sorted((ROOT / "netspec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("backends", "netspec_backends")]
    assert offenders == []


def test_the_registry_lists_every_backend_package() -> None:
    from netspec.protocol.backend import backend_names, load_backend

    packages = sorted(p.name for p in (ROOT / "backends").iterdir() if (p / "__init__.py").is_file())
    assert sorted(backend_names()) == packages
    for name in backend_names():
        assert load_backend(name).name == name


def test_a_checkout_that_is_not_installed_reads_the_registry_from_its_pyproject() -> None:
    from netspec.protocol.backend import _declared_in_checkout, _entry_points

    declared = {name: ep.value for name, ep in _declared_in_checkout().items()}
    assert declared == {name: ep.value for name, ep in _entry_points().items()}
    assert declared == {"torch": "netspec_backends.torch:BACKEND", "jax": "netspec_backends.jax:BACKEND"}


# ---- the core's own imports: at the top of a module, and without a loop --------------------------------

def _core_module_names() -> dict[str, Path]:
    """'netspec.data.files' -> its file, for every module of the core (packages by their __init__)."""
    names = {}
    for path in sorted((ROOT / "netspec").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports(module: str, path: Path, core: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported core module, whether the import is inside a function, line) for each import in a file.
    `from . import x` counts as importing the module x when there is one, else the package."""
    tree = ast.parse(path.read_text(), str(path))
    inside = {id(node) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(f) if isinstance(node, (ast.Import, ast.ImportFrom))}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = (package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else [])
            target = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in core else target for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for name in targets:
            while name and name not in core:  # netspec.data.files.x -> netspec.data.files
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append((name, id(node) in inside, node.lineno))
    return found


def test_core_modules_import_each_other_at_the_top_only() -> None:
    """A function-level import of the core's own module only hides an import loop; lazy imports are for
    optional heavy dependencies (matplotlib, onnx, ray, tensorflow-datasets, the frameworks), and for
    the command line (netspec.cli and netspec.commands), which loads only what a subcommand needs."""
    core = _core_module_names()
    lazy = [f"{path.relative_to(ROOT)}:{line} imports {name}" for module, path in core.items()
            if module != "netspec.cli" and not module.startswith("netspec.commands")
            for name, in_function, line in _imports(module, path, core) if in_function]
    assert lazy == []


def test_the_core_import_graph_has_no_cycle() -> None:
    core = _core_module_names()
    graph = {module: {name for name, _, _ in _imports(module, path, core)} for module, path in core.items()}
    assert len(graph) > 30 and graph["netspec.sweeps.sweep"] >= {"netspec.spec.sweep_file", "netspec.sweeps.launchers"}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            raise AssertionError("import loop: " + " -> ".join(trail[trail.index(module):] + [module]))
        if module not in done:
            for name in sorted(graph[module]):
                visit(name, trail + [module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])


# ---- the rooms and the direction between them ------------------------------------------------------------

# The core's rooms, earliest first (docs/layout.md): a module may import its own room or an earlier one,
# never a later one. The root's small utilities come first; the command line and the package's public
# names (netspec/__init__.py) come last, since they gather everything.
ROOMS = ("netspec.errors", "netspec.io", "netspec.version", "netspec.progress",
         "netspec.spec", "netspec.data", "netspec.protocol", "netspec.training", "netspec.check", "netspec.runs",
         "netspec.deploy", "netspec.sweeps", "netspec.api", "netspec.commands", "netspec.cli", "netspec.__main__", "netspec")


def room_of(module: str) -> int:
    """The rank of a module's room: the first of ROOMS that is the module or a package above it."""
    for rank, room in enumerate(ROOMS):
        if module == room or module.startswith(room + ".") and room != "netspec":
            return rank
    if module == "netspec":
        return ROOMS.index("netspec")
    raise AssertionError(f"{module} lies in no room of ROOMS: add its room there and to docs/layout.md")


def back_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {name} (a later room)" for module, names in graph.items()
                  for name in names if room_of(name) > room_of(module))


def test_rooms_import_only_their_own_or_earlier_rooms() -> None:
    core = _core_module_names()
    graph = {module: {name for name, _, _ in _imports(module, path, core)} for module, path in core.items()}
    assert back_imports(graph) == []


def test_a_planted_back_import_is_named() -> None:
    """The rule itself catches: the spec language reaching for the trainer is reported by name."""
    core = _core_module_names()
    graph = {module: {name for name, _, _ in _imports(module, path, core)} for module, path in core.items()}
    graph["netspec.spec.layers"] = graph["netspec.spec.layers"] | {"netspec.training.trainer"}
    assert back_imports(graph) == ["netspec.spec.layers imports netspec.training.trainer (a later room)"]


def test_layout_md_names_every_module_of_the_tree() -> None:
    """Each module's file name appears on the page, and so does its folder (`sources/`, `jax/`, ...)."""
    layout = (ROOT / "docs" / "layout.md").read_text()
    words = set(re.findall(r"[\w.]+/?", layout))
    missing = [str(path.relative_to(ROOT)) for folder in ("netspec", "backends")
               for path in sorted((ROOT / folder).rglob("*.py"))
               if path.name != "__init__.py" and not ({path.name, f"{path.parent.name}/"} <= words)]
    assert missing == [], f"docs/layout.md does not name {missing}: add a line for each"


TEST_FOLDERS = {room.split(".")[1] for room in ROOMS if room.count(".") == 1 and (ROOT / room.replace(".", "/")).is_dir()}
TEST_FOLDERS |= {"backends", "commands", "project"}
"""tests/ mirrors the house: a folder per room of the core, one for the backends' own tests, one for the
CLI and the API as a user meets them (netspec.api, netspec.commands, netspec.cli), one for the project
(architecture, packaging, tools)."""


def test_every_test_file_lies_in_a_folder_of_its_room() -> None:
    tests = ROOT / "tests"
    misplaced = [str(path.relative_to(ROOT)) for path in sorted(tests.rglob("test_*.py"))
                 if path.parent.parent != tests or path.parent.name not in TEST_FOLDERS]
    assert misplaced == [], f"{misplaced}: move each into tests/<room>/, one of {sorted(TEST_FOLDERS)}"
    assert {path.name for path in tests.iterdir() if path.is_dir() and (path / "__init__.py").exists()} == TEST_FOLDERS


# ---- small modules ----------------------------------------------------------------------------------------

MAX_MODULE_LINES = 500
"""A module longer than this does more than one job: split it by what each part does (docs/layout.md)."""
KNOWN_LONG: dict[str, str] = {}
"""Modules allowed over the limit for now, each with the reason; remove an entry once its split lands."""


def test_no_module_of_the_core_or_the_backends_is_over_the_size_limit() -> None:
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
               for folder in ("netspec", "backends") for path in sorted((ROOT / folder).rglob("*.py"))}
    stale = [name for name in KNOWN_LONG if lengths.get(name, 0) <= MAX_MODULE_LINES]
    assert stale == [], f"{stale} no longer over {MAX_MODULE_LINES} lines (or gone): remove them from KNOWN_LONG"
    over = [f"{name}: {n} lines" for name, n in lengths.items() if n > MAX_MODULE_LINES and name not in KNOWN_LONG]
    assert over == [], f"over {MAX_MODULE_LINES} lines, split by what each part does: {over}"

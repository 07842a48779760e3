"""The layers of the house (docs/design.md): the core owns its protocol and never reaches for a
backend or a framework; backends are found through the registry."""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import netspec

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("backends", "torch", "jax", "jaxlib", "flax", "optax")


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
    """Backends are handed to the core as objects (or loaded by name through netspec.backend's
    entry points), so not even a function-level `import backends` may appear in netspec/."""
    offenders = []
    for path in sorted((ROOT / "netspec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "backends"]
    assert offenders == []


def test_the_registry_lists_every_backend_package() -> None:
    from netspec.backend import backend_names, load_backend

    packages = sorted(p.name for p in (ROOT / "backends").iterdir() if (p / "__init__.py").is_file())
    assert sorted(backend_names()) == packages
    for name in backend_names():
        assert load_backend(name).name == name


def test_a_checkout_that_is_not_installed_reads_the_registry_from_its_pyproject() -> None:
    from netspec.backend import _declared_in_checkout, _entry_points

    declared = {name: ep.value for name, ep in _declared_in_checkout().items()}
    assert declared == {name: ep.value for name, ep in _entry_points().items()}
    assert declared == {"torch": "backends.torch:BACKEND", "jax": "backends.jax:BACKEND"}

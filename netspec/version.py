"""netspec's version: the installed distribution's, else (a checkout used without `pip install`) the
version in the pyproject.toml beside the package."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version() -> str:
    try:
        return version("netspec")
    except PackageNotFoundError:
        pass
    try:
        import tomllib  # Python 3.11+

        return str(tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]["version"])
    except (ImportError, OSError, KeyError, ValueError):
        return "unknown"


__version__ = _version()

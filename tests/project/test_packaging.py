"""The installed distribution owns its names: a built wheel puts only netspec's own packages into
site-packages (no top-level `backends` or `runner` that another project may own), and it carries
every package of the checkout."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(ROOT)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"pip wheel failed: {built.stderr[-2000:]}")
    (path,) = out.glob("netspec-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_only_netspec_names(wheel: zipfile.ZipFile) -> None:
    (top_level,) = [n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt")]
    assert sorted(wheel.read(top_level).decode().split()) == ["netspec", "netspec_backends"]
    roots = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert roots == {"netspec", "netspec_backends"}


def test_the_wheel_carries_every_package_of_the_checkout(wheel: zipfile.ZipFile) -> None:
    """pyproject.toml lists the packages by hand (the backends/ folder installs under another name), so a
    new subpackage must be added there: this test names the one that is missing."""
    names = set(wheel.namelist())
    expected = {f"netspec/{p.relative_to(ROOT / 'netspec').as_posix()}" for p in (ROOT / "netspec").rglob("*.py")}
    expected |= {f"netspec_backends/{p.relative_to(ROOT / 'backends').as_posix()}" for p in (ROOT / "backends").rglob("*.py")}
    assert sorted(expected - names) == [], "add these packages to [tool.setuptools] packages in pyproject.toml"


def test_the_entry_points_name_the_installed_backend_package(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "torch = netspec_backends.torch:BACKEND" in text and "jax = netspec_backends.jax:BACKEND" in text
    assert "netspec = netspec.cli:main" in text

"""Shared test settings: slow tests are opt-in (`pytest --runslow`)."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import pytest

# The `netspec` command's default CPU threads (netspec.training.threads) follow OMP_NUM_THREADS: one, as below,
# for commands run in this process and in the subprocesses tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# XLA's programs, compiled once per test session: many tests compile the same small networks (the same
# program from a new jit closure, which jax's in-memory cache does not recognise), and an XLA compile
# costs 0.3-3 s on 2 cores. jax's persistent compilation cache is keyed by the program's HLO, the
# compile options and the jax version, so a hit is the very executable a compile would give. Set
# before jax is imported (jax reads these at import and decides once whether to use a cache); a
# folder of this session's own, removed at its end, so no run sees another's entries; subprocesses
# the tests start (the CLI, ray workers, a nested pytest) inherit it. Every compile is kept (the
# default keeps only those over 1 s).
_XLA_CACHE = None if "JAX_COMPILATION_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="netspec-tests-xla-")
if _XLA_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _XLA_CACHE:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """One CPU thread for torch in the tests. Their tensors are small, and when the 2-core machine is
    shared (XLA's own threads, another process), torch's spinning OpenMP threads make a step 10-70x
    slower (a tiny run: 7 s per epoch with 2 threads under load, 0.1 s with one)."""
    try:
        import torch
    except ImportError:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)

"""Shared test settings: slow tests are opt-in (`pytest --runslow`)."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

# The `netspec` command's default CPU threads (netspec.training.threads) follow OMP_NUM_THREADS: one, as below,
# for commands run in this process and in the subprocesses tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


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

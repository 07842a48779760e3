"""The sweeps' shared local Ray: one cluster for the Ray tests of this folder (test_ray_launcher.py,
test_search.py), started once and shut down after the folder's last test. Starting Ray and its workers
(each imports torch and netspec) costs 5-10 s on 2 cores; each test still submits its own tasks."""
from __future__ import annotations

import os
from typing import Any, Iterator

import pytest


@pytest.fixture(scope="package")
def ray_local() -> Iterator[Any]:
    """A local Ray of 2 CPUs, no dashboard. The tests using it only submit tasks (a worker may die and be
    retried: Ray starts another), never change the cluster itself."""
    ray = pytest.importorskip("ray", reason="--launcher ray needs netspec[ray]")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no login token written for a throwaway local cluster
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

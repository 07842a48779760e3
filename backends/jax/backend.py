"""The JAX Backend object (`BACKEND`): compile, describe, and device resolution."""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import optax
from jax._src import xla_bridge

from netspec.protocol.backend import BackendBase, request_device
from netspec.errors import SetupError

from .model import JaxModel

_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def _client_started() -> bool:
    # No public API says whether the CPU client has started yet.
    return getattr(xla_bridge, "backends_are_initialized", lambda: True)()


def cpu_threads() -> int:
    """The threads XLA:CPU computes with: 1 when its Eigen kernels are single-threaded, else every core."""
    if _SINGLE_THREAD in os.environ.get("XLA_FLAGS", "").split():
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gpus() -> list[jax.Device]:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib, or no GPU
        return []


def resolve_device(name: Optional[str] = None) -> jax.Device:
    """A device name as a jax.Device, by netspec.protocol.backend.request_device's rule; a GPU without an
    index is jax's first one. A jax that cannot start (JAX_PLATFORMS) is a SetupError too."""
    try:
        gpus = _gpus()
        request = request_device(name, len(gpus), f"jax {jax.__version__}")
        return jax.devices("cpu")[0] if request.kind == "cpu" else gpus[request.index or 0]
    except RuntimeError as err:  # e.g. JAX_PLATFORMS names a platform jax does not have
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SetupError(f"jax cannot start ({first[:200]}); check JAX_PLATFORMS (unset it, or set cpu or cuda)") from None


def device_words(device: jax.Device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    return "cpu" if device.platform == "cpu" else f"{device.platform}:{device.id} ({device.device_kind})"


class JaxBackend(BackendBase):
    """netspec.protocol.backend.Backend for JAX/Flax: compile and device are BackendBase's."""

    name = "jax"
    model_class = JaxModel

    def resolve_device(self, name: Optional[str] = None) -> jax.Device:
        return resolve_device(name)

    def device_words(self, device: jax.Device) -> str:
        return device_words(device)

    def set_threads(self, threads: Optional[int]) -> None:
        """XLA:CPU takes no thread count: 1 turns its multi-threaded Eigen kernels off, more use every
        core, and so does None (XLA's pool waits without spinning, so a busy machine costs it little).
        XLA_FLAGS is read when jax's CPU client starts (the first computation), so this holds only when
        called before it; describe()'s cpu_threads says what the client started with."""
        if threads is None or _client_started():
            return
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_SINGLE_THREAD.split("=")[0])]
        os.environ["XLA_FLAGS"] = " ".join(flags + ([_SINGLE_THREAD] if threads == 1 else []))

    def describe(self) -> dict[str, Any]:
        import flax
        import jaxlib

        return {
            "backend": self.name,
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "default_device": device_words(resolve_device()),
            "devices": [device_words(d) for d in jax.devices()],
            "cpu_threads": cpu_threads(),
        }


BACKEND = JaxBackend()

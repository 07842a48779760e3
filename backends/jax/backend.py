"""The JAX Backend object (`BACKEND`): compile, describe, and device resolution."""
from __future__ import annotations

from typing import Any, Optional

import jax
import optax

from netspec.backend import Compile, Precision, request_device
from netspec.errors import SetupError
from netspec.network import Network
from netspec.params import Weights, init_weights

from .model import JaxModel


def _gpus() -> list[jax.Device]:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib, or no GPU
        return []


def resolve_device(name: Optional[str] = None) -> jax.Device:
    """A device name (netspec.backend.parse_device's) as a jax.Device; None: the first GPU when jax
    has one, else the CPU. SetupError when unknown or absent."""
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


class JaxBackend:
    """netspec.backend.Backend for JAX/Flax."""

    name = "jax"

    def compile(self, network: Network, weights: Optional[Weights] = None, seed: int = 0,
                device: Optional[str] = None, precision: Precision = "default", compiled: Compile = "auto") -> JaxModel:
        where = resolve_device(device)
        weights = init_weights(network, seed) if weights is None else weights
        return JaxModel(network, weights, seed, where, device_words(where), precision, compiled)

    def device(self, name: Optional[str] = None) -> str:
        return device_words(resolve_device(name))

    def describe(self) -> dict[str, Any]:
        import flax
        import jaxlib

        return {
            "backend": self.name,
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "default_device": device_words(resolve_device()),
            "devices": [device_words(d) for d in jax.devices()],
        }


BACKEND = JaxBackend()

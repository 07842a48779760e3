"""Canonical weights: a flat dict of numpy arrays with PyTorch state_dict names and layouts.

Initialization happens here, once, in numpy (PyTorch's default formulas), so every backend starts
from bit-identical weights; a weights file written from one backend loads in the other.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from netspec.errors import SpecError
from netspec.io import DamagedNpz, atomic_write, load_npz
from netspec.spec.network import Network

Weights = dict[str, np.ndarray]


TRAINING_BYTES_PER_PARAM = 4 * 4
"""float32 weights, their gradients and Adam's two moments."""
ACTIVATION_BYTES = 4 * 2
"""float32 per activation, kept once more for the backward pass."""


def physical_memory() -> int:
    """This machine's RAM in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def training_bytes(network: Network, batch_size: int = 1) -> tuple[int, int]:
    """(bytes to train `network` on batches of `batch_size`, index of the layer that needs the most),
    from the specs alone: parameters with gradients and Adam's moments, activations for the backward
    pass, and the float64 draw of the largest tensor at initialization."""
    per_layer = []
    for node in network.nodes():
        params = sum(math.prod(info.shape) for info in node.layer.params(node.input_shape).values())
        per_layer.append(params * TRAINING_BYTES_PER_PARAM + math.prod(node.output_shape) * batch_size * ACTIVATION_BYTES)
    largest = max((math.prod(info.shape) for info in network.param_infos().values()), default=0)
    return sum(per_layer) + largest * 8, max(range(len(per_layer)), key=per_layer.__getitem__)


def check_memory(network: Network, batch_size: int = 1, available: int | None = None) -> None:
    """One SpecError line, naming the largest layer, when training `network` cannot fit in this machine's
    RAM: checked before any tensor is allocated, because numpy asked for 4 GB x 10^3 fails late (or the
    OS kills the process) instead of saying which layer is too big."""
    available = physical_memory() if available is None else available
    need, index = training_bytes(network, batch_size)
    if available and need > available:
        layer = network.layers[index]
        raise SpecError(
            f"network: layer {index} ({layer.type}) is too big: training the network needs about {need / 2**30:,.1f} GiB "
            f"(weights, gradients, Adam's moments, activations of a batch of {batch_size}) but this machine has "
            f"{available / 2**30:,.1f} GiB; make layer {index} smaller")


def check_trainable(network: Network) -> None:
    """One SpecError line when `network` has nothing to train (only ReLU, Flatten, pooling and dropout):
    an optimizer of no parameters fails deep in each framework."""
    if not any(info.trainable for info in network.param_infos().values()):
        raise SpecError("network: it has no trainable parameters (no Linear, Conv2d or BatchNorm), so nothing to "
                        "train or cross-check; add a Linear layer")


def init_weights(network: Network, seed: int = 0) -> Weights:
    """Fresh weights for `network`: Linear/Conv weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    BatchNorm weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0.

    Tensors are drawn in state_dict order from one numpy Generator seeded with `seed`, after
    `check_memory` (a network too big for the machine is one line, not a MemoryError).
    """
    check_memory(network)
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, info in network.param_infos().items():
        if info.init == "fan_in_uniform":
            bound = 1.0 / math.sqrt(info.fan_in)
            value = rng.uniform(-bound, bound, size=info.shape)
        elif info.init == "ones":
            value = np.ones(info.shape)
        else:
            value = np.zeros(info.shape)
        weights[name] = np.asarray(value, dtype=info.dtype)
    return weights


def check_weights(network: Network, weights: Weights, source: str = "weights", float_dtype: str = "float32",
                  finite: bool = True) -> Weights:
    """Check names, shapes and dtypes against the network; return copies in order, floats as
    `float_dtype` (float64 for a float64 model) and integers as int64. `finite=False` lets NaN and inf
    through: the cross-check compares what two backends hold, overflowed or not."""
    infos = network.param_infos()
    missing = sorted(set(infos) - set(weights))
    extra = sorted(set(weights) - set(infos))
    if missing or extra:
        raise SpecError(f"{source}: do not fit the network: missing {missing or 'none'}, unexpected {extra or 'none'}")
    out: Weights = {}
    for name, info in infos.items():
        value = np.asarray(weights[name])
        if value.shape != tuple(info.shape):
            raise SpecError(f"{source}: tensor '{name}' has shape {value.shape}, the network needs {tuple(info.shape)}")
        _check_values(value, name, source, finite)
        out[name] = value.astype(float_dtype if np.dtype(info.dtype).kind == "f" else info.dtype, copy=True)
    return out


def _check_values(value: np.ndarray, name: str, source: str, finite: bool = True) -> None:
    """Real, finite numbers only: a string or complex array would fail deep in a backend, and NaN or
    infinite weights would evaluate to plausible-looking numbers (a NaN loss, chance accuracy)."""
    if value.dtype.kind not in "biuf":
        raise SpecError(f"{source}: tensor '{name}' has dtype {value.dtype}; weights are real numbers: "
                        "give a .npz written by netspec")
    if finite and value.dtype.kind == "f" and not np.isfinite(value).all():
        raise SpecError(f"{source}: tensor '{name}' holds NaN or infinite values; these weights come from a "
                        "diverged or damaged run: train it again")


def weights_fingerprint(weights: Weights) -> str:
    """sha256 of the tensors by name, dtype, shape and bytes (not of the .npz file, whose zip entries carry
    times): the same weights give the same fingerprint however they were saved."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = np.ascontiguousarray(weights[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def check_fit(network: Network, weights: Weights, source: str) -> Weights:
    """check_weights, with a file that does not fit the network named by its first misfit tensor, in the
    network's order (a missing one, else an unexpected one), in one line."""
    infos = network.param_infos()
    missing = [n for n in infos if n not in weights]
    extra = [n for n in weights if n not in infos]
    if missing or extra:
        name = (missing or extra)[0]
        layer = network.layers[int(name.split(".")[0])].type if missing else None
        what = f"has no tensor '{name}' (layer {name.split('.')[0]}, {layer})" if missing else f"has tensor '{name}', which the network does not"
        more = len(missing) + len(extra) - 1
        raise SpecError(f"{source}: does not fit the network: it {what}" + (f" ({more} more misfit)" if more else "")
                        + "; give weights saved for this network (netspec import or a run's weights.npz)")
    return check_weights(network, weights, source)


def save_weights(weights: Weights, path: str | Path) -> None:
    """Write weights as one .npz file (names are the archive's keys); backend-neutral."""
    atomic_write(Path(path), lambda f: np.savez(f, **weights))


MAX_WEIGHTS_BYTES = 8 * 2**30
"""Largest total of the arrays in a weights file, checked before any is read (a .npz is a zip: a small
file can inflate to any size)."""


def load_weights(path: str | Path, network: Network | None = None) -> Weights:
    """Read weights written by `save_weights`; checked against `network` when given (names, shapes, real
    finite values). The one validated reader of weights files: netspec.io.load_npz (no pickles, a FIFO or
    folder refused without blocking, every member's declared size checked before numpy allocates it, at
    most MAX_WEIGHTS_BYTES in all); any failure is one SpecError line naming the file."""
    try:
        weights = load_npz(path, MAX_WEIGHTS_BYTES)
    except DamagedNpz as err:
        raise SpecError(f"{path}: cannot read weights ({_not_npz(path) or _weights_problem(err.reason)}); give a .npz "
                        "written by netspec") from None
    except (OSError, SpecError) as err:  # absent, unreadable, a FIFO, or members beyond the bound
        raise SpecError(f"{path}: cannot read weights ({_weights_problem(err)}); give a .npz written by netspec") from None
    return check_weights(network, weights, str(path)) if network is not None else weights


def _not_npz(path: str | Path) -> str:
    """What a file that is no zip is instead, from its first bytes ('' when neither): a bare .npy, or a pickle."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return ""
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array, not an .npz archive"
    if head[:1] == b"\x80":
        return _weights_problem("allow_pickle")
    return ""


def _weights_problem(err: Exception | str) -> str:
    # numpy's words for a pickled object array name the switch to turn on; say why it stays off.
    if "allow_pickle" in str(err):
        return "it holds pickled Python objects, refused because loading them could run code"
    return str(err).splitlines()[0] if str(err) else type(err).__name__  # type: ignore[union-attr]

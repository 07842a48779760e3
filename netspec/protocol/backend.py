"""The protocol the core speaks to a backend, and the registry that finds backends by name.

The trainer, the cross-check and the run folder use nothing of a framework but what is here: arrays
cross this boundary as numpy (NCHW images, int labels, canonical weights in PyTorch's state_dict
names and layouts, see docs/design.md); anything on the device stays behind `DeviceData` and `Model`.

Backends are plugins. Each is a package exposing a `BACKEND` object and named in the entry-point
group `netspec.backends` of its distribution (pyproject.toml lists torch and jax; a checkout that is
not installed reads that table from its pyproject.toml), so the core never imports one:
`load_backend("jax")` imports jax only when asked, and a third backend is one more entry point plus
its package.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from importlib import import_module
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Literal, Mapping, Optional, Protocol, TypeVar

import numpy as np

from netspec.errors import SetupError, SpecError
from netspec.spec.experiment import TrainConfig
from netspec.spec.layers import LayerSpec, Shape
from netspec.spec.network import Network
from netspec.spec.params import Weights, init_weights

Precision = Literal["float32", "tf32", "bf16", "default", "highest", "float64"]
"""How a model computes. The training settings (TrainConfig.precision), the same on every backend:
'float32': true float32 (TF32 off in both frameworks); 'tf32': TF32 matmuls and convolutions where the
GPU has them (float32 elsewhere, and on a CPU); 'bf16': bf16 matmuls and convolutions with float32
parameters, optimizer state, BatchNorm statistics and loss. And the cross-check's: 'highest' (an alias of
'float32'), 'float64' (every tensor in double precision, the asserted tier), 'default' (the framework's
own defaults, whatever they are)."""

PRECISIONS: dict[str, str] = {"float32": "float32", "highest": "float32", "tf32": "tf32", "bf16": "bf16",
                              "default": "default", "float64": "float64"}
"""Each accepted precision name -> its canonical name ('highest' is 'float32')."""

Compile = Literal["auto", "on", "off"]
"""Whether a model's training steps are compiled (TrainConfig.compile), by the rule of `compiles`."""


def canonical_precision(precision: str) -> str:
    """The canonical name of a precision; a SpecError naming the choices for an unknown one."""
    if precision not in PRECISIONS:
        raise SpecError(f"unknown precision {precision!r}; use 'float32', 'tf32' or 'bf16' "
                        f"(or the cross-check's 'highest', 'float64', 'default')")
    return PRECISIONS[precision]


def check_compile(compiled: str) -> str:
    if compiled not in ("auto", "on", "off"):
        raise SpecError(f"unknown compile setting {compiled!r}; use 'auto', 'on' or 'off'")
    return compiled


def compiles(compiled: str, on_gpu: bool) -> bool:
    """Whether a model compiles its training steps, the same rule in every backend: 'on' and 'off' say
    so; 'auto' compiles on a GPU only. On a CPU neither pays: torch.compile costs 30-60 s per graph
    there, and XLA:CPU runs a scanned epoch of the report's CNN ~7x slower than per-step jitted steps
    (400 images of the 64-channel CNN: 10.5 s against 1.4 s; the MLP: equal)."""
    return check_compile(compiled) == "on" or (compiled == "auto" and on_gpu)


ENTRY_POINT_GROUP = "netspec.backends"
_INSTALL_HINT = "pip install 'netspec[{name}]'"


class DeviceData(Protocol):
    """One split (images and labels) resident on the model's device; opaque to the trainer."""

    num_examples: int


class Model(Protocol):
    """A compiled network, for typing. What each attribute and method promises is written once, in the
    docstring of its namesake on netspec.protocol.model_base.ModelBase, which every backend's model
    subclasses (it implements the checks, the errors and the read-back rule; a backend fills in only its
    tensors and steps)."""

    network: Network
    device: str
    precision: str
    compiled: bool
    compile_error: Optional[str]

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray: ...
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]: ...
    def get_weights(self, finite: bool = True) -> Weights: ...
    def set_weights(self, weights: Weights) -> None: ...
    def to_device(self, x: np.ndarray, y: np.ndarray) -> DeviceData: ...
    def setup_optimizer(self, config: TrainConfig) -> None: ...
    def get_training_state(self) -> dict[str, np.ndarray]: ...
    def set_training_state(self, state: dict[str, np.ndarray]) -> None: ...
    def warmup(self, data: DeviceData, batch_size: int, rows: int = 1) -> None: ...
    def train_steps(self, data: DeviceData, batches: np.ndarray, lr: float | np.ndarray,
                    augment: Optional[Any] = None) -> tuple[float, float]: ...
    def evaluate(self, data: DeviceData, batch_size: int, flip: bool = False) -> tuple[float, float]: ...


class Backend(Protocol):
    name: str

    def compile(self, network: Network, weights: Optional[Weights] = None, seed: int = 0,
                device: Optional[str] = None, precision: Precision = "default", compiled: Compile = "auto") -> Model:
        """Build `network`. Weights: the canonical dict, or `init_weights(network, seed)` when None.
        `seed` also seeds the dropout RNG. device: None picks a GPU when there is one, else the CPU.
        precision: see Precision (training passes train.precision; the cross-check its own).
        compiled: see Compile."""

    def describe(self) -> dict[str, Any]:
        """Versions and devices, for a run's environment file."""

    def device(self, name: Optional[str] = None) -> str:
        """The device a model compiled with `device=name` would run on, in words ('cpu',
        'cuda:0 (NVIDIA H100 80GB HBM3)'), without compiling anything. Raises SetupError when it is
        unknown or absent (a run asks this before it reuses a finished run)."""

    def set_threads(self, threads: Optional[int]) -> None:
        """Compute on the CPU with `threads` threads from now on, process-wide, as far as the framework
        allows; None: the backend's default for a possibly shared machine (netspec.training.threads). Never
        part of a run id; describe()'s "cpu_threads" says what it uses."""



class BackendBase:
    """What every backend's Backend object does alike, stated once: `compile` (weights from the seed
    when none are given, the model built on the resolved device) and `device`. A backend names its
    Model class and says how it resolves a device name and puts a device in words; `describe` and
    `set_threads` are its own."""

    name: str
    model_class: Callable[..., Model]
    """The backend's Model: called as (network, weights, seed, device, device words, precision, compiled)."""

    def resolve_device(self, name: Optional[str]) -> Any:
        """The framework's device for a name, chosen and checked by `request_device` (its rule, its errors)."""
        raise NotImplementedError

    def device_words(self, device: Any) -> str:
        """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
        raise NotImplementedError

    def compile(self, network: Network, weights: Optional[Weights] = None, seed: int = 0,
                device: Optional[str] = None, precision: Precision = "default", compiled: Compile = "auto") -> Model:
        where = self.resolve_device(device)
        weights = init_weights(network, seed) if weights is None else weights
        return self.model_class(network, weights, seed, where, self.device_words(where), precision, compiled)

    def device(self, name: Optional[str] = None) -> str:
        return self.device_words(self.resolve_device(name))

# ---- building layers: one builder signature in every backend ------------------------------------

@dataclass(frozen=True)
class Site:
    """Where a backend's builder puts a layer: `builder(layer, site) -> the framework's layer`, the one
    builder signature of every backend (a backend may extend Site with its own settings, as jax's adds
    how matmuls compute). Shapes are the spec's (C, H, W) or (F,), without the batch dimension."""

    index: int
    """The layer's position in the network."""
    input_shapes: tuple[Shape, ...]
    """The shape of each input (one for every layer that is not a merge)."""

    @property
    def name(self) -> str:
        """The layer's name among the framework's modules: its index, so state_dict names are canonical."""
        return str(self.index)

    @property
    def input_shape(self) -> Shape:
        return self.input_shapes[0]


BuilderT = TypeVar("BuilderT")


def builder_for(builders: Mapping[type, BuilderT], layer: LayerSpec, index: int, backend: str,
                table: Optional[str] = None) -> BuilderT:
    """The builder of `layer`'s type from a backend's table (or the exporter's: backend 'ONNX export',
    table its file); a missing one is one SetupError line naming the layer, its type and the backend."""
    builder = builders.get(type(layer))
    if builder is None:
        where = table or f"backends/{backend}/builders.py"
        raise SetupError(f"layer {index} ({layer.type}): the {backend} backend has no builder for {layer.type}; "
                         f"add one to {where} or use another backend")
    return builder


# ---- devices ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceRequest:
    """A device name parsed once for every backend: kind 'cpu' or 'gpu', and an index or None."""

    kind: Literal["cpu", "gpu"]
    index: Optional[int] = None


_DEVICE = re.compile(r"^(cpu|gpu|cuda)(?::(\d+))?$")


def parse_device(name: str) -> DeviceRequest:
    """'cpu', 'gpu', 'cuda', 'gpu:1', 'cuda:1' (any case, surrounding spaces ignored)."""
    match = _DEVICE.match(name.strip().lower())
    if match is None or (match.group(1) == "cpu" and match.group(2) not in (None, "0")):
        raise SetupError(f"unknown device {name!r}; use 'cpu', 'gpu' or 'gpu:N' (cuda and cuda:N are aliases)")
    kind = "cpu" if match.group(1) == "cpu" else "gpu"
    return DeviceRequest(kind, None if kind == "cpu" or match.group(2) is None else int(match.group(2)))


def request_device(name: Optional[str], gpu_count: int, framework: str) -> DeviceRequest:
    """The device a backend should use, checked against the `gpu_count` GPUs its framework sees:
    None picks a GPU when there is one (index None: the framework's default GPU), else the CPU. The
    same one-line SetupErrors in every backend for an unknown name, a GPU asked for and absent, and an
    index out of range."""
    if name is None:
        return DeviceRequest("gpu" if gpu_count else "cpu")
    request = parse_device(name)
    if request.kind == "gpu" and gpu_count == 0:
        raise SetupError(f"device {name!r} asked for, but {framework} sees no GPU here; use 'cpu' or leave the device unset")
    if request.kind == "gpu" and request.index is not None and request.index >= gpu_count:
        raise SetupError(f"device {name!r} asked for, but {framework} sees {gpu_count} GPU(s); use an index below {gpu_count}")
    return request


# ---- the registry -----------------------------------------------------------------------------

def _entry_points() -> dict[str, EntryPoint]:
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return installed or _declared_in_checkout()


# The checkout this module lies in: netspec/protocol/backend.py -> the repository root.
CHECKOUT = Path(__file__).resolve().parents[2]
# The backends are installed under netspec's own name (pyproject.toml maps the checkout's backends/ folder
# to this package), so installing netspec never claims a top-level `backends`.
BACKENDS_PACKAGE = "netspec_backends"


def _declared_in_checkout() -> dict[str, EntryPoint]:
    """The same table read from the pyproject.toml beside the package: a source checkout used without
    `pip install` (a machine where nothing can be installed) still finds its backends."""
    try:
        import tomllib  # Python 3.11+
        text = (CHECKOUT / "pyproject.toml").read_text()
        table = tomllib.loads(text)["project"]["entry-points"][ENTRY_POINT_GROUP]
    except (ImportError, OSError, KeyError, ValueError):
        return {}
    return {name: EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in table.items()}


def backend_names() -> tuple[str, ...]:
    """Every registered backend, installed or not, in a stable order (the order of pyproject.toml is
    not kept by importlib.metadata, so: torch first as the reference, then by name)."""
    names = sorted(_entry_points(), key=lambda n: (n != "torch", n))
    if not names:
        raise SetupError("no netspec backend is registered: install the package with `pip install -e '.[all]'`")
    return tuple(names)


def load_backend(name: str) -> Backend:
    """The backend registered as `name`; one clear error if unknown or its framework is missing."""
    points = _entry_points()
    if name not in points:
        raise SetupError(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}")
    module, _, attr = points[name].value.partition(":")
    try:
        map_checkout_backends()
        return getattr(import_module(module), attr or "BACKEND")
    except ImportError as err:
        raise SetupError(f"backend {name!r} needs a package that is not installed ({err.name}); run: "
                         f"{_INSTALL_HINT.format(name=name)}") from None


def from_torch(module: Any, input_shape: tuple[int, ...] | list[int], verify: bool = True) -> tuple[Network, Weights]:
    """A torch.nn.Module as a Network and its canonical weights, traced with torch.fx by the torch backend
    (backends/torch/fx_import.py) and, with `verify`, checked on every installed backend against the
    module itself (the largest differences printed). SpecError naming every call netspec does not express."""
    return load_backend("torch").from_torch(module, tuple(input_shape), verify)  # type: ignore[attr-defined]


def map_checkout_backends() -> None:
    """In a checkout that is not installed, `netspec_backends` is the folder backends/ beside netspec/:
    register it under that name once, as the installed distribution's package-dir mapping does."""
    if BACKENDS_PACKAGE in sys.modules or find_spec(BACKENDS_PACKAGE) is not None:
        return
    init = CHECKOUT / "backends" / "__init__.py"
    if init.is_file():
        spec = spec_from_file_location(BACKENDS_PACKAGE, init, submodule_search_locations=[str(init.parent)])
        if spec is not None and spec.loader is not None:
            package = module_from_spec(spec)
            sys.modules[BACKENDS_PACKAGE] = package
            spec.loader.exec_module(package)


def installed_backends() -> tuple[str, ...]:
    """The registered backends whose framework imports here."""
    out = []
    for name in backend_names():
        try:
            load_backend(name)
        except SetupError:
            continue
        out.append(name)
    return tuple(out)

"""The import's verification: every backend runs the imported spec with the imported weights, in eval
mode, on random inputs, against the original (onnxruntime on the file, or the torch module itself).

    check = verify(network, weights, original, backends)     # -> ImportCheck; check.ok, check.lines()

A backend agrees when its largest difference from the original's logits is at most IMPORT_RTOL of the
largest logit (at least 1). When one does not, the import is wrong somewhere: the layers are compared
with the original's own intermediate tensors (the numpy float64 reference, netspec.spec.reference, on
the imported weights) and the first layer that differs is named; when every layer agrees, the backend
itself parts from the reference, and netspec.check.bisection names where.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from netspec.check.bisection import locate
from netspec.errors import SpecError
from netspec.deploy.export import CHECK_RTOL, ExportCheck
from netspec.deploy.onnx_import import default_experiment, fixed_batch, import_onnx
from netspec.io import safe_output_dir, write_json
from netspec.protocol.backend import Backend
from netspec.spec.experiment import Experiment
from netspec.spec.network import Network
from netspec.spec.params import Weights, load_weights, save_weights

CHECK_BATCH = 8
IMPORT_RTOL = CHECK_RTOL
"""1e-4 of the largest logit: float32 sums in another order (another framework, Conv+BN folded or not)
differ by ~1e-6 of the logits' size; a wrong layer, layout or attribute differs by their whole size."""


@dataclass(frozen=True)
class Original:
    """What is compared with: the logits for a batch, and each layer's output (by netspec layer index) of
    the original's own computation, for naming the first layer that differs."""

    name: str
    """'onnxruntime' or 'the torch module'."""
    logits: Callable[[np.ndarray], np.ndarray]
    layers: Callable[[np.ndarray], dict[int, np.ndarray]]


BackendMatch = ExportCheck
"""A backend against the import's original: the export check's record and tolerance rule."""


@dataclass(frozen=True)
class ImportCheck:
    original: str
    matches: list[BackendMatch]
    parting: Optional[str]
    """Where the import parts from the original (None when every backend agrees)."""

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.matches)

    def lines(self) -> list[str]:
        out = [f"{m.backend} against {self.original} on {CHECK_BATCH} random inputs (eval mode): largest difference "
               f"{m.largest_difference:.1e} (largest logit {m.largest_logit:.2f}, tolerance "
               f"{m.tolerance:.1e}): {'agrees' if m.ok else 'DISAGREES'}" for m in self.matches]
        return out + ([self.parting] if self.parting else [])


def verify(network: Network, weights: Weights, original: Original, backends: list[Backend], seed: int = 0) -> ImportCheck:
    """Run every backend and the original on the same random inputs (see the module docstring)."""
    x = np.random.default_rng(seed).normal(size=(CHECK_BATCH, *network.input_shape)).astype(np.float32)
    expected = np.asarray(original.logits(x), np.float64).reshape(CHECK_BATCH, -1)
    largest = float(np.abs(expected).max())
    matches = []
    for backend in backends:
        got = np.asarray(backend.compile(network, weights).forward(x, train=False), np.float64)
        difference = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        matches.append(BackendMatch(backend.name, difference, largest))
    parting = None
    if not all(m.ok for m in matches):
        parting = first_parting(network, weights, original, x) or _backend_parting(network, backends, matches)
    return ImportCheck(original.name, matches, parting)


def first_parting(network: Network, weights: Weights, original: Original, x: np.ndarray) -> Optional[str]:
    """The first layer whose output (numpy reference on the imported weights) differs from the original's
    tensor for it, in one line; None when every layer the original shows agrees."""
    mine: dict[int, np.ndarray] = {}
    network.reference_forward(weights, x, activations=mine)
    theirs = original.layers(x)
    for node in network.nodes():
        if node.index not in theirs:
            continue
        a, b = mine[node.index].reshape(len(x), -1), np.asarray(theirs[node.index], np.float64).reshape(len(x), -1)
        if a.shape != b.shape:
            return f"layer {node.index} ({node.layer.type}) gives shape {a.shape[1:]} per input, the original {b.shape[1:]}"
        scale = max(1.0, float(np.abs(b).max()))
        difference = float(np.abs(a - b).max())
        if difference > IMPORT_RTOL * scale:
            return (f"the import parts from {original.name} at layer {node.index} ({node.layer.type}): largest difference "
                    f"{difference:.1e} of its output (largest value {scale:.2f}); that layer's import is wrong")
    return None


def _backend_parting(network: Network, backends: list[Backend], matches: list[BackendMatch]) -> Optional[str]:
    """Every layer agrees with the original in numpy: a backend computes the spec wrongly; where it parts
    from the reference backend (the first one), by the cross-check's bisection."""
    bad = [b for b, m in zip(backends, matches) if not m.ok]
    good = [b for b, m in zip(backends, matches) if m.ok]
    if not good:
        return f"every layer agrees with the original in numpy; {', '.join(b.name for b in bad)} compute(s) the spec wrongly"
    parting = locate(network, good[0], bad[0])
    return parting.line(good[0].name, bad[0].name) if parting else None


def onnx_original(model: Any, tensors: dict[int, str]) -> Original:
    """onnxruntime on the ModelProto: its logits, and each layer's tensor exposed as an extra output."""
    import onnx
    import onnxruntime

    def session(outputs: list[str]) -> Any:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        present = {o.name for o in copy.graph.output}
        copy.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in outputs if n not in present)
        return onnxruntime.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])

    input_name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    output_name = model.graph.output[0].name
    batch = fixed_batch(model)

    def run(names: list[str], x: np.ndarray) -> list[np.ndarray]:
        """The tensors for x; a file that fixes its batch size b runs b rows at a time (the last block
        filled up with its first row, the extra rows dropped)."""
        if batch is None:
            return session(names).run(names, {input_name: x})
        s, blocks = session(names), []
        for start in range(0, len(x), batch):
            block = x[start:start + batch]
            filled = np.concatenate([block, np.repeat(block[:1], batch - len(block), axis=0)])
            blocks.append([v[:len(block)] for v in s.run(names, {input_name: filled})])
        return [np.concatenate(parts) for parts in zip(*blocks)]

    def logits(x: np.ndarray) -> np.ndarray:
        return run([output_name], x)[0]

    def layers(x: np.ndarray) -> dict[int, np.ndarray]:
        names = list(tensors.values())
        return dict(zip(tensors, run(names, x)))

    return Original("onnxruntime", logits, layers)


def cross_layer_note(check: ImportCheck) -> str:
    """The verdict line printed after the per-backend lines."""
    worst = max((m.largest_difference for m in check.matches), default=0.0)
    return (f"verified: every backend agrees with {check.original} (largest difference {worst:.1e})" if check.ok
            else f"the import does not compute what {check.original} does")


WEIGHTS_FILE = "weights.npz"


def import_and_verify(model_path: str | Path, out_dir: str | Path, backends: list[Backend], name: Optional[str] = None,
                      log: Callable[[str], None] = print) -> tuple[Path, ImportCheck]:
    """`netspec import`: read the ONNX file, write DIR/<name>.json (an experiment when the file carries
    netspec's or the network is CIFAR-10-shaped, else the network) and DIR/weights.npz, read both back and
    verify them on every backend. Only a verified import replaces DIR's files: a failed one leaves DIR
    as it was. Returns the spec's path and the check."""
    if name is not None and _safe_name(name) != name:
        raise SpecError(f"--name {name!r}: a spec's name is letters, digits, '_', '-' and '.' (not first), at most 100")
    imported = import_onnx(model_path, log)
    name = name or (imported.experiment.name if imported.experiment else _safe_name(Path(model_path).stem))
    out = safe_output_dir(out_dir)
    # Written into a staging folder, read back and verified there; only a verified pair replaces DIR's
    # files (os.replace swaps a link at the name rather than following it). A failed import leaves
    # nothing new in DIR and loses nothing that was already there.
    staging = safe_output_dir(out, f".import-{os.getpid()}")
    try:
        staged_spec, staged_weights = staging / f"{name}.json", staging / WEIGHTS_FILE
        experiment = imported.experiment or default_experiment(name, imported.network)
        save_weights(imported.weights, staged_weights)
        if experiment is not None:
            write_json(experiment.model_copy(update={"name": name}), staged_spec)
            network = Experiment.load(staged_spec).network  # read back, validated
        else:
            write_json(imported.network, staged_spec)
            network = Network.load(staged_spec)
        weights = load_weights(staged_weights, network)
        check = verify(network, weights, onnx_original(imported.model, imported.tensors), backends)
        spec_path, weights_path = out / f"{name}.json", out / WEIGHTS_FILE
        if check.ok:
            os.replace(staged_weights, weights_path)  # first: a spec never names weights that are not there
            os.replace(staged_spec, spec_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return spec_path, check


def _safe_name(stem: str) -> str:
    """A file stem as an experiment name: letters, digits, '_', '-', '.' (not first), at most 100."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".")[:100]
    return cleaned or "imported"

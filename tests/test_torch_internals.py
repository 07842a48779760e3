"""The hand-written BatchNorm and Dropout of the torch backend against PyTorch's own.

BatchNorm is compared number by number with torch.nn.BatchNorm1d/2d given identical weights; Dropout
by its statistics (masks come from a different RNG draw order and can never match).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from backends.torch.layers import BatchNorm, Dropout, Dropout2d

STEPS = 3  # training steps before the running statistics and the eval pass are compared


def _pair(shape: tuple[int, ...], momentum: float) -> tuple[BatchNorm, nn.Module]:
    """Ours and torch's, with the same random affine parameters and running statistics."""
    channels = shape[1]
    ours = BatchNorm(channels, momentum=momentum)
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(channels, momentum=momentum)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            value = torch.randn(channels, generator=gen)
            getattr(ours, name).copy_(value)
            getattr(ref, name).copy_(value)
        value = torch.rand(channels, generator=gen) + 0.5
        ours.running_var.copy_(value)
        ref.running_var.copy_(value)
    return ours, ref


def _step(module: nn.Module, x: Tensor, grad: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
    """One forward and backward; returns the output and the gradients, as float64."""
    module.zero_grad(set_to_none=True)
    x = x.to(dtype).clone().requires_grad_()
    out = module(x)
    out.backward(grad.to(dtype))
    return {"out": out, "grad_x": x.grad, "grad_weight": module.weight.grad, "grad_bias": module.bias.grad}


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {name: module.state_dict()[name] for name in ("running_mean", "running_var", "num_batches_tracked")}


def _assert_close(ours: dict[str, Tensor], ref: dict[str, Tensor], atol: float, rtol: float, where: str) -> None:
    for name in ref:
        torch.testing.assert_close(ours[name].double(), ref[name].double(), atol=atol, rtol=rtol,
                                   msg=lambda m: f"{where}, {name}: {m}")


BN_CASES = [
    ((2, 5), 0.1, 0.0), ((7, 16), 0.1, 0.0), ((64, 32), 0.3, 0.0), ((64, 32), 1.0, 0.0), ((16, 8), 0.1, 1000.0),
    ((2, 3, 4, 4), 0.1, 0.0), ((5, 4, 3, 7), 0.5, 0.0), ((3, 6, 5, 5), 0.1, 1000.0), ((1, 3, 2, 2), 0.1, 0.0),
]


@pytest.mark.parametrize("shape, momentum, offset", BN_CASES)
def test_batch_norm_matches_torch(shape: tuple[int, ...], momentum: float, offset: float) -> None:
    """Train-mode output and gradients per step, running statistics after the steps, eval output and
    gradients: against torch's float32 layer (its own rounding, looser at a large mean) and against
    its float64 layer (the exact answer, to float32 precision)."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(shape, generator=gen) * 3 + offset for _ in range(STEPS + 1)]
    grads = [torch.randn(shape, generator=gen) for _ in range(STEPS + 1)]
    ours, ref32 = _pair(shape, momentum)
    ref64 = _pair(shape, momentum)[1].double()
    # torch's float32 layer loses ~1e-4 to cancellation at a mean of 1000 (ours does not: see layers.py).
    tol32 = 1e-5 if offset == 0 else 2e-3
    for step in range(STEPS + 1):
        training = step < STEPS
        for module in (ours, ref32, ref64):
            module.train(training)
        got = _step(ours, xs[step], grads[step], torch.float32)
        where = f"{'train step ' + str(step) if training else 'eval'}"
        _assert_close(got, _step(ref32, xs[step], grads[step], torch.float32), tol32, 1e-4, where + " vs float32")
        _assert_close(got, _step(ref64, xs[step], grads[step], torch.float64), 1e-5, 1e-5, where + " vs float64")
        _assert_close(_state(ours), _state(ref64), 1e-5, 1e-5, where + " running statistics")
    assert int(ours.num_batches_tracked) == STEPS


def test_batch_norm_buffers_and_parameters() -> None:
    bn = BatchNorm(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == torch.int64
    assert list(bn.state_dict()) == list(nn.BatchNorm1d(4).state_dict())


@pytest.mark.parametrize("shape", [(1, 5), (1, 5, 1, 1)])
def test_batch_norm_one_value_per_channel_is_an_error(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(5)
    with pytest.raises(ValueError) as expected:
        ref(x)
    bn = BatchNorm(5)
    with pytest.raises(ValueError) as got:
        bn(x)
    assert str(got.value) == str(expected.value)  # word for word, with the input size
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_var, torch.ones(5))
    bn.eval()
    assert torch.isfinite(bn(x)).all()  # one sample is fine in evaluation


def test_batch_norm_rejects_other_ranks() -> None:
    with pytest.raises(ValueError, match=r"\(N, F\) or \(N, C, H, W\)"):
        BatchNorm(3)(torch.randn(2, 3, 4))


# -- Dropout ----------------------------------------------------------------------------------------


def _dropped(module: nn.Module, shape: tuple[int, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    """(input, output) in training mode, with an input that has no zeros."""
    module.generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed + 1)) + 0.5
    return x, module.train()(x)


@pytest.mark.parametrize("cls, shape", [(Dropout, (200, 500)), (Dropout, (20, 10, 25, 20)), (Dropout2d, (100, 100, 3, 3))])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.7])
def test_dropout_statistics(cls: type[nn.Module], shape: tuple[int, ...], p: float) -> None:
    x, out = _dropped(cls(p), shape)
    kept = out != 0
    # 100,000 elements (10,000 channels for Dropout2d): the keep rate's std is below 0.005.
    assert abs(kept.double().mean().item() - (1 - p)) < 0.02
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))  # inverted scaling, exactly the kept values
    assert abs(out.mean().item() / x.mean().item() - 1) < 0.05  # the mean is preserved


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_dropout2d_masks_whole_channels_and_dropout_does_not(p: float) -> None:
    shape = (8, 16, 5, 5)
    _, channel = _dropped(Dropout2d(p), shape)
    per_channel = (channel != 0).flatten(2)
    assert (per_channel.all(-1) | ~per_channel.any(-1)).all(), "a Dropout2d mask varies over H, W"
    assert (~per_channel.any(-1)).any(), "no channel was dropped"
    _, element = _dropped(Dropout(p), shape)
    per_channel = (element != 0).flatten(2)
    assert (per_channel.any(-1) & ~per_channel.all(-1)).any(), "element-wise Dropout dropped whole channels only"


@pytest.mark.parametrize("cls", [Dropout, Dropout2d])
def test_dropout_identity_in_eval_and_at_zero_rate(cls: type[nn.Module]) -> None:
    x = torch.randn(4, 3, 2, 2)
    assert cls(0.5).eval()(x) is x
    assert cls(0.0).train()(x) is x  # p = 0: no mask, no copy, no RNG draw


@pytest.mark.parametrize("cls", [Dropout, Dropout2d])
def test_dropout_gradient_is_the_mask(cls: type[nn.Module]) -> None:
    module = cls(0.4)
    module.generator = torch.Generator().manual_seed(3)
    x = torch.rand(6, 4, 3, 3, requires_grad=True)
    out = module.train()(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / 0.6)


def test_dropout_same_generator_seed_same_mask() -> None:
    first = _dropped(Dropout(0.5), (50, 50), seed=7)[1]
    assert torch.equal(first, _dropped(Dropout(0.5), (50, 50), seed=7)[1])
    assert not torch.equal(first, _dropped(Dropout(0.5), (50, 50), seed=8)[1])


def test_dropout_rejects_bad_rate() -> None:
    with pytest.raises(ValueError, match="outside"):
        Dropout(1.0)


# -- the backend does not borrow torch's own layers ----------------------------------------------------

_TORCH_NAMESPACES = {"torch", "nn", "F", "functional", "torch.nn", "torch.nn.functional"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _borrowed(tree: ast.AST) -> list[str]:
    """torch's BatchNorm / Dropout, as an attribute of a torch namespace or imported from one."""
    def forbidden(name: str) -> bool:
        lowered = name.lower()
        return "batchnorm" in lowered or "batch_norm" in lowered or "dropout" in lowered

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and forbidden(node.attr) and _dotted(node.value) in _TORCH_NAMESPACES:
            found.append(f"line {node.lineno}: {_dotted(node)}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names if forbidden(a.name)]
    return found


def test_torch_backend_never_uses_torch_batch_norm_or_dropout() -> None:
    assert _borrowed(ast.parse("import torch\nx = torch.nn.functional.dropout(y)\nm = nn.BatchNorm2d(3)"))
    folder = Path(__file__).resolve().parents[1] / "backends" / "torch"
    sources = sorted(folder.rglob("*.py"))
    assert sources
    offenders = {str(p.relative_to(folder)): found for p in sources if (found := _borrowed(ast.parse(p.read_text())))}
    assert not offenders, offenders

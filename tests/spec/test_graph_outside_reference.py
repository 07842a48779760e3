"""Graph meaning checked against references independent of netspec's graph code.

tests/spec/test_graph.py and the random-graph tests compare backends with a numpy reference that resolves
inputs through the same Network.nodes(): a bug there (inputs sorted, so Concat of [b, a] joins [a, b])
moves both sides alike. Here the reference is a torch.nn module wired by hand, and the shape rules are
checked against what PyTorch itself accepts and refuses (torch.cat, nn.Conv2d, nn.MaxPool2d,
nn.AvgPool2d), with netspec's one deliberate difference stated: Add takes one shape only, where torch
broadcasts (C, H, W) + (C, 1, 1).

Tolerance: float64 on both sides, rtol=atol=1e-10 (summation order only).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend

torch = pytest.importorskip("torch", reason="torch.nn is the reference")
nn = torch.nn

SHAPE = (2, 5, 5)
OUT_OF_ORDER = ns.Network(input_shape=SHAPE, layers=[
    {"type": "Conv2d", "id": "a", "out_channels": 3, "kernel_size": 3, "padding": 1},            # 0
    {"type": "Conv2d", "id": "b", "inputs": ["input"], "out_channels": 2, "kernel_size": 1},     # 1
    {"type": "Concat", "inputs": ["b", "a"]},                                                    # 2: by id, later first
    {"type": "Concat", "inputs": [2, 1, "input"]},                                               # 3: by index and 'input'
    {"type": "Conv2d", "out_channels": 3, "kernel_size": 1},                                     # 4
    {"type": "Add", "inputs": [4, "a", 0]},                                                      # 5: one input twice
    {"type": "Concat", "inputs": [5, "b"], "id": "c"},                                           # 6
    {"type": "Flatten"},                                                                         # 7
    {"type": "Linear", "out_features": 4},                                                       # 8
])


class HandWired(nn.Module):
    """OUT_OF_ORDER written as plain torch.nn, each input wired by hand (no netspec graph code)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)
        self.d = nn.Conv2d(2 + 3 + 2 + 2, 3, 1)
        self.out = nn.Linear((3 + 2) * 25, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), self.b(x)
        joined = torch.cat([torch.cat([b, a], 1), b, x], 1)
        summed = self.d(joined) + a + a
        return self.out(torch.flatten(torch.cat([summed, b], 1), 1))


MODULE_OF_LAYER = {"0": "a", "1": "b", "4": "d", "8": "out"}


@pytest.fixture(scope="module", params=installed_backends())
def backend(request: pytest.FixtureRequest):
    return load_backend(request.param)


def test_merges_with_inputs_out_of_order_match_a_hand_wired_torch_module(backend) -> None:
    reference = HandWired().double()
    weights = {f"{index}.{name}": t.detach().numpy().astype(np.float32)
               for index, module in MODULE_OF_LAYER.items() for name, t in getattr(reference, module).state_dict().items()}
    assert set(weights) == set(OUT_OF_ORDER.param_infos()), "the hand-wired module owns other tensors than the spec"
    with torch.no_grad():  # the reference holds the float32-rounded weights netspec gets
        for key, value in weights.items():
            index, name = key.split(".")
            getattr(getattr(reference, MODULE_OF_LAYER[index]), name).copy_(torch.from_numpy(value.astype(np.float64)))
    x = np.random.default_rng(0).standard_normal((3, *SHAPE)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.astype(np.float64))).numpy()
    model = backend.compile(OUT_OF_ORDER, weights, seed=0, device="cpu", precision="float64")
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-10, atol=1e-10)


def test_concat_order_is_the_order_listed_in_numpy_wired_by_hand(backend) -> None:
    """Identity branches: the output is the input's channels in the listed order, exactly."""
    network = ns.Network(input_shape=(3, 2, 2), layers=[
        {"type": "Identity", "id": "p"}, {"type": "Scale", "factor": 2.0, "inputs": ["input"], "id": "q"},
        {"type": "Concat", "inputs": ["q", "input", 0]}])
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 2)).astype(np.float32)
    model = backend.compile(network, {}, seed=0, device="cpu", precision="float64")
    np.testing.assert_array_equal(model.forward(x), np.concatenate([2 * x, x, x], axis=1))


SHAPE_PAIRS = [((3, 4, 4), (3, 4, 4)), ((3, 4, 4), (3, 1, 1)), ((3, 1, 1), (3, 4, 4)), ((3, 4, 4), (1, 4, 4)),
               ((3, 4, 4), (2, 4, 4)), ((3, 4, 4), (3, 4, 3)), ((6,), (6,)), ((6,), (1,)), ((6,), (4,))]


def merge_network(kind: str, a: tuple[int, ...], b: tuple[int, ...]) -> ns.Network:
    """A network whose merge layer takes branches of shapes a and b, each a Conv2d (or Linear) of a
    common input large enough for both."""
    big = (4, *(max(u, v) for u, v in zip(a[1:], b[1:]))) if len(a) == 3 else (8,)
    return ns.Network(input_shape=big, layers=[branch(big, a, "x"), branch(big, b, "y"), {"type": kind, "inputs": ["x", "y"]}])


def branch(big: tuple[int, ...], target: tuple[int, ...], name: str) -> dict:
    if len(target) == 1:
        return {"type": "Linear", "out_features": target[0], "inputs": ["input"], "id": name}
    kernel = (big[1] - target[1] + 1, big[2] - target[2] + 1)
    return {"type": "Conv2d", "out_channels": target[0], "kernel_size": kernel, "inputs": ["input"], "id": name}


def netspec_accepts(kind: str, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        merge_network(kind, a, b)
    except ValueError:
        return False
    return True


def torch_accepts(op, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        op(torch.zeros(2, *a), torch.zeros(2, *b))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("a,b", SHAPE_PAIRS)
def test_concat_accepts_exactly_what_torch_cat_accepts(a, b) -> None:
    assert netspec_accepts("Concat", a, b) == torch_accepts(lambda u, v: torch.cat([u, v], 1), a, b)


@pytest.mark.parametrize("a,b", SHAPE_PAIRS)
def test_add_takes_one_shape_where_torch_would_broadcast(a, b) -> None:
    """torch broadcasts (C,H,W) + (C,1,1); netspec's Add refuses it (one shape: no silent broadcast in
    a residual) and refuses everything torch refuses."""
    torch_ok = torch_accepts(torch.add, a, b)
    assert netspec_accepts("Add", a, b) == (torch_ok and a == b)
    if a != b and torch_ok:
        with pytest.raises(ValueError, match="Add needs inputs of one shape"):
            merge_network("Add", a, b)


WINDOWS = [dict(k=k, s=s, p=p) for k, s, p in itertools.product([1, 2, 3, 5, (2, 4)], [1, 2, (3, 1)], [0, 1, 2, (0, 2)])]


@pytest.mark.parametrize("kind", ["Conv2d", "MaxPool2d", "AvgPool2d"])
def test_window_shapes_accepted_and_refused_as_torch(kind: str) -> None:
    """Every kernel/stride/padding combination on a small input: netspec builds the network exactly when
    torch's module runs, and gives torch's output shape."""
    shape = (2, 4, 3)
    for w in WINDOWS:
        fields = {"kernel_size": w["k"], "stride": w["s"], "padding": w["p"]}
        if kind == "Conv2d":
            fields["out_channels"] = 3
            module = nn.Conv2d(2, 3, w["k"], stride=w["s"], padding=w["p"])
        else:
            module = getattr(nn, kind)(w["k"], stride=w["s"], padding=w["p"])
        try:
            expected = tuple(module(torch.zeros(1, *shape)).shape[1:])
        except RuntimeError:
            expected = None
        try:
            got = ns.Network(input_shape=shape, layers=[{"type": kind, **fields}]).nodes()[-1].output_shape
        except ValueError:
            got = None
        assert got == expected, f"{kind} {fields} on {shape}: netspec {got}, torch {expected}"

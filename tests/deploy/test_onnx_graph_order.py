"""ONNX import's one line for a graph out of order names each node by its name, or, for a node without
one (names are optional in ONNX), by its place in the graph and its operator. Graphs built with
onnx.helper, so the file is exactly the one described."""
from __future__ import annotations

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx", reason="ONNX import needs the onnx package (netspec[export])")

from netspec.deploy.onnx_import import import_graph  # noqa: E402
from netspec.errors import SpecError  # noqa: E402


def _model(names: tuple[str, str, str]) -> object:
    """X -> Sigmoid -> b -> Relu -> a -> Tanh -> Y, listed with the Relu first (it takes b before b is made)."""
    helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
    nodes = [helper.make_node("Relu", ["b"], ["a"], name=names[0]),
             helper.make_node("Sigmoid", ["X"], ["b"], name=names[1]),
             helper.make_node("Tanh", ["a"], ["Y"], name=names[2])]
    graph = helper.make_graph(nodes, "misordered", [helper.make_tensor_value_info("X", float32, [1, 4])],
                              [helper.make_tensor_value_info("Y", float32, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nodes_without_names_are_named_by_place_and_operator() -> None:
    with pytest.raises(SpecError) as err:
        import_graph(_model(("", "", "")), Path("m.onnx"))
    assert str(err.value) == ("m.onnx: node 0 (Relu) takes 'b', which node 1 (Sigmoid) makes after it: the graph has a "
                              "cycle or is not in order; ONNX graphs list each node after its inputs")


def test_named_nodes_are_named_by_their_names() -> None:
    with pytest.raises(SpecError, match=r"^m.onnx: node 'relu' \(Relu\) takes 'b', which node 'sigmoid' \(Sigmoid\) makes"):
        import_graph(_model(("relu", "sigmoid", "tanh")), Path("m.onnx"))

"""A picture of a network's graph: Mermaid text (for Markdown viewers) and a PNG or SVG drawn with
matplotlib (no Graphviz binary). Layers stand in one column in order; a layer that takes anything but
the one before it (a residual's Add) gets an arc at the side from each of its other inputs."""
from __future__ import annotations

from pathlib import Path

from netspec.errors import SpecError
from netspec.io import atomic_write, write_bytes_atomic
from netspec.runs.plots import pyplot
from netspec.spec.network import NETWORK_INPUT, Network, Node


def node_label(node: Node) -> str:
    """'3 Conv2d 128 (128, 16, 16)': index, type, the main size, output shape."""
    layer = node.layer
    size = getattr(layer, "out_channels", None) or getattr(layer, "out_features", None)
    name = f"{node.index} {layer.type}" + (f" {size}" if size else "") + (f" [{layer.id}]" if layer.id else "")
    return f"{name} {tuple(node.output_shape)}"


def mermaid(network: Network) -> str:
    """The graph as Mermaid flowchart text."""
    lines = ["graph TD", f'  in["input {tuple(network.input_shape)}"]']
    for node in network.nodes():
        lines.append(f'  n{node.index}["{node_label(node)}"]')
        for i in node.inputs:
            lines.append(f"  {'in' if i == NETWORK_INPUT else f'n{i}'} --> n{node.index}")
    return "\n".join(lines) + "\n"


def draw(network: Network, path: str | Path) -> Path:
    """Write the graph as a figure; the format follows the suffix (.png or .svg)."""
    from matplotlib.patches import FancyArrowPatch
    plt = pyplot()

    path = Path(path)
    nodes = network.nodes()
    rows = len(nodes) + 1
    fig, ax = plt.subplots(figsize=(5.5, 0.42 * rows + 0.6))
    y = {NETWORK_INPUT: rows - 1, **{n.index: rows - 2 - n.index for n in nodes}}
    labels = {NETWORK_INPUT: f"input {tuple(network.input_shape)}", **{n.index: node_label(n) for n in nodes}}
    for index, label in labels.items():
        merge = index != NETWORK_INPUT and network.layers[index].merges
        ax.text(0, y[index], label, ha="center", va="center", fontsize=8, family="monospace",
                bbox={"boxstyle": "round,pad=0.3", "fc": "#fde2c8" if merge else "#dbe8f6", "ec": "#555"})
    for node in nodes:
        for source in node.inputs:
            skip = y[source] - y[node.index] > 1
            ax.add_patch(FancyArrowPatch((0.9 if skip else 0, y[source] - (0 if skip else 0.3)),
                                         (0.9 if skip else 0, y[node.index] + (0 if skip else 0.3)),
                                         connectionstyle="arc3,rad=-0.4" if skip else "arc3",
                                         arrowstyle="-|>", mutation_scale=8, color="#c0392b" if skip else "#555"))
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-0.8, rows - 0.2)
    ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=120))
    plt.close(fig)
    return path


def write_diagram(network: Network, path: str | Path) -> list[Path]:
    """The figure at `path` (.png or .svg) and its Mermaid text beside it (.mmd)."""
    path = Path(path)
    if path.suffix not in (".png", ".svg"):
        raise SpecError(f"--diagram {path}: the figure is a .png or .svg file; e.g. --diagram resnet9.png")
    mmd = path.with_suffix(".mmd")
    write_bytes_atomic(mmd, mermaid(network).encode())
    return [draw(network, path), mmd]

"""A whole training step (forward, backward, Adam, the running sums) captured once as a CUDA graph
and replayed per step: PyTorch's "whole-network capture".

Why: on an H100 a compiled torch step of the report's MLP cost ~1.5 ms of host time (dynamo guards,
autograd, the optimizer's Python, ~100 launches) for ~0.1 ms of GPU work, and the CNN's bf16 epoch was no
faster than tf32 because the host, not the GPU, set the pace. A replay is one launch. torch.compile's
own CUDA graphs ('reduce-overhead') cover only the forward and backward graphs, not Adam, and need
inductor, which is not always there (it failed on the netspec MLP under torch 2.11); this capture
works with or without it.

A graph replays fixed addresses, so everything a step reads or writes is a static tensor: the data
split, the batch's row numbers (`index`), the dropout keys of the step (`keys`, one per layer), the parameters, their gradients,
Adam's state with a tensor learning rate, the running statistics and the sums. The model refills
`index` and `keys` before each replay and keeps every other tensor in place (weights and Adam state
are restored with copy_, never replaced).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

WARMUP_STEPS = 3
"""Eager steps on a side stream before capture, as PyTorch's docs prescribe: they build cuBLAS/cuDNN
workspaces, compile the step (torch.compile) and create Adam's state, none of which may happen inside a
capture. The model restores its state afterwards."""


@dataclass
class StepGraph:
    """A captured step and the static inputs it reads: copy a batch's rows into `index` and its
    dropout keys into `keys`, then `replay()`."""

    graph: Any  # torch.cuda.CUDAGraph (or, in CPU tests, anything with replay())
    key: tuple[int, ...]
    """What the capture baked in besides the model: the data's addresses and the batch size."""
    index: Tensor
    keys: Tensor

    def run(self, index: Tensor, keys: Tensor) -> None:
        self.index.copy_(index)
        self.keys.copy_(keys)
        self.graph.replay()


def graph_key(x: Tensor, y: Tensor, batch_size: int) -> tuple[int, ...]:
    return (x.data_ptr(), y.data_ptr(), tuple(x.shape)[0], batch_size)


def capture(step: Callable[[Tensor, Tensor], None], index: Tensor, keys: Tensor) -> Any:
    """Warm `step(index, keys)` up on a side stream, then record one call of it as a CUDA graph."""
    stream = torch.cuda.Stream(device=index.device)
    stream.wait_stream(torch.cuda.current_stream(index.device))
    with torch.cuda.stream(stream):
        for _ in range(WARMUP_STEPS):
            step(index, keys)
    torch.cuda.current_stream(index.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(index, keys)
    return graph

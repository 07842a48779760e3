"""The spec's semantics as plain numpy, in float64: what each layer computes, written as simply as it
can be (loops where loops are clearest), never for speed.

Each layer class in netspec/spec/layers/ states its meaning with these kernels (`LayerSpec.reference`);
the contract suite's layer harness, the random-network tests and the exporter's checks compare every
backend with them. They share no code with any backend, so a bug in one is not a bug in both.
Arguments are already pairs where a spec allows an int or a pair (netspec.spec.layers.pair).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

Pair = tuple[int, int]


def linear(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> np.ndarray:
    return x @ weight.T + (0.0 if bias is None else bias)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray], stride: Pair,
           pads: tuple[Pair, Pair]) -> np.ndarray:
    """NCHW x, OIHW weight, zero padding ((top, bottom), (left, right))."""
    sh, sw = stride
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    _, _, kh, kw = weight.shape
    out_h, out_w = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nihw,oihw->no", patch, weight)
    return out + (0.0 if bias is None else bias[None, :, None, None])


def max_pool2d(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair) -> np.ndarray:
    """-inf padding (a padded position never wins)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    out_h, out_w = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.empty((*x.shape[:2], out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return out


def avg_pool2d(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, count_include_pad: bool) -> np.ndarray:
    """Zero padding; the mean over the whole window, or over its cells inside the input."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    inside = np.pad(np.ones(x.shape[2:]), ((ph, ph), (pw, pw)))
    out_h, out_w = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.empty((*x.shape[:2], out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            window = (slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
            count = kh * kw if count_include_pad else inside[window].sum()
            out[:, :, i, j] = xp[(slice(None), slice(None), *window)].sum(axis=(2, 3)) / count
    return out


def gelu(x: np.ndarray, tanh: bool = False) -> np.ndarray:
    if tanh:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _channels(x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axes reduced per channel of (N, F) or (N, C, H, W), and the view that broadcasts a (C,) vector."""
    return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))


def batch_norm_train(x: np.ndarray, weight, bias, running_mean, running_var, momentum: float, eps: float):
    """(output, new running_mean, new running_var): normalized with the biased batch variance;
    running = (1 - momentum) * running + momentum * batch, with the unbiased variance."""
    axes, view = _channels(x)
    n = x.size // x.shape[1]
    mean, var = x.mean(axes), x.var(axes)
    out = (x - mean.reshape(view)) / np.sqrt(var + eps).reshape(view) * weight.reshape(view) + bias.reshape(view)
    return (out, (1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * n / (n - 1))


def batch_norm_eval(x: np.ndarray, weight, bias, running_mean, running_var, eps: float) -> np.ndarray:
    view = _channels(x)[1]
    return (x - running_mean.reshape(view)) / np.sqrt(running_var + eps).reshape(view) * weight.reshape(view) \
        + bias.reshape(view)


def dropout(x: np.ndarray, p: float, keep: np.ndarray) -> np.ndarray:
    """Inverted dropout with a given boolean keep-mask (broadcast against x): kept values / (1 - p)."""
    return np.where(keep, x / (1.0 - p), 0.0)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy of integer labels, float64."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -log_probs[np.arange(len(y)), y]

"""Hand-written BatchNorm and Dropout for the torch backend, with PyTorch's exact semantics.

None of torch.nn.BatchNorm*, torch.nn.Dropout*, F.batch_norm or F.dropout* is used here: the point of
the project is that these layers are written out and checked against PyTorch's own (tests/).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from netspec.protocol.counter_hash import keep_threshold


def _channel_view(x: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For (N, F) or (N, C, H, W): the dims reduced per channel and the shape that broadcasts a (C,)
    vector against x."""
    if x.dim() == 2:
        return (0,), (1, -1)
    if x.dim() == 4:
        return (0, 2, 3), (1, -1, 1, 1)
    raise ValueError(f"BatchNorm expects a (N, F) or (N, C, H, W) input, got input size {x.size()}")


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode normalization with a hand-written backward; returns (out, batch mean, biased var).

    Why not plain autograd over var_mean/sub/mul/addcmul: on CPU, var_mean (Welford) is slow, and
    every full-size temporary costs a fresh allocation whose first touch outweighs the arithmetic.
    Here each pass allocates one full-size buffer and reuses it in place, and only x is kept for
    backward (as torch's own BatchNorm does).

    Precision: x is centred on `shift`, its float32 mean, which is off by up to half an ulp of the
    mean (6e-5 at a mean of 1000); `resid`, the mean of the centred values, corrects it (the corrected
    two-pass algorithm). Every full-size product then works on O(std) values, so an input with a
    large mean loses nothing to cancellation, forward or backward.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        dims, view = _channel_view(x)
        n = x.numel() // x.shape[1]
        shift = x.mean(dims)
        buf = x - shift.view(view)
        resid = buf.mean(dims)
        var = buf.square_().mean(dims).sub_(resid * resid).clamp_min_(0.0)
        torch.sub(x, shift.view(view), out=buf)  # centre again: the buffer held the squares
        invstd = torch.rsqrt(var + eps)
        k = weight * invstd
        # out = (x - shift - resid) * k + bias, with resid folded into the per-channel constant.
        out = torch.addcmul((bias - resid * k).view(view), buf, k.view(view), out=buf)
        ctx.save_for_backward(x, weight, shift, resid, invstd)
        ctx.dims, ctx.view, ctx.count = dims, view, n
        mean = shift + resid
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, *_: Tensor) -> tuple[Optional[Tensor], ...]:
        x, weight, shift, resid, invstd = ctx.saved_tensors
        dims, view, n = ctx.dims, ctx.view, ctx.count
        grad_bias = grad.sum(dims)
        buf = x - shift.view(view)
        grad_weight = buf.mul_(grad).sum(dims).sub_(resid * grad_bias).mul_(invstd)  # sum(grad * x_hat)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dx = k * (g - mean(g) - x_hat * mean(g * x_hat)), k = weight * invstd,
            # x_hat = (x - shift - resid) * invstd: two fused multiply-adds on the reused buffer.
            k = weight * invstd
            c = -k * invstd * grad_weight / n
            grad_x = torch.sub(x, shift.view(view), out=buf)
            torch.addcmul((-k * grad_bias / n - c * resid).view(view), grad_x, c.view(view), out=grad_x)
            grad_x.addcmul_(grad, k.view(view))
        return grad_x, grad_weight, grad_bias, None


class BatchNorm(nn.Module):
    """BatchNorm over (N, F) or (N, C, H, W), picked from the input's rank; PyTorch's conventions.

    Training normalizes with the biased batch variance and updates
    running = (1 - momentum) * running + momentum * batch with the unbiased variance for running_var;
    evaluation normalizes with the running statistics. Parameter and buffer names match
    torch.nn.BatchNorm*d, so state_dict names are the canonical ones.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
                 train_weight: bool = True) -> None:
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        # affine=False: constant scale 1 and shift 0, kept out of the state_dict (PyTorch has none);
        # train_weight=False: the scale is a buffer (in the state_dict, never trained: airbench's).
        if affine and train_weight:
            self.weight = nn.Parameter(torch.ones(num_features))
        else:
            self.register_buffer("weight", torch.ones(num_features), persistent=affine)
        if affine:
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_buffer("bias", torch.zeros(num_features), persistent=False)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x: Tensor) -> Tensor:
        view = _channel_view(x)[1]  # also rejects other ranks
        dtype = x.dtype
        if dtype in (torch.bfloat16, torch.float16):
            x = x.float()  # bf16 compute (autocast): statistics and normalization in float32
        if not self.training:
            # Running statistics are constants here: one fused multiply-add, left to autograd.
            scale = self.weight * torch.rsqrt(self.running_var + self.eps)
            shift = self.bias - self.running_mean * scale
            return torch.addcmul(shift.view(view), x, scale.view(view)).to(dtype)
        n = x.numel() // x.shape[1]
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        if torch.compiler.is_compiling():
            out, mean, var = self._train_for_compilers(x)
        else:
            out, mean, var = _BatchNormTrain.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1.0 - m).add_(mean, alpha=m)
            self.running_var.mul_(1.0 - m).add_(var, alpha=m * n / (n - 1))
            self.num_batches_tracked.add_(1)
        return out.to(dtype)

    def _train_for_compilers(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The same normalization as plain differentiable ops, for torch.compile: its compiler fuses
        them (and derives the backward) better than it traces the hand-written Function, whose in-place
        buffer reuse only pays in eager mode. Two passes (mean, then the mean square of the centred
        values), never E[x^2] - E[x]^2."""
        dims, view = _channel_view(x)
        mean = x.mean(dims)
        centred = x - mean.view(view)
        var = centred.square().mean(dims)
        out = centred * (self.weight * torch.rsqrt(var + self.eps)).view(view) + self.bias.view(view)
        return out, mean.detach(), var.detach()


def _int32(word: int) -> int:
    """A uint32 word as the int32 with the same bits (two's complement)."""
    return word - (1 << 32) if word >= 1 << 31 else word


# netspec.protocol.counter_hash's recipe on int32 tensors holding uint32 bits: multiplication, xor and the
# comparison below are the same bits either way; right shifts are arithmetic on int32, so each is
# masked to its logical result. int32, not int64 masked to 32 bits: half the memory traffic, which
# on a CPU is the difference between ~0.8x and ~1.5x the time of torch.rand's masks (benchmarks/dropout_masks.py).
_MULTIPLIERS = (_int32(0x85EBCA6B), _int32(0xC2B2AE35))
_SIGN = -(1 << 31)


def _fmix32_(h: Tensor, scratch: Tensor) -> Tensor:
    """counter_hash.fmix32 of int32 words, in place on h (scratch: a buffer of h's shape)."""
    for shift, multiplier in ((16, _MULTIPLIERS[0]), (13, _MULTIPLIERS[1]), (16, None)):
        torch.bitwise_right_shift(h, shift, out=scratch)
        h.bitwise_xor_(scratch.bitwise_and_((1 << (32 - shift)) - 1))
        if multiplier is not None:
            h.mul_(multiplier)
    return h


def position_words(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """position * GOLDEN + OFFSET (mod 2**32) for every C-order position of a mask of `shape`, as int32:
    the per-position word of counter_hash.keep_mask. Computed in int64 with the multiplier taken as a
    negative int32 (the same product mod 2**32), so no product leaves int64."""
    position = torch.arange(math.prod(shape), device=device, dtype=torch.int64).view(shape)
    words = (position * _int32(0x9E3779B9) + 0x7F4A7C15) & 0xFFFFFFFF
    return (words - ((words >> 31) << 32)).to(torch.int32)


def hashed_keep_mask(words: Tensor, key: Tensor, p: float, scratch: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """The keep-mask (bool, the shape of `words`) of counter_hash.keep_mask: hash of (key, position) below
    keep_threshold(p). words: position_words of the mask's shape; key: an int32 0-d tensor, the
    layer's key of this step (counter_hash.dropout_keys). scratch: two int32 buffers of words' shape
    that eager steps reuse (a fresh allocation per op costs more than the arithmetic on a CPU);
    compiled steps pass None and the compiler fuses the chain."""
    h, spare = scratch if scratch is not None else (torch.empty_like(words), torch.empty_like(words))
    torch.bitwise_xor(words, key, out=h)
    _fmix32_(h, spare)
    # Unsigned h < threshold as a signed comparison: flipping the sign bit of both sides keeps the order.
    return h.bitwise_xor_(_SIGN) < keep_threshold(p) + _SIGN


class Dropout(nn.Module):
    """Inverted dropout: kept values scaled by 1/(1-p) in training, identity in evaluation.

    One mask value per position of the dims not in `broadcast_dims`, shared along those (as
    flax.linen.Dropout): () drops values one by one (spec Dropout); (2, 3) drops whole channels of
    NCHW data, one draw per sample and channel (spec Dropout2d).

    The mask is netspec.protocol.counter_hash.keep_mask's, bit for bit: a pure function of the key handed in by
    the model (the run's seed, the step, this layer's index `layer`) and the position, so eager and
    compiled steps, and the jax backend, drop the same units.
    """

    def __init__(self, p: float = 0.5, broadcast_dims: tuple[int, ...] = (), layer: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate p={p} is outside [0, 1)")
        self.p, self.broadcast_dims, self.layer = p, tuple(broadcast_dims), layer
        self._words: dict[tuple[Any, ...], tuple[Tensor, Tensor, Tensor]] = {}
        """(mask shape, device) -> position words and two scratch buffers, for eager steps."""

    def extra_repr(self) -> str:
        return f"p={self.p}, broadcast_dims={self.broadcast_dims}" if self.broadcast_dims else f"p={self.p}"

    def forward(self, x: Tensor, keys: Optional[Tensor] = None) -> Tensor:
        """keys: the step's int32 key of every layer of the network (index: the spec's layer index), from
        counter_hash.dropout_keys; needed in training."""
        if not self.training or self.p == 0.0:
            return x  # untouched, no copy, no RNG draw
        if self.broadcast_dims and max(self.broadcast_dims) >= x.dim():
            raise ValueError(f"Dropout broadcast over dims {self.broadcast_dims} needs more dims than input size {x.size()}")
        if keys is None:
            raise ValueError("Dropout in training needs the step's keys (the model passes them: see TorchModel._layers)")
        shape = tuple(1 if dim in self.broadcast_dims else size for dim, size in enumerate(x.shape))
        if torch.compiler.is_compiling():
            mask = hashed_keep_mask(position_words(shape, x.device), keys[self.layer], self.p)
        else:
            cached = self._words.get((shape, x.device))
            if cached is None:
                words = position_words(shape, x.device)
                cached = self._words[(shape, x.device)] = (words, torch.empty_like(words), torch.empty_like(words))
            mask = hashed_keep_mask(cached[0], keys[self.layer], self.p, cached[1:])
        # float32 scale for bf16 data (as the float32 draws were), the data's own dtype otherwise.
        scale = mask.to(torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * scale.to(x.dtype)


class Scale(nn.Module):
    """Multiplies by a constant."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


class GlobalPool(nn.Module):
    """(N, C, H, W) -> (N, C): the mean or the max over all positions (torch's adaptive pools to 1x1,
    so a tie in the max sends its gradient where PyTorch's max pooling does)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1) if self.mode == "avg" else F.adaptive_max_pool2d(x, 1)
        return pooled.flatten(1)


class Add(nn.Module):
    """The element-wise sum of its inputs."""

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out


class Concat(nn.Module):
    """Its inputs joined along dim 1 (channels of NCHW, features of (N, F))."""

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, 1)


class Graph(nn.Module):
    """Layers that take the outputs their specs name: children "0", "1", ... (canonical state_dict
    names), each with the indices of its inputs (-1: the network's input). An output is dropped after its
    last use, so a graph holds no more activations than it needs."""

    def __init__(self, modules: list[nn.Module], inputs: list[tuple[int, ...]]) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            self.add_module(str(index), module)
        self.inputs = [tuple(i) for i in inputs]
        last_use: dict[int, int] = {}
        for index, names in enumerate(self.inputs):
            for i in names:
                last_use[i] = index
        self.release = [tuple(i for i in set(names) if last_use[i] == index) for index, names in enumerate(self.inputs)]
        """The outputs each layer is the last to read."""

    def forward(self, x: Tensor, keys: Optional[Tensor] = None) -> Tensor:
        """keys: the step's dropout keys, one per layer, in training (see Dropout.forward)."""
        outputs: dict[int, Tensor] = {-1: x}
        for index, module in enumerate(self.children()):
            xs = [outputs[i] for i in self.inputs[index]]
            if keys is not None and isinstance(module, Dropout):
                out = module(xs[0], keys)
            else:
                out = module(*xs)
            for i in self.release[index]:
                del outputs[i]
            outputs[index] = out
        return outputs[len(self.inputs) - 1]

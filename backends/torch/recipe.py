"""The training recipe in torch: torch.optim's own optimizers with the spec's parameter
groups, their state in canonical names, and the augmentation gather of netspec.protocol.augment's plans.

Semantics are PyTorch's by construction: Adam/AdamW/SGD are torch.optim's (fused: one kernel per
step; a graphed step gives each group a device-tensor lr and, for Adam/AdamW, capturable=True), label
smoothing is F.cross_entropy's. The augmentation builds netspec.protocol.augment's index maps from the draws
on the device (integer arithmetic only) and applies them as an exact gather and select (no arithmetic
on a pixel), so it is bit-identical to the numpy reference and to the jax backend.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from netspec.protocol.augment import Draws, augment_batch, packed
from netspec.spec.experiment import AugmentConfig, TrainConfig
from netspec.spec.network import Network
from netspec.protocol.optimizer_state import COUNTS_STEPS, OptimizerState, slots_of
from netspec.protocol.param_groups import groups_of, tensor_rules


def build_optimizer(module: torch.nn.Module, network: Network, config: TrainConfig, graphed: bool,
                    device: torch.device) -> tuple[torch.optim.Optimizer, list[float]]:
    """train.optimizer over `module`'s parameters, one param group per rule (weight decay, lr
    multiplier); returns it and each group's lr multiplier. Today's Adam (no decay, one group) is
    exactly the optimizer it always was."""
    named = dict(module.named_parameters())
    groups, scales = [], []
    for rule, names in groups_of(tensor_rules(network, config)).items():
        # A graphed step reads its lr from a device tensor (a float would be baked into the graph).
        lr: Any = torch.tensor(config.lr * rule.lr_scale, dtype=torch.float32, device=device) if graphed else config.lr
        groups.append({"params": [named[n] for n in names], "weight_decay": rule.weight_decay, "lr": lr})
        scales.append(rule.lr_scale)
    opt = config.optimizer
    if opt.type == "sgd":  # fused: its kernel takes a tensor lr, so it is graph-safe without `capturable`
        return torch.optim.SGD(groups, lr=config.lr, momentum=opt.momentum, nesterov=opt.nesterov, dampening=0.0,
                               fused=True), scales
    kind = torch.optim.AdamW if opt.type == "adamw" else torch.optim.Adam
    return kind(groups, lr=config.lr, betas=tuple(opt.betas), eps=opt.eps, fused=True, capturable=graphed), scales


def optimizer_state(optimizer: torch.optim.Optimizer, module: torch.nn.Module, config: TrainConfig,
                    float_dtype: str) -> OptimizerState:
    """The state by canonical name; zeros (and step 0) before the first step (torch creates it lazily)."""
    kind = config.optimizer.type
    slots: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in slots_of(config.optimizer)}
    step = 0
    for name, p in module.named_parameters():
        state = optimizer.state.get(p) or {}
        for slot in slots:
            value = state.get(slot)
            slots[slot][name] = (value.contiguous().cpu().numpy().copy() if value is not None
                                 else np.zeros(tuple(p.shape), float_dtype))
        step = int(state["step"]) if "step" in state else step
    return OptimizerState(kind, slots, step)


def set_optimizer_state(optimizer: torch.optim.Optimizer, module: torch.nn.Module, saved: OptimizerState) -> None:
    """Restore `saved`, in place where torch's state exists (a captured step graph holds those very
    tensors), else created as the fused optimizer creates it."""
    for name, p in module.named_parameters():
        values = {slot: tensors[name] for slot, tensors in saved.slots.items()}
        if COUNTS_STEPS[saved.kind]:
            values["step"] = np.asarray(float(saved.step))
        state = optimizer.state.get(p)
        with torch.no_grad():
            if state:
                for key, value in values.items():
                    state[key].copy_(torch.as_tensor(value, dtype=state[key].dtype))
            elif saved.step > 0 or not COUNTS_STEPS[saved.kind]:
                # Adam's step: a float32 tensor on p's device; moments and momentum buffers like p.
                optimizer.state[p] = {key: (torch.tensor(float(saved.step), dtype=torch.float32, device=p.device)
                                            if key == "step" else _like(p, value)) for key, value in values.items()}
            # else no step taken yet: Adam's own lazy initialization makes the same zeros


def _like(p: Tensor, value: np.ndarray) -> Tensor:
    """An array as a tensor of p's dtype, device and memory format (channels_last kept for fused kernels)."""
    return torch.empty_like(p).copy_(torch.as_tensor(np.asarray(value), dtype=p.dtype))


class IndexOps:
    """netspec.protocol.augment.IndexOps for torch: numpy's names, and an arange made on `device` (the
    draws'), so the index maps are built there (inside a compiled or captured step too)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def arange(self, stop: int) -> Tensor:
        return torch.arange(stop, device=self.device)

    def where(self, condition: Tensor, x: Tensor, y: Tensor | int) -> Tensor:
        return torch.where(condition, x, y)

    def abs(self, x: Tensor) -> Tensor:
        return x.abs()

    def clip(self, x: Tensor, low: int, high: int) -> Tensor:
        return x.clamp(low, high)


def augment(x_all: Tensor, index: Tensor, draws: Tensor, config: AugmentConfig) -> Tensor:
    """The augmented batch x_all[index] (NCHW) from its packed draws (netspec.protocol.augment.packed: dy, dx,
    flip, cy, cx per image): netspec.protocol.augment's index maps built on the device, one gather, one
    select of zeros."""
    zero = torch.zeros((), dtype=x_all.dtype, device=x_all.device)
    out = augment_batch(IndexOps(draws.device), x_all, index, draws.long(), config, channels_last=False, zero=zero)
    return out.permute(0, 3, 1, 2)


def augmented_batches(x: np.ndarray, rows: np.ndarray, draws: Draws, config: AugmentConfig) -> np.ndarray:
    """(steps, batch, C, H, W): what the training steps of `rows` see (for tests)."""
    x_all, plans = torch.from_numpy(x), torch.from_numpy(packed(draws))
    return np.stack([augment(x_all, torch.from_numpy(row), plans[i], config).numpy() for i, row in enumerate(rows)])

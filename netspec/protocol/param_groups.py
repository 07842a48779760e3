"""Per-tensor optimizer settings by rule, not by hand (TrainConfig.param_groups): each trainable
tensor's weight decay and lr multiplier, the same for every backend and optimizer.

A tensor belongs to a normalization layer when its layer keeps running statistics (a sibling
'<prefix>.running_mean'), which holds for any layer naming; a bias is a tensor named '<prefix>.bias'.
"""
from __future__ import annotations

from dataclasses import dataclass

from netspec.spec.experiment import TrainConfig
from netspec.spec.network import Network


@dataclass(frozen=True)
class TensorRule:
    weight_decay: float
    lr_scale: float


def tensor_rules(network: Network, config: TrainConfig) -> dict[str, TensorRule]:
    """Every trainable tensor's weight decay and lr multiplier, by canonical name, in canonical order."""
    infos = network.param_infos()
    groups, decay = config.param_groups, config.optimizer.weight_decay
    rules = {}
    for name, info in infos.items():
        if not info.trainable:
            continue
        prefix, _, leaf = name.rpartition(".")
        norm, bias = f"{prefix}.running_mean" in infos, leaf == "bias"
        decayed = (groups.decay_norm or not norm) and (groups.decay_bias or not bias)
        rules[name] = TensorRule(decay if decayed else 0.0, groups.norm_bias_lr_scale if norm and bias else 1.0)
    return rules


def groups_of(rules: dict[str, TensorRule]) -> dict[TensorRule, list[str]]:
    """The tensors sharing each rule, in canonical order (a torch optimizer's param groups)."""
    out: dict[TensorRule, list[str]] = {}
    for name, rule in rules.items():
        out.setdefault(rule, []).append(name)
    return out

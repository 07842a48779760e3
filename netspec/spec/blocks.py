"""Blocks and network parameters: a network file's short form, expanded at load into the flat layer list
that is validated and hashed (so a spec written with blocks has the run id of its flat equivalent).

    "params": {"width": 64},
    "blocks": {"conv_bn": {"params": ["c"], "layers": [{"type": "Conv2d", "out_channels": "$c", ...}, ...]}},
    "layers": [{"use": "conv_bn", "c": "2*$width", "id": "layer1"}, ...]

- A parameter reference is a string "$name", "K*$name", "$name*K" or "$name/K" (K a positive integer;
  a division must be exact). Inside a block its own parameters come first, then the network's.
- A use `{"use": BLOCK, ARG: VALUE, ..., "id": ..., "inputs": [ref]}` expands to the block's layers; its
  `id` goes on the last of them, `inputs` (one reference) feeds the first.
- Inside a block, layers name each other by local ids (dropped in the flat form: local layers are
  referred to by index there) and the block's input as "input". Integer indices are refused in blocks.

Expansion is bounded (nesting depth, total layers, references resolved) and a block using itself is
refused; every error is one line naming the use, the block and the field.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Union

from netspec.errors import SpecError, did_you_mean

MAX_BLOCK_DEPTH = 8
"""Deepest nesting of block uses (ResNet-9 needs 2)."""
MAX_EXPANDED_LAYERS = 1_000
"""Most layers after expansion (the flat form's own bound, netspec.spec.network.MAX_LAYERS)."""
MAX_REFERENCES = 100_000
"""Most parameter references resolved in one network: a bound on expansion time."""
MAX_BLOCKS = 100
RESERVED = ("use", "id", "inputs")
"""Keys of a use that are not block arguments."""
INPUT = "input"
Ref = Union[int, str]
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
REF_PATTERN = r"(?:([0-9]{1,6})\*)?\$(" + NAME_PATTERN + r")(?:([*/])([0-9]{1,6}))?"
"""A parameter reference (the JSON Schema's pattern too)."""
_NAME = re.compile(NAME_PATTERN)
_REF = re.compile(REF_PATTERN)


class _Expansion:
    """One network's expansion: the flat layers so far and the counters that bound it."""

    def __init__(self, source: str, params: dict[str, Any], blocks: dict[str, Any]) -> None:
        self.source, self.params, self.blocks = source, params, blocks
        self.flat: list[dict[str, Any]] = []
        self.references = 0
        self.uses: list[tuple[int, int, str]] = []
        """(first, last flat index, 'block(arg=value, ...)') of each use among the network's own layers."""

    def fail(self, where: str, what: str) -> SpecError:
        return SpecError(f"{self.source}: {where}: {what}")

    def value(self, value: Any, scope: dict[str, Any], where: str) -> Any:
        """`value` with every parameter reference replaced (lists searched; objects too)."""
        if isinstance(value, str) and "$" in value:
            self.references += 1
            if self.references > MAX_REFERENCES:
                raise self.fail(where, f"more than {MAX_REFERENCES:,} parameter references; simplify the blocks")
            match = _REF.fullmatch(value)
            if not match:
                raise self.fail(where, f"{value[:40]!r} is not a parameter reference; write \"$name\", \"2*$name\", "
                                "\"$name*2\" or \"$name/2\"")
            factor, name, op, number = match.groups()
            if name not in scope:
                raise self.fail(where, f"no parameter {name!r}{did_you_mean(name, scope)}; declare it in "
                                "network.params or the block's params")
            base = scope[name]
            if not factor and not op:
                return base
            if op == "/":
                if not isinstance(base, int) or isinstance(base, bool) or base % int(number):
                    raise self.fail(where, f"{value!r}: ${name} = {base!r} is not a multiple of {number}; "
                                    "a division must be exact")
                return base // int(number) * int(factor or 1)
            if not isinstance(base, (int, float)) or isinstance(base, bool):
                raise self.fail(where, f"{value!r}: ${name} = {base!r} is not a number and cannot be multiplied")
            return base * int(factor or 1) * (int(number) if op == "*" else 1)
        if isinstance(value, list):
            return [self.value(v, scope, where) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v, scope, f"{where}.{k}") for k, v in value.items()}
        return value

    def previous(self) -> Ref:
        """How the flat form names the last layer so far: its id, else its index ('input' when none)."""
        if not self.flat:
            return INPUT
        last = self.flat[-1]
        return last["id"] if isinstance(last.get("id"), str) else len(self.flat) - 1

    def layers(self, items: Any, scope: dict[str, Any], block: Optional[str], block_input: Optional[Ref],
               explicit_input: bool, stack: tuple[str, ...], where: str) -> None:
        """Expand `items` (a network's or a block's layers) onto self.flat. In a block, `block_input` is
        how the flat form names its input, and local ids map to flat indices."""
        if not isinstance(items, list) or not items:
            raise self.fail(where, "layers must be a non-empty list of layers or block uses")
        local: dict[str, Ref] = {}
        for position, item in enumerate(items):
            here = f"{where}layer {position}" if block is None else f"{where}block {block!r} layer {position}"
            if not isinstance(item, dict):
                raise self.fail(here, f"must be an object (a layer or a block use), got {type(item).__name__}")
            first = position == 0
            if "use" in item:
                self.use(item, scope, block, block_input, explicit_input and first, local, stack, here)
            else:
                self.layer(item, scope, block, block_input, explicit_input and first, local, here)
            if len(self.flat) > MAX_EXPANDED_LAYERS:
                raise self.fail(here, f"the network expands to more than {MAX_EXPANDED_LAYERS:,} layers; use fewer blocks")

    def reference(self, ref: Any, block: Optional[str], block_input: Optional[Ref], local: dict[str, Ref],
                  where: str) -> Ref:
        """One input reference as the flat form writes it."""
        if block is None:
            if isinstance(ref, bool) or not isinstance(ref, (int, str)):
                raise self.fail(where, f"inputs: {ref!r} is not a layer id or index")
            if isinstance(ref, int) and self.blocks:
                raise self.fail(where, f"inputs: index {ref} in a network with blocks (indices move when blocks "
                                "expand); give the layer an id and name it")
            return ref
        if ref == INPUT:
            return block_input if block_input is not None else INPUT
        if not isinstance(ref, str):
            raise self.fail(where, f"inputs: {ref!r}: inside a block, name layers by their local id or 'input' "
                            "(the block's input), not by index")
        if ref not in local:
            raise self.fail(where, f"inputs: {ref!r} names no earlier layer of the block{did_you_mean(ref, local)}; "
                            "use a local id or 'input'")
        return local[ref]

    def inputs(self, item: dict[str, Any], block: Optional[str], block_input: Optional[Ref], feed: bool,
               local: dict[str, Ref], where: str) -> Optional[list[Ref]]:
        """The flat `inputs` of a layer (None: the layer before it)."""
        if "inputs" in item:
            refs = item["inputs"]
            if not isinstance(refs, list) or not refs or len(refs) > 64:
                raise self.fail(where, "inputs must be a list of 1 to 64 layer references")
            return [self.reference(r, block, block_input, local, where) for r in refs]
        if feed and block_input is not None and block_input != self.previous():
            return [block_input]
        return None

    def layer(self, item: dict[str, Any], scope: dict[str, Any], block: Optional[str], block_input: Optional[Ref],
              feed: bool, local: dict[str, Ref], where: str) -> None:
        kind = item.get("type")
        where = f"{where} ({kind})" if isinstance(kind, str) else where
        flat = {k: self.value(v, scope, f"{where}: {k}") for k, v in item.items() if k not in ("id", "inputs")}
        refs = self.inputs(item, block, block_input, feed, local, where)
        layer_id = item.get("id")
        if block is None and "id" in item:
            flat = {"id": layer_id, **flat}
        if refs is not None:
            flat["inputs"] = refs
        self.flat.append(flat)
        if block is not None and layer_id is not None:
            self.local_id(layer_id, local, where)

    def local_id(self, layer_id: Any, local: dict[str, Ref], where: str) -> None:
        if not isinstance(layer_id, str) or not _NAME.fullmatch(layer_id) or layer_id == INPUT:
            raise self.fail(where, f"id {layer_id!r}: a local id is a name (letters, digits, '_'), not 'input'")
        if layer_id in local:
            raise self.fail(where, f"id {layer_id!r} is used twice in the block; give each layer its own id")
        local[layer_id] = len(self.flat) - 1

    def use(self, item: dict[str, Any], scope: dict[str, Any], block: Optional[str], block_input: Optional[Ref],
            feed: bool, local: dict[str, Ref], stack: tuple[str, ...], where: str) -> None:
        name = item["use"]
        if not isinstance(name, str) or name not in self.blocks:
            known = ", ".join(sorted(self.blocks)) or "none are defined"
            raise self.fail(where, f"use of an unknown block {name!r}{did_you_mean(name, self.blocks)}; "
                            f"define it in network.blocks (blocks: {known})")
        where = f"{where} (use of block {name!r})"
        if name in stack:
            raise self.fail(where, f"block {name!r} uses itself ({' -> '.join([*stack, name])}); a block may "
                            "use only other blocks")
        if len(stack) >= MAX_BLOCK_DEPTH:
            raise self.fail(where, f"blocks nest more than {MAX_BLOCK_DEPTH} deep; flatten some")
        definition = self.blocks[name]
        declared = definition["params"]
        args = {k: v for k, v in item.items() if k not in RESERVED}
        missing = [p for p in declared if p not in args]
        extra = [a for a in args if a not in declared]
        if missing:
            raise self.fail(where, f"missing parameter {missing[0]!r}; block {name!r} takes {', '.join(declared) or 'none'}")
        if extra:
            raise self.fail(where, f"unknown parameter {extra[0]!r}{did_you_mean(extra[0], declared)}; block "
                            f"{name!r} takes {', '.join(declared) or 'none'}")
        inner = {**self.params, **{k: self.value(v, scope, f"{where}: {k}") for k, v in args.items()}}
        refs = self.inputs(item, block, block_input, feed, local, where)
        if refs is not None and len(refs) != 1:
            raise self.fail(where, "inputs: a block use takes one input")
        entry = refs[0] if refs is not None else self.previous()
        start = len(self.flat)
        self.layers(definition["layers"], inner, name, entry, refs is not None, (*stack, name),
                    f"{where} > ")
        if len(self.flat) == start:
            raise self.fail(where, "the block has no layers")
        if block is None:
            shown = ", ".join(f"{k}={inner[k]}" for k in args)
            self.uses.append((start, len(self.flat) - 1, f"{name}({shown})"))
        if "id" in item:
            if block is None:
                self.flat[-1] = {"id": item["id"], **{k: v for k, v in self.flat[-1].items() if k != "id"}}
            else:
                self.local_id(item["id"], local, where)


def _check_params(params: Any, source: str) -> dict[str, Any]:
    if not isinstance(params, dict) or len(params) > MAX_BLOCKS:
        raise SpecError(f"{source}: network.params must be an object of at most {MAX_BLOCKS} named numbers, "
                        "e.g. {\"width\": 64}")
    for name, value in params.items():
        if not _NAME.fullmatch(name):
            raise SpecError(f"{source}: network.params.{name[:40]}: a parameter name is letters, digits and '_'")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{source}: network.params.{name}: {value!r} is not a number; give e.g. 64")
    return params


def _check_blocks(blocks: Any, source: str) -> dict[str, Any]:
    if not isinstance(blocks, dict) or len(blocks) > MAX_BLOCKS:
        raise SpecError(f"{source}: network.blocks must be an object of at most {MAX_BLOCKS} named blocks")
    for name, block in blocks.items():
        where = f"{source}: network.blocks.{name[:40]}"
        if not _NAME.fullmatch(name):
            raise SpecError(f"{where}: a block name is letters, digits and '_'")
        if not isinstance(block, dict) or set(block) - {"params", "layers", "description"} or "layers" not in block:
            raise SpecError(f"{where}: a block is {{\"params\": [names], \"layers\": [...]}} (and an optional "
                            "description); nothing else")
        declared = block.get("params", [])
        if (not isinstance(declared, list) or len(declared) > 64
                or not all(isinstance(p, str) and _NAME.fullmatch(p) and p not in RESERVED for p in declared)
                or len(set(declared)) != len(declared)):
            raise SpecError(f"{where}.params: a list of distinct parameter names (letters, digits, '_'; not "
                            f"{', '.join(RESERVED)})")
    return {name: {**block, "params": block.get("params", [])} for name, block in blocks.items()}


def expand_network(network: Any, source: str) -> Any:
    """The flat form of a network's JSON (params and blocks expanded); a network without them is returned
    unchanged (the flat form is the short form's fixed point)."""
    if not isinstance(network, dict):
        return network
    if not any(k in network for k in ("params", "blocks")) and not _has_uses(network.get("layers")):
        return network
    params = _check_params(network.get("params", {}), source)
    blocks = _check_blocks(network.get("blocks", {}), source)
    expansion = _Expansion(source, params, blocks)
    expansion.layers(network.get("layers"), params, None, None, False, (), "")
    return {**{k: v for k, v in network.items() if k not in ("params", "blocks")}, "layers": expansion.flat}


def block_uses(network: Any, source: str) -> list[tuple[int, int, str]]:
    """Where each block use among a network JSON's own layers lands in its flat form: (first, last flat
    index, 'block(arg=value, ...)' with the arguments resolved), for `netspec summary`. Empty for a flat network."""
    if not isinstance(network, dict) or not ("blocks" in network or _has_uses(network.get("layers"))):
        return []
    expansion = _Expansion(source, _check_params(network.get("params", {}), source),
                           _check_blocks(network.get("blocks", {}), source))
    expansion.layers(network.get("layers"), expansion.params, None, None, False, (), "")
    return expansion.uses


def _has_uses(layers: Any) -> bool:
    return isinstance(layers, list) and any(isinstance(item, dict) and ("use" in item or _mentions_ref(item))
                                            for item in layers)


def _mentions_ref(item: dict[str, Any]) -> bool:
    return any(isinstance(v, str) and v.startswith("$") or isinstance(v, str) and "*$" in v for v in item.values())

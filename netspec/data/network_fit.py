"""The network meets the data: its input shape against the images' shape and its output size against
the class count, checked when the data is loaded, before any model or run folder is made.

One line names both sides and the field to change. An input given flat (an MLP's [784] for 1x28x28
images) fits images with as many values: the trainer reshapes them (netspec.training.trainer.shape_inputs).
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import SpecError
from netspec.spec.network import Network

MAX_CLASSES_SHOWN = 12


def check_network_meets_data(network: Network, image_shape: Sequence[int], classes: Sequence[str],
                             origin: str = "the data") -> None:
    """SpecError unless `network` takes images of `image_shape` (C, H, W) and gives one score per class."""
    want, have = tuple(network.input_shape), tuple(image_shape)
    if want != have and not (len(want) == 1 and want[0] == math.prod(have)):
        flat = f" (or [{math.prod(have)}] for a network that starts flat)" if len(want) == 1 else ""
        raise SpecError(f"network: input_shape {list(want)} does not fit the data's {'x'.join(map(str, have))} images "
                        f"({origin}); set network.input_shape to {list(have)}{flat}")
    out = tuple(network.output_shape)
    if len(out) != 1:
        raise SpecError(f"network: its output has shape {out}, not one score per class; end it with Flatten "
                        f"and Linear(out_features={len(classes)})")
    if out[0] != len(classes):
        shown = ", ".join(map(str, classes[:MAX_CLASSES_SHOWN])) + (", ..." if len(classes) > MAX_CLASSES_SHOWN else "")
        raise SpecError(f"network: last layer gives {out[0]} outputs, the data has {len(classes)} classes ({shown}); "
                        f"set the last Linear's out_features to {len(classes)}")

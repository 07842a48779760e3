"""What every section of a spec file shares: the strict base model (no unknown field, frozen, reals that
fit float32) and the bounded field types (safe names, seeds, image counts, batch, epochs, lr)."""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator

from netspec.spec.layers import check_float32

MAX_NAME_LENGTH = 100
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _check_name(name: str) -> str:
    # A name becomes a folder or file name under --out (runs/<name>/..., runs/sweeps/<name>.json):
    # '/', '\\' or a leading '.' ('..', a hidden file) would let it point anywhere.
    if len(name) > MAX_NAME_LENGTH or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{name[:120]!r} is not a safe file name: use letters, digits, '_', '-' and '.' "
                         f"(not first), at most {MAX_NAME_LENGTH} characters, e.g. 'cnn_lr-0.01'")
    return name


SafeName = Annotated[str, Strict(), AfterValidator(_check_name)]
"""An experiment's or sweep's name: a safe file name, since outputs are named after it."""

MAX_SEED = 2**32 - 1
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]
"""A seed as numpy takes it (0 .. 2**32 - 1); numpy refuses a negative one with a traceback."""
MAX_IMAGES = 1_000_000
"""Most images in a split (CIFAR-10 has 60,000 in all): synthetic data is made at this size in memory."""
MAX_BATCH = 65_536
MAX_EPOCHS = 100_000
MAX_LR = 10.0
"""Largest learning rate: Adam's steps are about lr in size, so anything above diverges at once."""


def _images(positive: bool) -> Any:
    return Annotated[int, Strict(), Field(gt=0, le=MAX_IMAGES) if positive else Field(ge=0, le=MAX_IMAGES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _fits_float32(self) -> "_Strict":
        check_float32(self)  # every real-valued setting (lr, eps, betas, knots...) of every section
        return self

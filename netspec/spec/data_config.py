"""The data section of an experiment: where the images come from and how they are split and scaled, and
the (C, H, W) a data section states before any image is read."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, Field, Strict, model_serializer, model_validator

from netspec.spec.fields import MAX_NAME_LENGTH, Seed, _images, _Strict


MAX_IMAGE_SIDE = 4096
ImageSide = Annotated[int, Strict(), Field(gt=0, le=MAX_IMAGE_SIDE)]
_DATA_SOURCE = re.compile(r"[a-z][a-z0-9_]*(/[a-z0-9_]+)?(:[0-9]+(\.[0-9]+){0,2})?")


def _check_source(name: str) -> str:
    # A TFDS name ('mnist', 'cifar100:3.0.2', 'imagenette/160px') becomes a folder under the cache.
    if len(name) > MAX_NAME_LENGTH or not _DATA_SOURCE.fullmatch(name):
        raise ValueError(f"{name[:80]!r} is not a data source: use 'cifar10', 'synthetic' or a tensorflow-datasets "
                         "name such as 'mnist', 'cifar100' or 'fashion_mnist' (lowercase, digits, '_')")
    return name


DataSource = Annotated[str, Strict(), AfterValidator(_check_source)]
"""'cifar10', 'synthetic' or a tensorflow-datasets name (checked against TFDS when the data is loaded)."""


class DataConfig(_Strict):
    """Where the images come from and how they are split and scaled."""

    source: DataSource = "cifar10"
    """'cifar10' (TFDS, or a local copy given by `dir`), 'synthetic' (seeded, learnable, CIFAR-shaped), or
    the name of any tensorflow-datasets image-classification set ('mnist', 'fashion_mnist', 'cifar100',
    'svhn_cropped', ...: its `image` and `label` features, its train and test splits)."""
    dir: Optional[Annotated[str, Strict(), Field(min_length=1, max_length=4096)]] = None
    """A local copy: an image-folder tree (train/<class>/*, test/<class>/*, any class count, grey or RGB,
    any size), CIFAR-10's cifar-10-batches-py, or a .tar.gz of either; decoded once, then cached (netspec.data)."""
    image_size: Optional[tuple[ImageSide, ImageSide]] = None
    """[height, width] the network gets from an image tree: every image scaled to it (the whole image,
    bilinear, aspect not kept) once, when the cache is built. Unset: the images' own size, which must
    then be the same for all (32x32 for CIFAR-10). Left out of the run id while unset."""
    channels: Optional[Literal[1, 3]] = None
    """Channels the network gets from an image tree: 1 (grayscale) or 3 (RGB; grey images repeated).
    Unset: 1 if every image is grayscale, else 3. Left out of the run id while unset."""
    val_size: _images(False) = 10_000
    """Images held out of the training set for validation (the report: 10,000 of 50,000)."""
    split: Literal["tail", "stratified"] = "tail"
    """'tail': validation is the last `val_size` images in the source's order (the report);
    'stratified': a seeded random split with equal class shares (the choice for image-folder trees, which
    have no original order: netspec.data interleaves their classes, so 'tail' still takes every class)."""
    normalize: Literal["report", "per_channel"] = "report"
    """'report': (x - 128) / 255 as the lab's framework; 'per_channel': mean/std of the training split."""
    seed: Seed = 42
    """Seed of the stratified split and of synthetic data."""
    train_size: Optional[_images(True)] = None
    """Synthetic only: training images before the validation split (default 50,000); a cap otherwise
    (at most the source's own count)."""
    test_size: Optional[_images(True)] = None
    """Synthetic only: test images (default 10,000); a cap otherwise (at most the source's own count)."""

    @model_serializer(mode="wrap")
    def _unset_shape_left_out(self, handler: Any) -> dict[str, Any]:
        # Written out only when set: every spec file and spec.json written before these fields reads
        # back to its own text, and run ids (a hash of the dump) stay as they were.
        content = handler(self)
        for field in ("image_size", "channels"):
            if content.get(field, 0) is None:
                del content[field]
        return content

    @model_validator(mode="after")
    def _shape_only_for_image_trees(self) -> "DataConfig":
        shaped = [f for f in ("image_size", "channels") if getattr(self, f) is not None]
        if shaped and self.dir is None:
            raise ValueError(f"{shaped[0]} shapes an image-folder tree (data.dir), but data.source "
                             f"{self.source!r} has its own shape; drop data.{shaped[0]} (the network takes the "
                             "source's shape) or give data.dir")
        if self.dir is not None and self.source not in ("cifar10", "synthetic"):
            raise ValueError(f"data.dir is a local copy, but data.source names the tensorflow-datasets set "
                             f"{self.source!r}; drop one of them")
        return self


def data_shape(data: dict[str, Any]) -> Optional[list[int]]:
    """(C, H, W) a data section (JSON) states without reading any image: CIFAR-10's for 'cifar10' and
    'synthetic', an image tree's `channels` and `image_size` when both are set; else None."""
    if data.get("dir") is None and data.get("source", "cifar10") in ("cifar10", "synthetic"):
        return [3, 32, 32]
    size, channels = data.get("image_size"), data.get("channels")
    if data.get("dir") is not None and isinstance(size, (list, tuple)) and len(size) == 2 and channels in (1, 3):
        return [channels, *size]
    return None


def _shape_hint(data: dict[str, Any]) -> str:
    if data.get("dir") is not None:
        return "an image tree states it with both data.channels and data.image_size"
    return f"the tensorflow-datasets set {data.get('source')!r} has its shape in its info, read only at load"

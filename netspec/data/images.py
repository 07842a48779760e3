"""One image file -> pixels: PNG or JPEG bytes to a uint8 array of a stated shape, bounded before decoding.

`decode_image` is CIFAR-10's (32x32 RGB, as the shipped copies hold); `decode_pixels` any channel count
(1 or 3) and, with a `size`, the one resize rule of netspec: the whole image scaled to (height, width),
bilinear with PIL's antialiasing, aspect not kept (as `predict --resize`). What a decode had to do to a
file (16-bit scaled, grey or palette to RGB) comes back as notes, so the caller can say so.
"""
from __future__ import annotations

import io
import warnings
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")  # the readers PIL may use (JPEG's also opens MPO, a JPEG with extra pictures)
MAX_PIXELS = 4096 * 4096
"""Largest image (width x height) an image tree or predict decodes: a 4K photo fits, a small file that
declares gigapixels does not (checked from the header)."""
GREY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I")
"""PIL modes of one-channel images (LA: with alpha)."""
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I")
SCALED_16_BIT = "16-bit samples scaled to 8 bits (x * 255 / 65535, rounded)"


def decode_image(data: bytes, name: str = "<image>") -> np.ndarray:
    """PNG/JPEG bytes -> (32, 32, 3) uint8 RGB. The size is checked from the header, before decoding:
    a small file can declare gigapixels."""
    with open_image(data, name) as image:
        if image.size != (32, 32):
            raise DataError(f"data.dir: {name} is {image.width}x{image.height}; CIFAR-10 images are 32x32")
        return np.asarray(to_rgb(image, name))


def decode_pixels(data: bytes, name: str, channels: int, size: Optional[tuple[int, int]] = None,
                  where: str = "data.dir") -> tuple[np.ndarray, tuple[str, ...]]:
    """PNG/JPEG bytes -> (H, W, channels) uint8, resized to `size` (height, width) when given (else the
    file's own size), and the notes of what was done to it. One DataError line for a file that cannot
    be that: undecodable, truncated, too large, 16 bits per colour channel, transparent for RGB."""
    with open_image(data, name, where) as image:
        notes = []
        if image.mode in _WIDE_GREY:
            notes.append(SCALED_16_BIT)
        if channels == 1:
            pixels = grey(image, name, where)
        else:
            check_colour_depth(image, name, where)
            _check_opaque(image, name, where)
            pixels = to_rgb(image, name, where)
        if size is not None and pixels.size != (size[1], size[0]):
            pixels = pixels.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(pixels)
        return (array[:, :, None] if array.ndim == 2 else array), tuple(notes)


def image_header(data: bytes, name: str, where: str = "data.dir") -> tuple[int, int, str]:
    """(height, width, PIL mode) from the file's header alone (nothing decoded), bounded by MAX_PIXELS."""
    with open_image(data, name, where) as image:
        return image.height, image.width, image.mode


def to_rgb(image: Image.Image, name: str, where: str = "data.dir") -> Image.Image:
    """The decoded image in RGB: grey in all three channels, alpha dropped, 16-bit grey scaled to 8 bits."""
    try:
        if image.mode in _WIDE_GREY:  # 16-bit grey: convert("RGB") would clip at 255
            return Image.fromarray(np.repeat(_to_8_bit(np.asarray(image))[:, :, None], 3, axis=2))
        return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: cannot decode {name} ({err})") from None


def grey(image: Image.Image, name: str, where: str) -> Image.Image:
    """One channel: 16-bit grey scaled, grey as it is; colour refused (which weights of R, G, B would be
    a choice the user should make, not netspec)."""
    try:
        if image.mode in _WIDE_GREY:
            return Image.fromarray(_to_8_bit(np.asarray(image)))
        if image.mode in ("1", "L", "LA"):
            return image.convert("L")
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: cannot decode {name} ({err})") from None
    raise DataError(f"{where}: {name} is a colour image ({image.mode}) but data.channels is 1; convert the images "
                    "to grayscale, or set data.channels to 3 (and the network's input channels)")


def check_colour_depth(image: Image.Image, name: str, where: str) -> None:
    # PIL opens a 48- or 64-bit PNG as 8-bit RGB by keeping each sample's high byte: read as if 8-bit.
    if image.format == "PNG" and any(";16" in str(tile.args) for tile in image.tile) and image.mode not in _WIDE_GREY:
        raise DataError(f"{where}: {name} has 16 bits per colour channel, which netspec does not read "
                        "(it would be cut to 8 bits unasked); save it with 8 bits per channel")


def _check_opaque(image: Image.Image, name: str, where: str) -> None:
    """An RGBA, LA or transparent palette image is refused when any pixel is see-through: dropping the
    alpha shows whatever colour the hidden pixels hold, which is rarely what the image looks like."""
    if image.mode == "P" and "transparency" not in image.info:
        return  # a palette without transparency is RGB, losslessly
    if image.mode not in ("RGBA", "LA", "PA", "P"):
        return
    try:
        alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: cannot decode {name} ({err})") from None
    if alpha.min() < 255:
        raise DataError(f"{where}: {name} is {image.mode} with transparent pixels, which an RGB network cannot "
                        "see; flatten it onto a background (or drop its alpha) and save it as RGB")


def _to_8_bit(values: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) scaled to 8 bits, rounded, as an 8-bit PNG of the same image holds them."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def open_image(data: bytes, name: str, where: str = "data.dir") -> Image.Image:
    """Image.open reads only the header. PNG and JPEG only: PIL's other readers (EPS runs Ghostscript)
    are not needed for an image tree. PIL's decompression-bomb warning becomes an error, and an image
    above MAX_PIXELS is refused before decoding. `where` starts the error line: the field or the command
    the file came from."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.UnidentifiedImageError:  # its own text names a BytesIO object, not the file
        raise DataError(f"{where}: cannot decode {name} (not a PNG or JPEG image); remove it or save it as PNG") from None
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise DataError(f"{where}: cannot decode {name} ({err})") from None
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise DataError(f"{where}: {name} is {image.width}x{image.height}, more than the {MAX_PIXELS:,} pixels "
                        "netspec decodes; shrink it (data.image_size then sets what the network gets)")
    return image

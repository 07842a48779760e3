"""One image file -> pixels: PNG or JPEG bytes to a (32, 32, 3) uint8 array, bounded before decoding."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")  # the readers PIL may use (JPEG's also opens MPO, a JPEG with extra pictures)


def decode_image(data: bytes, name: str = "<image>") -> np.ndarray:
    """PNG/JPEG bytes -> (32, 32, 3) uint8 RGB. The size is checked from the header, before decoding:
    a small file can declare gigapixels."""
    with open_image(data, name) as image:
        if image.size != (32, 32):
            raise DataError(f"data.dir: {name} is {image.width}x{image.height}; CIFAR-10 images are 32x32")
        return np.asarray(to_rgb(image, name))


def to_rgb(image: Image.Image, name: str, where: str = "data.dir") -> Image.Image:
    """The decoded image in RGB: grey in all three channels, alpha dropped, 16-bit grey scaled to 8 bits."""
    try:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: convert("RGB") would clip at 255
            return Image.fromarray(np.repeat(_to_8_bit(np.asarray(image))[:, :, None], 3, axis=2))
        return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: cannot decode {name} ({err})") from None


def _to_8_bit(values: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) scaled to 8 bits, rounded, as an 8-bit PNG of the same image holds them."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def open_image(data: bytes, name: str, where: str = "data.dir") -> Image.Image:
    """Image.open reads only the header. PNG and JPEG only: PIL's other readers (EPS runs Ghostscript)
    are not needed for an image tree. PIL's decompression-bomb warning becomes an error. `where` starts
    the error line: the field or the command the file came from."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise DataError(f"{where}: cannot decode {name} ({err})") from None

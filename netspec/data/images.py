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
        try:
            return np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as err:
            raise DataError(f"data.dir: cannot decode {name} ({err})") from None


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

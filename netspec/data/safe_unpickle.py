"""Unpickling CIFAR-10's python batches without running what a pickle asks for.

A pickle is a program: its GLOBAL opcodes name any importable callable (`posix.system`) and REDUCE
calls it. CIFAR-10's files need only a handful: numpy's own array reconstruction, and, for files
re-pickled by Python 3 with protocol 2, the two helpers pickle uses to spell `bytes`. Every name
resolves through the table below, never through an import, so a refused name runs nothing.

Even admitted callables are wrapped where their arguments could allocate without limit
(`bytes(10**12)`, an `ndarray` of 10**12 elements): pickles made by Python and numpy always pass the
same harmless arguments, and the wrappers accept only those.
"""
from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 keeps these in numpy._core (numpy.core is a deprecated alias)
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]


class RefusedPickle(pickle.UnpicklingError):
    """The pickle refers to something a CIFAR-10 batch never holds; `str(err)` says what."""


_NDARRAY = object()
"""What the name numpy.ndarray unpickles to: a token only `_safe_reconstruct` accepts, so a pickle
cannot call or instantiate the real class with sizes of its choosing."""


def _safe_reconstruct(subtype: object, shape: Any, typecode: Any) -> np.ndarray:
    # numpy pickles every array as _reconstruct(ndarray, (0,), b'b') and then fills it with
    # __setstate__, which checks the data's length against the shape: an empty start bounds memory.
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise RefusedPickle("it builds an array in a way numpy never pickles one")
    return _reconstruct(np.ndarray, (0,), typecode)


def _safe_codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(str, 'latin1'); other codecs are refused.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle(f"it calls _codecs.encode with the {encoding!r} codec")
    return codecs.encode(text, "latin1")


def _empty_bytes(*args: Any) -> bytes:
    # Python 3 pickles b'' at protocol 2 as bytes(); bytes(n) would allocate n bytes.
    if args:
        raise RefusedPickle("it calls bytes() with arguments")
    return b""


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")

ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _safe_reconstruct for module in _NUMPY_MODULES},
    **{(module, "scalar"): scalar for module in _NUMPY_MODULES},  # numpy scalars (e.g. a label)
    **{(module, "_frombuffer"): _frombuffer for module in _NUMERIC_MODULES},  # arrays at protocol >= 5
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _safe_codecs_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
"""(module, name) in the pickle -> what it unpickles to. Everything else is refused."""


def _printable(text: str, limit: int = 80) -> str:
    # A protocol-4 name is any string: keep a newline or a megabyte of it out of a one-line message.
    return text if text.isprintable() and len(text) <= limit else repr(text[:limit])


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # also serves INST, OBJ and EXT opcodes
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"it refers to {_printable(f'{module}.{name}')}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("it refers to a persistent object")


def loads(data: bytes) -> Any:
    """Unpickle `data` (Python 2 pickles: str as bytes) admitting only what CIFAR-10 batches contain.

    Raises RefusedPickle for a name outside `ALLOWED`, or another exception for a broken pickle."""
    return _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()


"""Files in and out, for specs and for run folders that may come from elsewhere:

- JSON read only from regular files (a FIFO never blocks), bounded in size and depth, without duplicate
  keys or lone surrogates; spec files' problems as one SpecError line naming the file;
- .npz arrays whose headers are checked before numpy allocates what they declare;
- the one atomic writer (`atomic_write`: replaces a link at the name, never follows it) and the folders
  netspec names inside a tree (`safe_output_dir`: never a link);
- strict JSON text (non-finite numbers as null) and .npz bytes that are equal for equal arrays.
"""
from __future__ import annotations

import io
import json
import math
import os
import stat
import struct
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from .errors import DataError, SetupError, SpecError, format_validation_error

M = TypeVar("M", bound=BaseModel)


MAX_JSON_BYTES = 10 * 2**20
"""Largest spec file read; the report's specs are about 1 KB."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; a spec nests about 5 deep. Deeper input would
reach Python's recursion limit in the parser or the validation, a traceback instead of a line."""


class UnreadableJSON(ValueError):
    """A JSON file that does not parse as data netspec can use; str() is the reason, `advice` what to do."""

    def __init__(self, reason: str, advice: str) -> None:
        super().__init__(reason)
        self.advice = advice


class MalformedJSON(UnreadableJSON):
    """Not JSON at all (a syntax error), as opposed to JSON netspec refuses."""


def read_json(path: str | Path) -> Any:
    """Parse a JSON spec file; a missing, oversized, non-UTF-8, malformed or too deeply nested file, a
    duplicate key or a lone surrogate becomes one SpecError line."""
    path = Path(path)
    try:
        return parse_json_file(path)
    except UnreadableJSON as err:
        raise SpecError(f"{path}: {err}; {err.advice}") from None


def parse_json_file(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file's data, read only when it is a regular file (a FIFO would block) of at most `max_bytes`;
    UnreadableJSON otherwise, or when it is malformed, nested deeper than `max_depth`, has a key twice in one
    object (which of the two would count is a guess: refused) or a string no UTF-8 can hold (a lone
    surrogate such as "\\ud800", which every later write of the string would fail on)."""
    return parse_json_text(_read_text(path, max_bytes), max_depth)


def parse_json_text(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """parse_json_file's checks on JSON already read (the JSON part inside a checkpoint)."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise MalformedJSON(f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}", "fix the syntax") from None
    except RecursionError:  # nested deeper than the parser goes
        raise _too_deep(max_depth) from None
    except UnreadableJSON:
        raise
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise UnreadableJSON(f"unreadable JSON value ({err})", "fix the value") from None
    _check_tree(data, max_depth)
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise UnreadableJSON(f"the key {key!r} appears twice in one object (which one counts is a guess)",
                                 "keep one of them")
        out[key] = value
    return out


def _too_deep(max_depth: int) -> UnreadableJSON:
    return UnreadableJSON(f"JSON nested more than {max_depth} levels deep", "a spec needs about 5: fix the file")


def _read_text(path: Path, max_bytes: int = MAX_JSON_BYTES) -> str:
    """The file as UTF-8 text, read only when it is at most `max_bytes` (a spec is small; a huge file is a
    mistake, or an attempt to exhaust memory)."""
    try:
        with open_regular(path) as f:
            raw = f.read(max_bytes + 1)
    except NotRegularFile as err:
        raise UnreadableJSON(str(err), "give a JSON file") from None
    except OSError as err:
        raise UnreadableJSON(f"cannot read the file ({err.strerror})", "check the path") from None
    if len(raw) > max_bytes:
        raise UnreadableJSON(f"larger than {max_bytes:,} bytes, far more than a spec", "check the path")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnreadableJSON(f"not UTF-8 text (byte {err.start})", "save the file as UTF-8") from None


def _check_tree(data: Any, max_depth: int) -> None:
    """Depth and strings of parsed JSON, without recursion (a scalar is depth 0, [] is 1)."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value)
        elif isinstance(value, (dict, list)):
            if depth + 1 > max_depth:
                raise _too_deep(max_depth)
            if isinstance(value, dict):
                for key in value:
                    _check_string(key)
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UnreadableJSON(f"a string holds {text[err.start]!r}, a lone surrogate, which is no character",
                             "remove it") from None


def validate(model: type[M], data: Any, source: str | Path = "<spec>") -> M:
    """Validate `data` as `model` (an editor's `$schema` key dropped); errors become one SpecError line
    naming `source`."""
    try:
        return model.model_validate(without_schema_key(data))
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err, model)}",
                        details=err.errors(include_url=False)) from None


SCHEMA_KEY = "$schema"
"""A spec file's pointer to its JSON Schema, for editors (netspec.spec.schema); never part of a spec."""


def without_schema_key(data: Any) -> Any:
    """A spec file's content without the editor's `$schema` key."""
    return {k: v for k, v in data.items() if k != SCHEMA_KEY} if isinstance(data, dict) else data


def write_json(model: BaseModel, path: str | Path, schema: Optional[str] = None) -> None:
    """Write a spec as indented JSON, starting with `"$schema": schema` when given. Defaults are kept:
    dropping them would drop the `type` tags."""
    text = model.model_dump_json(indent=2)
    if schema is not None:
        text = "{\n  " + json.dumps(SCHEMA_KEY) + ": " + json.dumps(schema) + "," + text[1:]
    write_bytes_atomic(Path(path), (text + "\n").encode())


# ---- reading files from elsewhere ---------------------------------------------------------------------

class NotRegularFile(OSError):
    """A path that is a FIFO, a device, a socket or a folder where a file is read: opening it could block
    forever (a FIFO with no writer) or never end (/dev/zero)."""


def open_regular(path: str | Path) -> IO[bytes]:
    """`path` opened for reading in binary, only if it is a regular file (a link to one is followed: reading
    through a link writes nothing). The open itself never blocks: O_NONBLOCK, then the type is checked on
    the open descriptor, so a FIFO swapped in between is caught too. Raises NotRegularFile, or OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
            raise NotRegularFile(f"{kind}, not a file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# ---- writing: one atomic writer, folders that are netspec's own -------------------------------------------

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask (read by setting it and back: POSIX has no read-only call), under a lock so
    two writer threads never see each other's momentary 0."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a unique temporary file in its own folder, then rename it into place. The
    rename replaces whatever has the name, a symbolic link included, and never follows one: a link planted
    at an output name (to a file elsewhere) is replaced, its target left alone. A kill leaves the old file
    or the new one, never half of one. A full disk is one line (SetupError); the old file stays as it was."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise SetupError(f"cannot write {path}: {err.strerror or err}; choose another output folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would make it: mkstemp's 0600 hides results from a lab group
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise SetupError(f"cannot write {path}: {err.strerror or err}; free some space or choose another --out") from None
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    atomic_write(Path(path), lambda f: f.write(data))


def refuse_link(path: Path) -> None:
    """One line when a folder netspec writes is a symbolic link (it would write wherever the link points)."""
    if path.is_symlink():
        raise SetupError(f"{path}: a symbolic link where netspec writes a folder (it would write wherever the "
                         "link points); remove the link")


def safe_output_dir(parent: str | Path, *names: str) -> Path:
    """parent/names[0]/names[1]/..., each folder made where missing. `parent` is the user's (a link they
    chose is theirs to choose); every folder below it is a name netspec picks inside a tree that may come
    from elsewhere, so one that is a symbolic link, or a name that leads out of `parent`, is refused in one
    line: a write must never land outside the output folder through a planted link."""
    path = Path(parent)
    if path.exists() and not path.is_dir():
        raise SetupError(f"{path}: a file where an output folder goes; choose another output folder")
    path.mkdir(parents=True, exist_ok=True)
    top = path.resolve()
    for name in names:
        if name in ("", ".", "..") or "/" in name or os.sep in name:
            raise SetupError(f"{path}: {name!r} is not a folder name netspec writes; remove the file that named it")
        path = path / name
        refuse_link(path)
        try:
            path.mkdir(exist_ok=True)
        except FileExistsError:
            raise SetupError(f"{path}: a file where netspec writes a folder; move it away") from None
        if not path.resolve().is_relative_to(top):
            raise SetupError(f"{path}: resolves outside {parent}; remove what redirects it")
    return path


# ---- arrays from elsewhere ------------------------------------------------------------------------------

def check_npz(archive: zipfile.ZipFile, max_bytes: int) -> None:
    """Every member of an .npz is a plain array whose header declares no more bytes than the member holds,
    and all of them together at most `max_bytes`: checked from the headers before any array is read, as
    numpy allocates what a header declares first (an 80-byte member declaring 2^40 floats would ask for
    8 TiB). ValueError with one line otherwise."""
    total = 0
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise ValueError(f"member {info.filename!r} is not an array")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
        if dtype.hasobject:
            raise ValueError("it holds pickled Python objects, refused because loading them could run code")
        declared = math.prod(shape) * dtype.itemsize
        if declared > info.file_size:
            raise ValueError(f"array {info.filename[:-4]!r} declares shape {shape} ({declared:,} bytes) but its member "
                             f"holds {info.file_size:,}")
        total += declared
        if total > max_bytes:
            raise ValueError(f"its arrays add up to more than the {max_bytes:,} bytes netspec reads")


class DamagedNpz(DataError, ValueError):
    """An .npz file that does not parse (empty, truncated, not a zip, a bad array header). str() is one
    line naming the file and what to do; `reason` alone is the parser's words. A ValueError too, so a
    caller that treats a damaged file as absent (the data cache, a checkpoint) still catches it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: damaged or truncated .npz ({reason}); delete it and run the command again "
                         "(netspec writes it anew), or give an .npz written by netspec")
        self.path = Path(path)
        self.reason = reason


def load_npz(path: str | Path, max_bytes: int, names: Optional[Iterable[str]] = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (only `names`, when given), no pickles, after `check_npz`; a FIFO or a
    folder is refused without blocking. Raises OSError when it cannot be opened (FileNotFoundError when
    absent), else DamagedNpz (one line) for anything that does not parse."""
    with open_regular(path) as f:
        try:
            with zipfile.ZipFile(f) as archive:
                check_npz(archive, max_bytes)
                wanted = None if names is None else {f"{n}.npy" for n in names}
                out = {}
                for info in archive.infolist():
                    if wanted is None or info.filename in wanted:
                        with archive.open(info) as member:
                            out[info.filename[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
                return out
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, struct.error, NotImplementedError,
                OverflowError, OSError) as err:
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise DamagedNpz(path, first) from None


# ---- strict JSON and reproducible .npz bytes (what run folders are written as) ------------------------

def strict(value: Any) -> Any:
    """A JSON-able copy with non-finite floats as null (strict JSON has no NaN or Infinity) and numpy
    scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(data: Any) -> str:
    return json.dumps(strict(data), indent=2, allow_nan=False) + "\n"


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz as np.savez writes it (np.load reads it), but with a fixed timestamp on every member, so
    equal arrays give equal bytes: a resumed run's best_weights.npz is byte for byte the uninterrupted one's."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()

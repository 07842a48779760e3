"""A local copy's files, read-only and bounded: a folder (`FolderFiles`) or a tar archive's members
(`ArchiveFiles`), behind one `Files` protocol. A copy may come from anyone: sizes are checked before
anything is read, and archive members that escape their folder or are links are refused."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Optional, Protocol, Sequence

from ..errors import DataError
from ..io import NotRegularFile, open_regular
from .cache import digest

MAX_FILE_BYTES = 256 * 2**20
"""Largest file read from a local copy (folder or archive member); data_batch_1 is 31 MB."""
MAX_ARCHIVE_BYTES = 2 * 2**30
"""Largest total of an archive's files (the python batches are 178 MB, a PNG tree about 150 MB)."""
MAX_ARCHIVE_MEMBERS = 200_000
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class Files(Protocol):
    """Read-only files by relative posix path ('' is the root): a folder or an archive's members."""

    def listdir(self, rel: str) -> list[str]:
        """Sorted names of the entries of folder `rel` ([] if it is not a folder)."""

    def is_file(self, rel: str) -> bool: ...

    def read(self, rel: str) -> bytes: ...

    def fingerprint(self, rels: Sequence[str]) -> str:
        """Identity of the copy for the cache; changes when the files `rels` may have changed."""


def open_files(path: Path) -> Files:
    if path.is_dir():
        return FolderFiles(path)
    if path.is_file() and (path.name.endswith(ARCHIVE_SUFFIXES)):
        return ArchiveFiles(path)
    what = "does not exist" if not path.exists() else "is neither a folder nor a .tar.gz/.tgz/.tar archive"
    raise DataError(f"data.dir: {path} {what}; give cifar-10-batches-py, an image-folder tree or a .tar.gz of either")


class FolderFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def listdir(self, rel: str) -> list[str]:
        folder = self.root / rel
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def is_file(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def read(self, rel: str) -> bytes:
        path = self.root / rel
        try:
            with open_regular(path) as f:  # a FIFO in a copied tree never blocks the run
                _check_size(str(path), os.fstat(f.fileno()).st_size)
                return f.read()
        except NotRegularFile as err:
            raise DataError(f"{path}: {err}; an image tree holds image files only") from None

    def fingerprint(self, rels: Sequence[str]) -> str:
        # Every file's size and mtime: a folder's own mtime misses edits inside its subfolders.
        # About 0.3 s for CIFAR-10's 60,000 files.
        stats = (os.stat(self.root / rel) for rel in rels)
        return digest([str(self.root.resolve()), *(f"{r}:{s.st_size}:{s.st_mtime_ns}" for r, s in zip(rels, stats))])


class ArchiveFiles:
    """A tar archive's members, read into memory once, on first use.

    Reading the members (2.6 s for the 20 MB JPEG copy) is 3x faster than extracting 60,000 small
    files and leaves no extracted tree behind: the decoded .npz is the one cache.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: Optional[dict[str, bytes]] = None
        self._folders: dict[str, set[str]] = {}

    def _load(self) -> dict[str, bytes]:
        if self._files is None:
            try:
                with tarfile.open(self.path) as tar:
                    self._files = self._read_members(tar)
            except (tarfile.TarError, OSError, EOFError) as err:
                raise DataError(f"{self.path}: cannot read the archive ({err}); check the file") from None
            for name in self._files:  # parent folder -> entries, for listdir
                parts = name.split("/")
                for depth in range(len(parts)):
                    self._folders.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
        return self._files

    def _read_members(self, tar: tarfile.TarFile) -> dict[str, bytes]:
        """The regular files by name, each member checked before it is read (an archive from elsewhere
        may hold links, paths out of its folder, or a small gzip of gigabytes) and the total bounded."""
        files: dict[str, bytes] = {}
        total = 0
        for count, member in enumerate(tar, 1):
            _check_member(self.path, member, count)
            if member.isfile():
                total += member.size
                if total > MAX_ARCHIVE_BYTES:
                    raise DataError(f"{self.path}: its files add up to more than {MAX_ARCHIVE_BYTES:,} bytes, "
                                    "far more than a CIFAR-10 copy; check the archive")
                files[_clean_member(member.name)] = tar.extractfile(member).read()
        return files

    def listdir(self, rel: str) -> list[str]:
        self._load()
        return sorted(n for n in self._folders.get(rel.strip("/"), ()) if not n.startswith("."))

    def is_file(self, rel: str) -> bool:
        return rel in self._load()

    def read(self, rel: str) -> bytes:
        return self._load()[rel]

    def fingerprint(self, rels: Sequence[str]) -> str:
        stat = self.path.stat()  # the archive as a whole: no need to read it to know it is unchanged
        return digest([str(self.path.resolve()), f"{stat.st_size}:{stat.st_mtime_ns}"])


def _check_member(archive: Path, member: tarfile.TarInfo, count: int) -> None:
    """One line for a member netspec will not read. Members are never extracted, but a path out of the
    folder or a link is a sign of a hostile archive, and a link would silently hide a missing file."""
    if count > MAX_ARCHIVE_MEMBERS:
        raise DataError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS:,} members, far more than a CIFAR-10 copy's "
                        "60,000 files; check the archive")
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{archive}: member {member.name!r} points outside the archive's folder; "
                        "refusing the archive: repack it with relative paths")
    if not (member.isfile() or member.isdir()):
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                else "a device, pipe or other special file")
        target = f" to {member.linkname!r}" if member.issym() or member.islnk() else ""
        raise DataError(f"{archive}: member {member.name!r} is {kind}{target}; netspec reads only regular "
                        "files from an archive: repack it without links")
    _check_size(f"{archive}: member {member.name!r}", member.size)


def _check_size(name: str, size: int) -> None:
    """Refuse, before reading it, a file larger than any of a CIFAR-10 copy (data_batch_1 is 31 MB)."""
    if size > MAX_FILE_BYTES:
        raise DataError(f"{name} has {size:,} bytes, more than any file of a CIFAR-10 copy "
                        f"(limit {MAX_FILE_BYTES:,}); check the data")


def _clean_member(name: str) -> str:
    return name[2:] if name.startswith("./") else name

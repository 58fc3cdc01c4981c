"""Where a dataset's images come from: an ImageFolder tree or an archive of one, read in place
($SIMSIAM_DATA or data.source), its content fingerprint (part of a run's identity), and the
decoding of one image."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError, reason

ENV_VAR = "SIMSIAM_DATA"
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# A local copy of a known dataset must have its class count; catches SIMSIAM_DATA at the wrong set.
KNOWN_CLASS_COUNTS = {"cifar10": 10, "cifar100": 100}

# tarfile/zipfile/gzip report damage through all of these, depending on where the damage lies.
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError)
_IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


def resolve_source(source: str | None) -> str | None:
    """Path to read from: a config's data.source, else $SIMSIAM_DATA, else None (torchvision
    download)."""
    if source:
        return source
    env = os.environ.get(ENV_VAR)
    if not env:
        return None
    if not Path(env).exists():
        raise DataError(
            f"{ENV_VAR}={env} does not exist; point it at an archive or ImageFolder tree, "
            "or unset it"
        )
    return env


def source_identity(dataset: str, source: str | None) -> str | None:
    """What the data comes from, by content, for a run's identity: the sha256 of an archive,
    of a tree's file names and sizes, or `torchvision:<dataset>` for a download (None when a
    dataset has no source: `prepare` says what to set)."""
    path = resolve_source(source)
    if path is None:
        return f"torchvision:{dataset}" if dataset in KNOWN_CLASS_COUNTS else None
    root = Path(path)
    if not root.is_dir():
        _check_archive(root)  # at planning, not at the first job
        with root.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    # Hashing every image's bytes would cost as much as decoding; names + sizes catch
    # added, removed and re-encoded files.
    digest = hashlib.sha256()
    for name in sorted(DirSource(root).files):
        digest.update(f"{name}\0{(root / name).stat().st_size}\n".encode())
    return digest.hexdigest()


class Source(Protocol):
    files: list[str]  # relative, '/'-separated
    dirs: set[str]
    random_access: bool  # images can be read one at a time (the streaming path reads so)

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]: ...

    def where(self, name: str) -> str: ...


class DirSource:
    random_access = True

    def __init__(self, root: Path) -> None:
        self.root, self.files, self.dirs = root, [], set()
        for here, subdirs, names in os.walk(root, followlinks=True):
            rel = Path(here).relative_to(root).as_posix()
            prefix = "" if rel == "." else f"{rel}/"
            self.dirs.update(prefix + d for d in subdirs)
            self.files.extend(prefix + n for n in names)

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                yield name, (self.root / name).read_bytes()
            except OSError as e:
                raise DataError(f"cannot read {self.root / name} ({reason(e)})") from e

    def where(self, name: str) -> str:
        return str(self.root / name)


def archive_name(member: str) -> str:
    """An archive member's path as the file index names it (no ./ prefix, no trailing /)."""
    return member.removeprefix("./").rstrip("/")


class ArchiveSource:
    def __init__(self, path: Path) -> None:
        self.path, self.dirs = path, set()
        self.is_tar = path.name.lower().endswith(TAR_SUFFIXES)
        self.random_access = not self.is_tar  # a tar (gzipped) reads in order
        self.members: dict[str, tarfile.TarInfo | zipfile.ZipInfo] = {}
        try:
            if self.is_tar:
                with tarfile.open(path, "r:*") as tar:
                    listing = [(m.name, m, m.isdir(), m.isfile()) for m in tar.getmembers()]
            else:
                with zipfile.ZipFile(path) as archive:
                    listing = [
                        (i.filename, i, i.is_dir(), not i.is_dir()) for i in archive.infolist()
                    ]
        except _ARCHIVE_ERRORS as e:
            raise self._damaged(e) from e
        for raw, member, is_dir, is_file in listing:
            name = archive_name(raw)
            if is_dir:
                self.dirs.add(name)
            elif is_file:
                self.members[name] = member
        self.files = list(self.members)

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        try:
            if self.is_tar:
                # A gzip stream seeks forward cheaply and backward by restarting, so read
                # the members in archive order; TarInfos from the listing locate the data.
                with tarfile.open(self.path, "r:*") as tar:
                    for name in sorted(names, key=lambda n: self.members[n].offset):
                        yield name, tar.extractfile(self.members[name]).read()
            else:
                with zipfile.ZipFile(self.path) as archive:
                    for name in names:
                        yield name, archive.read(self.members[name])
        except _ARCHIVE_ERRORS as e:
            raise self._damaged(e) from e

    def where(self, name: str) -> str:
        return f"{name} in archive {self.path}"

    def _damaged(self, e: BaseException) -> DataError:
        return DataError(
            f"cannot read archive {self.path} ({reason(e)}); re-download or rebuild it"
        )


def _check_archive(path: Path) -> None:
    """A source that is not a directory must be an archive we read (by its name: its content
    is read by `prepare`)."""
    if not path.exists():
        raise DataError(f"data source {path} does not exist; fix data.source or {ENV_VAR}")
    if not path.name.lower().endswith((*TAR_SUFFIXES, ".zip")):
        raise DataError(
            f"data source {path} is not a directory or a .tar.gz/.tgz/.tar/.zip archive; "
            "point it at an ImageFolder tree or an archive of one"
        )


def open_source(path: Path) -> Source:
    if path.is_dir():
        return DirSource(path)
    _check_archive(path)
    return ArchiveSource(path)


def hidden(path: str) -> bool:
    # Editor/OS litter (.DS_Store, __MACOSX/ in zips made on macOS) is not data.
    return any(part.startswith(".") or part == "__MACOSX" for part in path.split("/"))


def layout(source: Source, label: str) -> dict[str, dict[str, list[str]]]:
    """split -> class -> sorted image names, for a tree at the top or under one wrapper folder."""
    files = [f for f in source.files if not hidden(f)]
    folders = {d for d in source.dirs if not hidden(d)}
    for parent in {f.rpartition("/")[0] for f in files}:  # archives may omit directory entries
        while parent:
            folders.add(parent)
            parent = parent.rpartition("/")[0]
    top = sorted(d for d in folders if "/" not in d)
    expected = "expected <root>/train/<class>/<image> and <root>/test/<class>/<image> (or val/)"
    if "train" in folders:
        root = ""
    elif len(top) == 1 and f"{top[0]}/train" in folders:
        root = f"{top[0]}/"
    else:
        found = ", ".join(f"{d}/" for d in top) or "nothing"
        raise DataError(f"{label}: no train/ folder (top level holds {found}); {expected}")
    test = next((s for s in ("test", "val") if root + s in folders), None)
    if test is None:
        raise DataError(
            f"{label}: {root}train/ has no sibling {root}test/ or {root}val/; {expected}"
        )

    tree = {}
    for split, folder in (("train", f"{root}train/"), ("test", f"{root}{test}/")):
        by_class: dict[str, list[str]] = {
            d[len(folder) :].split("/")[0]: [] for d in folders if d.startswith(folder)
        }
        for f in files:
            if f.startswith(folder) and f.lower().endswith(IMAGE_EXTENSIONS):
                cls, nested, _ = f[len(folder) :].partition("/")
                if nested:
                    by_class[cls].append(f)
        if not by_class:
            raise DataError(f"{label}: {folder} has no class folders; {expected}")
        for cls, names in by_class.items():
            if not names:
                raise DataError(
                    f"{label}: class folder {folder}{cls}/ has no images "
                    f"({'/'.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
                )
            names.sort()
        tree[split] = by_class
    if len(tree["train"]) < 2:
        raise DataError(
            f"{label}: {root}train/ has {len(tree['train'])} class folder; accuracy needs at "
            "least 2 classes (one folder per class)"
        )
    if extra := sorted(tree["train"].keys() ^ tree["test"].keys()):
        only = ", ".join(f"{c} (only in {'train' if c in tree['train'] else test})" for c in extra)
        raise DataError(
            f"{label}: train/ and {test}/ class folders differ: {only}; make them match"
        )
    return tree


def class_list_identity(path: str | None) -> str | None:
    """The sha256 of a data.class_list file (None without one, or where it cannot be read:
    `prepare` then says why): the list's content, not its path, is part of a run's identity."""
    if path is None or not Path(path).is_file():
        return None
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_class_list(path: str) -> list[str]:
    """The class folder names a `data.class_list` file keeps: one a line, # starts a comment."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise DataError(
            f"data.class_list = {path}: cannot read it ({reason(e)}); give a file of class "
            "folder names, one a line, or null for every class"
        ) from e
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(
            f"data.class_list = {path}: {len(names)} names, {len(set(names))} distinct; list at "
            "least 2 distinct class folder names, one a line"
        )
    return names


def decode(data: bytes, size: int, where: str) -> np.ndarray:
    return fit(open_rgb(data, where), size)


def open_rgb(data: bytes, where: str) -> Image.Image:
    """An encoded image, decoded to RGB; `where` names it in the error."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except _IMAGE_ERRORS as e:
        # PIL's own message for an unknown format names only an in-memory buffer.
        why = "not a format PIL reads" if isinstance(e, UnidentifiedImageError) else reason(e)
        raise DataError(f"cannot decode image {where} ({why}); replace or remove it") from e


def fit(img: Image.Image, size: int) -> np.ndarray:
    """A 3 x size x size array, as torchvision Resize(size) + CenterCrop(size) would give."""
    w, h = img.size
    if (w, h) != (size, size):
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        # PIL's bilinear filter widens with the scale factor, i.e. it antialiases.
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = round((nw - size) / 2), round((nh - size) / 2)
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img).transpose(2, 0, 1)

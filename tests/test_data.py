"""Tests for the decode-once data preparation in simsiam_lab.data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from baseline import data_config
from PIL import Image

from simsiam_lab import data
from simsiam_lab.config import DataConfig
from simsiam_lab.data import Manifest, load_split, prepare
from simsiam_lab.datasource import resolve_source
from simsiam_lab.errors import DataError

REAL_ARCHIVE = Path(__file__).parents[2] / "shared/datasets/cifar10-jpeg.tar.gz"
CLASSES = ["blue", "green", "red"]  # sorted, so label i is CLASSES[i]
N_TRAIN, N_TEST, SIZE = 6, 2, 8


def _colour(label: int, index: int, split: str) -> tuple[int, int, int]:
    # Every image is distinct and says where it came from: R = class, G = index, B = split.
    return 40 + 80 * label, 20 * index, 0 if split == "train" else 200


def _write_tree(root: Path) -> Path:
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for label, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = Image.new("RGB", (SIZE, SIZE), _colour(label, i, split))
                img.save(folder / f"{i:03d}.png")
    (root / "train" / "red" / ".DS_Store").write_bytes(b"litter")
    return root


def _tar(tree: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return out


def _zip(tree: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(tree.rglob("*")):
            archive.write(path, (tree.name / path.relative_to(tree)).as_posix())
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An ImageFolder tree wrapped in one top-level folder, like the real archive."""
    return _write_tree(tmp_path / "src" / "toy")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIMSIAM_DATA", raising=False)


def _spec(source: Path | None, **kw) -> DataConfig:
    return data_config(
        dataset="imagefolder", source=str(source) if source else None, stored_size=SIZE, **kw
    )


def _arrays(out: Path) -> dict[str, np.ndarray]:
    return {f.stem: np.load(f) for f in sorted(out.glob("*.npy"))}


def _assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


# ---------------------------------------------------------------------------- sources


def test_tree_tar_and_zip_give_the_same_arrays_and_manifest(tree: Path, tmp_path: Path):
    sources = {
        "wrapped": tree.parent,
        "root": tree,
        "tar": _tar(tree, tmp_path / "toy.tar.gz"),
        "zip": _zip(tree, tmp_path / "toy.zip"),
    }
    results = {}
    for name, source in sources.items():
        manifest = prepare(_spec(source), tmp_path / name)
        results[name] = manifest, _arrays(tmp_path / name)
    ref_manifest, ref_arrays = results["tar"]
    for manifest, arrays in results.values():
        assert arrays.keys() == ref_arrays.keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, ref_arrays[key])
        drop = {"source", "source_sha256"}
        assert {k: v for k, v in asdict(manifest).items() if k not in drop} == {
            k: v for k, v in asdict(ref_manifest).items() if k not in drop
        }


def test_manifest_records_source_counts_and_format(tree: Path, tmp_path: Path):
    archive = _tar(tree, tmp_path / "toy.tgz")
    manifest = prepare(_spec(archive), tmp_path / "out")
    assert asdict(manifest) == json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert Manifest.read(tmp_path / "out") == manifest
    assert manifest.source == str(archive)
    assert manifest.source_sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert manifest.classes == CLASSES
    assert manifest.counts == {
        "train": dict.fromkeys(CLASSES, N_TRAIN),
        "test": dict.fromkeys(CLASSES, N_TEST),
    }
    assert manifest.format == "npy uint8 NCHW"
    assert manifest.stored_size == SIZE
    assert (manifest.train_per_class, manifest.test_per_class) == (None, None)

    tree_hash = prepare(_spec(tree), tmp_path / "t1").source_sha256
    assert len(tree_hash) == 64
    (tree / "train" / "red" / "999.png").write_bytes((tree / "train/red/000.png").read_bytes())
    assert prepare(_spec(tree), tmp_path / "t2").source_sha256 != tree_hash


def test_load_split_round_trip(tree: Path, tmp_path: Path):
    prepare(_spec(tree), tmp_path / "out")
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        s = load_split(tmp_path / "out", split)
        assert s.images.shape == (n * len(CLASSES), 3, SIZE, SIZE)
        assert s.images.dtype == torch.uint8 and s.labels.dtype == torch.int64
        assert s.labels.shape == (len(s.images),)
        assert s.images.is_contiguous()
        assert s.classes == CLASSES
        assert s.labels.min() >= 0 and s.labels.max() < len(CLASSES)
        # Pixels decode back to the colour written for that label and split.
        reds = s.images[:, 0, 0, 0].long()
        assert (reds == 40 + 80 * s.labels).all()
        assert (s.images[:, 2] == (0 if split == "train" else 200)).all()


def test_zip_without_wrapper_and_val_split(tmp_path: Path):
    root = _write_tree(tmp_path / "flat")
    (root / "test").rename(root / "val")
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*.png")):
            z.write(path, path.relative_to(root).as_posix())
        z.writestr("__MACOSX/._junk", b"")
    manifest = prepare(_spec(archive), tmp_path / "out")
    assert manifest.counts["test"] == dict.fromkeys(CLASSES, N_TEST)


# ---------------------------------------------------------------------------- subsets


def test_stratified_subset_counts_and_determinism(tree: Path, tmp_path: Path):
    archive = _tar(tree, tmp_path / "toy.tar.gz")
    kw = {"train_per_class": 4, "test_per_class": 1}
    m = prepare(_spec(archive, subset_seed=0, **kw), tmp_path / "a")
    assert m.counts == {"train": dict.fromkeys(CLASSES, 4), "test": dict.fromkeys(CLASSES, 1)}
    assert (m.train_per_class, m.test_per_class, m.subset_seed) == (4, 1, 0)
    prepare(_spec(tree, subset_seed=0, **kw), tmp_path / "b")
    prepare(_spec(archive, subset_seed=1, **kw), tmp_path / "c")
    a, b, c = (_arrays(tmp_path / x) for x in "abc")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["train_images"], c["train_images"])
    # The subset is drawn from the full set, per class.
    prepare(_spec(tree), tmp_path / "full")
    full = load_split(tmp_path / "full", "train")
    full_pixels = {tuple(img[:, 0, 0].tolist()) for img in full.images}
    assert all(tuple(img[:, 0, 0].tolist()) in full_pixels for img in a["train_images"])
    assert np.bincount(a["train_labels"]).tolist() == [4, 4, 4]


def test_train_subset_does_not_depend_on_test_subset(tree: Path, tmp_path: Path):
    prepare(_spec(tree, train_per_class=3, test_per_class=1), tmp_path / "a")
    prepare(_spec(tree, train_per_class=3, test_per_class=2), tmp_path / "b")
    np.testing.assert_array_equal(
        _arrays(tmp_path / "a")["train_images"], _arrays(tmp_path / "b")["train_images"]
    )


def test_subset_decodes_only_the_chosen_images(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = []
    decode = data.decode
    monkeypatch.setattr(data, "decode", lambda *a: calls.append(a[2]) or decode(*a))
    prepare(
        _spec(_tar(tree, tmp_path / "t.tar"), train_per_class=2, test_per_class=1), tmp_path / "o"
    )
    assert len(calls) == 3 * 2 + 3 * 1


# ---------------------------------------------------------------------------- resizing


@pytest.mark.parametrize("size", [4, 16])
def test_resize_solid_images(tree: Path, tmp_path: Path, size: int):
    prepare(
        data_config(dataset="imagefolder", source=str(tree), stored_size=size), tmp_path / "out"
    )
    s = load_split(tmp_path / "out", "train")
    assert s.images.shape == (N_TRAIN * len(CLASSES), 3, size, size)
    # A solid colour survives resizing exactly.
    assert (s.images == s.images[:, :, :1, :1]).all()
    assert (s.images[:, 0, 0, 0].long() == 40 + 80 * s.labels).all()


def test_resize_non_square_crops_the_centre(tmp_path: Path):
    root = tmp_path / "tall"
    for split in ("train", "test"):
        for cls in ("a", "b"):  # two classes: a one-class tree is refused
            (root / split / cls).mkdir(parents=True)
            img = Image.new("RGB", (4, 12), (255, 0, 0))  # red / green / blue thirds, top to bottom
            img.paste((0, 255, 0), (0, 4, 4, 8))
            img.paste((0, 0, 255), (0, 8, 4, 12))
            img.save(root / split / cls / "0.png")
    prepare(data_config(dataset="imagefolder", source=str(root), stored_size=4), tmp_path / "out")
    s = load_split(tmp_path / "out", "train")
    assert s.images.shape == (2, 3, 4, 4)
    assert s.images[0, :, :, :].reshape(3, -1).T.tolist() == [[0, 255, 0]] * 16


# ---------------------------------------------------------------------------- errors


def _fails(spec: DataConfig, out: Path, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        prepare(spec, out)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    _assert_nothing_left(out)
    return message


def test_corrupt_image_in_archive_names_member_and_archive(tree: Path, tmp_path: Path):
    (tree / "train" / "red" / "003.png").write_bytes(b"not a png at all")
    archive = _tar(tree, tmp_path / "toy.tar.gz")
    _fails(_spec(archive), tmp_path / "out", "toy/train/red/003.png", str(archive))


def test_truncated_image_in_tree(tree: Path, tmp_path: Path):
    path = tree / "test" / "blue" / "001.jpg"
    Image.new("RGB", (SIZE, SIZE), (1, 2, 3)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:40])
    _fails(_spec(tree), tmp_path / "out", str(path))


@pytest.mark.parametrize("kind", ["garbage.tar.gz", "garbage.zip", "truncated.tar.gz"])
def test_corrupt_archive_is_named(tree: Path, tmp_path: Path, kind: str):
    archive = tmp_path / kind
    if kind.startswith("truncated"):
        whole = _tar(tree, tmp_path / "whole.tar.gz").read_bytes()
        archive.write_bytes(whole[: len(whole) // 2])
    else:
        archive.write_bytes(os.urandom(2048))
    _fails(_spec(archive), tmp_path / "out", str(archive), "archive")


def test_empty_class_folder_is_named(tree: Path, tmp_path: Path):
    (tree / "train" / "purple").mkdir()
    (tree / "train" / "purple" / "notes.txt").write_text("no images here")
    _fails(_spec(tree), tmp_path / "out", "train/purple/")


def test_differing_class_sets_are_listed(tree: Path, tmp_path: Path):
    (tree / "test" / "green").rename(tmp_path / "moved")
    (tmp_path / "moved").rename(tree / "test" / "yellow")
    _fails(_spec(_zip(tree, tmp_path / "t.zip")), tmp_path / "out", "green", "yellow")


def test_a_single_class_is_refused(tree: Path, tmp_path: Path):
    for split in ("train", "test"):
        for cls in ("green", "red"):
            shutil.rmtree(tree / split / cls)
    _fails(_spec(tree), tmp_path / "out", "1 class folder", "at least 2 classes")
    assert not (tmp_path / "out").exists()


def test_missing_test_split(tree: Path, tmp_path: Path):
    (tree / "test").rename(tmp_path / "elsewhere")
    _fails(_spec(tree), tmp_path / "out", "test/", "val/")


def test_missing_train_split(tmp_path: Path):
    (tmp_path / "odd" / "images" / "a").mkdir(parents=True)
    _fails(_spec(tmp_path / "odd"), tmp_path / "out", "train/", "images/")


def test_per_class_counts_mean_up_to(tree: Path, tmp_path: Path):
    (tree / "train" / "green" / "000.png").unlink()
    manifest = prepare(_spec(tree, train_per_class=6), tmp_path / "out")
    assert manifest.counts["train"] == {"blue": 6, "green": 5, "red": 6}


def test_unsupported_and_missing_sources(tmp_path: Path):
    (tmp_path / "data.rar").write_bytes(b"x")
    _fails(_spec(tmp_path / "data.rar"), tmp_path / "out", "data.rar")
    _fails(_spec(tmp_path / "nope.tar.gz"), tmp_path / "out", "nope.tar.gz")


def test_imagefolder_needs_a_source(tmp_path: Path):
    _fails(data_config(dataset="imagefolder"), tmp_path / "out", "SIMSIAM_DATA")


def test_ten_classes_that_are_not_cifar10_are_not_called_cifar10(tmp_path: Path):
    root = tmp_path / "flowers"
    for split in ("train", "test"):
        for i in range(10):
            (root / split / f"flower{i}").mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(root / split / f"flower{i}" / "0.png")
    message = _fails(
        data_config(dataset="cifar10", source=str(root)), tmp_path / "out", "not CIFAR-10's"
    )
    assert "flower0" in message and "use dataset imagefolder" in message
    assert prepare(
        data_config(dataset="imagefolder", source=str(root), stored_size=4), tmp_path / "ok"
    ).classes


def test_known_dataset_with_wrong_class_count(tree: Path, tmp_path: Path):
    _fails(
        data_config(dataset="cifar10", source=str(tree)),
        tmp_path / "out",
        "3 classes",
        "cifar10 has 10",
    )


# ---------------------------------------------------------------------------- SIMSIAM_DATA


def test_resolve_source_precedence(tree: Path, monkeypatch: pytest.MonkeyPatch):
    assert resolve_source(data_config(dataset="cifar10").source) is None
    monkeypatch.setenv("SIMSIAM_DATA", str(tree))
    assert resolve_source(data_config(dataset="cifar10").source) == str(tree)
    assert resolve_source(data_config(dataset="cifar10", source="given").source) == "given"


def test_env_pointing_at_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    missing = tmp_path / "gone.tar.gz"
    monkeypatch.setenv("SIMSIAM_DATA", str(missing))
    _fails(data_config(dataset="cifar10"), tmp_path / "out", "SIMSIAM_DATA", str(missing))


def test_env_source_is_used(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SIMSIAM_DATA", str(_zip(tree, tmp_path / "t.zip")))
    assert prepare(_spec(None), tmp_path / "out").source == str(tmp_path / "t.zip")


# ---------------------------------------------------------------------------- torchvision


class _FakeCIFAR10:
    classes = ("airplane", "automobile", "bird", "cat", "deer")  # five suffice; sorted like CIFAR

    def __init__(self, root: str, train: bool, download: bool) -> None:
        n = 4 if train else 2
        self.targets = [i % len(self.classes) for i in range(n * len(self.classes))]
        self.data = np.stack([np.full((32, 32, 3), 10 * t + train, np.uint8) for t in self.targets])


def test_torchvision_download_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("torchvision.datasets.CIFAR10", _FakeCIFAR10)
    spec = data_config(dataset="cifar10", stored_size=16, train_per_class=3)
    manifest = prepare(spec, tmp_path / "out", download_root=tmp_path / "dl")
    assert manifest.source == "torchvision" and manifest.source_sha256 == "torchvision:cifar10"
    assert manifest.counts["train"] == dict.fromkeys(_FakeCIFAR10.classes, 3)
    assert manifest.counts["test"] == dict.fromkeys(_FakeCIFAR10.classes, 2)
    s = load_split(tmp_path / "out", "train")
    assert s.images.shape == (15, 3, 16, 16)
    assert (s.images[:, 0, 0, 0].long() == 10 * s.labels + 1).all()


def test_download_failure_points_at_simsiam_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def offline(**_: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", offline)
    message = _fails(
        data_config(dataset="cifar10"), tmp_path / "out", "download failed", "SIMSIAM_DATA="
    )
    assert "name resolution" in message


# ---------------------------------------------------------------------------- output


def test_existing_output_is_replaced_only_on_success(tree: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    prepare(_spec(tree), out)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]
    assert not list(tmp_path.glob(".out.tmp-*"))
    (tree / "train" / "red" / "001.png").write_bytes(b"corrupt")
    with pytest.raises(DataError):
        prepare(_spec(tree), out)
    assert (out / "manifest.json").is_file()


def test_load_split_errors(tmp_path: Path):
    with pytest.raises(DataError, match="simsiam prepare"):
        load_split(tmp_path / "never", "train")
    with pytest.raises(DataError, match="validation"):
        load_split(tmp_path, "validation")


# ---------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"{REAL_ARCHIVE} not present")
def test_real_cifar10_archive_subset(tmp_path: Path):
    spec = data_config(
        dataset="cifar10",
        source=str(REAL_ARCHIVE),
        stored_size=32,
        train_per_class=50,
        test_per_class=20,
    )
    manifest = prepare(spec, tmp_path / "out")
    assert len(manifest.classes) == 10 and manifest.classes[0] == "airplane"
    assert manifest.counts["train"] == dict.fromkeys(manifest.classes, 50)
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert train.images.shape == (500, 3, 32, 32) and test.images.shape == (200, 3, 32, 32)
    assert 60 < train.images.float().mean() < 180

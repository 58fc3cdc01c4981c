"""The streaming data path: the file index, crops from the full image, seeding, sharding, resume,
the choice between in-memory and streaming, and evaluation's view."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from baseline import cifar_augment, data_config
from PIL import Image

from simsiam_lab import data, evaluate, stream
from simsiam_lab.augment import augment, augmentation, photometric, sample_crop_params
from simsiam_lab.batches import StreamBatches
from simsiam_lab.config import RunConfig, deep_merge
from simsiam_lab.data import (
    FORMAT,
    INDEX_FORMAT,
    FileIndex,
    Manifest,
    Split,
    choose_loader,
    open_split,
    prepare,
)
from simsiam_lab.errors import DataError
from simsiam_lab.evaluate import KnnProbe, encode, eval_view, frozen_accuracies
from simsiam_lab.stream import EpochLoader, TrainCrops, loader, rank_batches, workers
from simsiam_lab.study import Params
from simsiam_lab.train import build_model, pretrain

PARAMS = Params(Path(__file__).parents[1] / "params")
CLASSES = ["a", "b", "c"]
SHAPES = [(64, 48), (48, 64), (56, 56), (72, 40)]  # (width, height): varied aspect ratios
# Crop and flip only, unnormalised: the geometry the two paths must share.
GEOMETRY = cifar_augment(jitter_p=0.0, grayscale_p=0.0, mean=(0, 0, 0), std=(1, 1, 1))


def _write_tree(root: Path, train: int = 16, test: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for label, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                w, h = SHAPES[i % len(SHAPES)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[..., label] = 255  # each class leans to one channel, for the probes
                Image.fromarray(pixels).save(root / split / cls / f"{i:02d}.jpg", quality=90)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _write_tree(tmp_path / "tree")


def _prepare(tree: Path, out: Path, loader: str, **spec) -> Manifest:
    return prepare(
        data_config(dataset="imagefolder", source=str(tree), stored_size=24, loader=loader, **spec),
        out,
    )


def _ramp(width: int, height: int) -> Image.Image:
    """R encodes x and G encodes y, so a crop's pixels say where in the image it was cut."""
    x = (np.arange(width) + 0.5) / width * 255
    y = (np.arange(height) + 0.5) / height * 255
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = np.round(x)[None, :]
    pixels[..., 1] = np.round(y)[:, None]
    return Image.fromarray(pixels)


def _single_image(tmp_path: Path, img: Image.Image) -> FileIndex:
    img.save(tmp_path / "img.png")
    return FileIndex(tmp_path, ["img.png"], torch.zeros(1, dtype=torch.int64), ["x"], img.width)


def _geometry(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Crop width/height fractions and flips read back from views of a ramp image."""
    r, g = views[:, 0].double(), views[:, 1].double()
    left, right = r[:, :, 0].mean(1), r[:, :, -1].mean(1)
    top, bottom = g[:, 0].mean(1), g[:, -1].mean(1)
    size = views.shape[-1]
    # The outer pixel centres sit half a pixel inside the crop: scale out to its edges.
    return {
        "w": (right - left).abs() / 255 * size / (size - 1),
        "h": (bottom - top) / 255 * size / (size - 1),
        "flip": right < left,
    }


def test_the_file_index_holds_the_in_memory_path_s_subset(tree: Path, tmp_path: Path, capsys):
    memory = _prepare(tree, tmp_path / "memory", "memory", train_per_class=10)
    streamed = _prepare(tree, tmp_path / "stream", "stream", train_per_class=10)
    assert memory.format == FORMAT and streamed.format == INDEX_FORMAT
    assert memory.counts == streamed.counts
    assert not list((tmp_path / "stream").glob("*_images.npy"))  # nothing decoded
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("data path: in-memory, 0.0 GB of ")
    assert lines[1] == "data path: streaming (data.loader: stream)"
    for split in ("train", "test"):
        arrays, index = (
            open_split(tmp_path / "memory", split),
            open_split(tmp_path / "stream", split),
        )
        assert isinstance(index, FileIndex) and index.classes == arrays.classes
        assert torch.equal(index.labels, arrays.labels)
        # Evaluation decodes each file as prepare would have stored it: the same pixels.
        assert torch.equal(torch.cat(list(stream.stored_batches(index, 7, 0))), arrays.images)


def test_auto_decides_by_the_data_s_size_alone_and_memory_must_fit_the_machine():
    gb = 10**9
    assert choose_loader("auto", 16, 1 * gb, gb, 24 * gb, None) == (
        "memory",
        "data path: in-memory, 1.0 GB of 24.0 GB RAM",
    )
    # The same data streams on every machine, however much memory it has: one config, one path.
    for ram in (24 * gb, 2000 * gb):
        assert choose_loader("auto", 16, 190 * gb, 150 * gb, ram, None) == (
            "stream",
            "data path: streaming, the decoded images would take 190.0 GB, more than "
            "data.memory_limit_gb = 16",
        )
    assert choose_loader("stream", 16, 1, 1, 24 * gb, None)[0] == "stream"
    # In memory, training keeps its split on the GPU: a machine it does not fit is refused.
    with pytest.raises(DataError, match=r"more than 50% of this machine's 16\.0 GB GPU memory"):
        choose_loader("auto", 16, 12 * gb, 10 * gb, 128 * gb, 16 * gb)


def test_memory_that_would_not_fit_is_refused_in_one_line(tree: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(data, "host_memory", lambda: 10_000)  # bytes: 60 images of 24 px do not fit
    for way in ("memory", "auto"):
        with pytest.raises(DataError) as err:
            _prepare(tree, tmp_path / way, way)
        message = str(err.value)
        assert message.startswith(f"data.loader = {way}: the decoded images take 0.0 GB, more")
        assert "use data.loader: stream" in message and "\n" not in message
        assert not (tmp_path / way).exists()
    assert _prepare(tree, tmp_path / "stream", "stream").format == INDEX_FORMAT


def test_a_tar_archive_is_not_streamed(tree: Path, tmp_path: Path):
    with tarfile.open(tmp_path / "tree.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname="tree")
    with pytest.raises(DataError, match="extract it first") as err:
        _prepare(tmp_path / "tree.tar.gz", tmp_path / "out", "stream")
    assert "\n" not in str(err.value)


def test_a_zip_archive_streams_like_its_tree(tree: Path, tmp_path: Path):
    archive = Path(shutil.make_archive(str(tmp_path / "tree"), "zip", tree.parent, "tree"))
    _prepare(tree, tmp_path / "dir", "stream")
    _prepare(archive, tmp_path / "zip", "stream")
    from_dir, from_zip = (open_split(tmp_path / d, "test") for d in ("dir", "zip"))
    assert from_zip.files == [f"tree/{name}" for name in from_dir.files]  # its wrapper folder
    first, second = (torch.cat(list(stream.stored_batches(s, 8, 0))) for s in (from_dir, from_zip))
    assert torch.equal(first, second)


def test_a_class_list_keeps_its_classes_and_names_a_missing_one(tree: Path, tmp_path: Path):
    listed = tmp_path / "classes.txt"
    listed.write_text("# two of three\nc\na\n")
    manifest = _prepare(tree, tmp_path / "out", "stream", class_list=str(listed))
    assert manifest.classes == ["a", "c"] and manifest.class_list == str(listed)
    index = open_split(tmp_path / "out", "train")
    assert {f.split("/")[1] for f in index.files} == {"a", "c"}
    assert [index.classes[i] for i in index.labels] == [f.split("/")[1] for f in index.files]
    listed.write_text("a\nn02869837\n")
    with pytest.raises(DataError) as err:
        _prepare(tree, tmp_path / "out2", "stream", class_list=str(listed))
    assert "1 of the 2 classes in data.class_list" in str(err.value)
    assert "(n02869837)" in str(err.value) and "\n" not in str(err.value)


def test_imagenet100_lists_100_distinct_wnids():
    cfg = PARAMS.resolve("imagenet100")
    names = data.read_class_list(str(PARAMS.root / Path(cfg.data.class_list).name))
    assert len(names) == len(set(names)) == 100
    assert all(n.startswith("n") and len(n) == 9 for n in names)


def test_streamed_crops_have_the_in_memory_path_s_statistics(tmp_path: Path):
    img, n, size = _ramp(48, 48), 600, 24
    crops = TrainCrops(_single_image(tmp_path, img), size, GEOMETRY, n, seed=0)
    streamed = _geometry(crops[(1, 0)][0])
    stored = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())
    gen = torch.Generator().manual_seed(0)
    in_memory = _geometry(augment(stored.expand(n, -1, -1, -1), size, GEOMETRY, gen) * 255)
    area, want_area = streamed["w"] * streamed["h"], in_memory["w"] * in_memory["h"]
    assert area.mean().item() == pytest.approx(want_area.mean().item(), abs=0.03)
    assert area.min() > 0.18 and want_area.min() > 0.18  # scale (0.2, 1), pixels rounded
    ratio = (streamed["w"] / streamed["h"]).log()
    want_ratio = (in_memory["w"] / in_memory["h"]).log()
    assert ratio.mean().item() == pytest.approx(want_ratio.mean().item(), abs=0.04)
    assert ratio.std().item() == pytest.approx(want_ratio.std().item(), rel=0.1)
    for views in (streamed, in_memory):
        assert views["flip"].double().mean().item() == pytest.approx(0.5, abs=0.06)
    # The device-side rest of the augmentation is the library's own: grayscale at its rate.
    gray = cifar_augment(jitter_p=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    views = photometric(crops[(1, 0)][0], gray, torch.Generator().manual_seed(1))
    is_gray = (views[:, 0] == views[:, 1]).flatten(1).all(1)
    assert is_gray.double().mean().item() == pytest.approx(0.2, abs=0.05)


def test_crops_are_drawn_from_the_full_image_not_its_centre_square(tmp_path: Path):
    # A wide image, white outside its central square: a crop showing white came from outside.
    pixels = np.zeros((32, 96, 3), np.uint8)
    pixels[:, :32] = pixels[:, 64:] = 255
    crops = TrainCrops(_single_image(tmp_path, Image.fromarray(pixels)), 16, GEOMETRY, 200, 0)
    views = crops[(1, 0)][0]
    outside = (views.flatten(1) > 200).any(1)
    assert 0.3 < outside.double().mean() < 1.0
    # The in-memory path stores the central square, so its crops never reach the white.
    square = data.fit(Image.fromarray(pixels), 32)
    assert (square == 0).all()


def test_randomness_is_a_function_of_seed_epoch_and_index(tmp_path: Path):
    index = _single_image(tmp_path, _ramp(40, 30))
    crops = TrainCrops(index, 16, GEOMETRY, 2, seed=3)
    assert torch.equal(crops[(1, 0)][0], TrainCrops(index, 16, GEOMETRY, 2, seed=3)[(1, 0)][0])
    assert not torch.equal(crops[(1, 0)][0], crops[(2, 0)][0])  # another epoch, other crops
    assert not torch.equal(crops[(1, 0)][0], TrainCrops(index, 16, GEOMETRY, 2, 4)[(1, 0)][0])
    assert torch.equal(stream.epoch_order(0, 5, 100), stream.epoch_order(0, 5, 100))
    assert not torch.equal(stream.epoch_order(0, 5, 100), stream.epoch_order(0, 6, 100))


def test_finished_views_are_the_crops_finished_by_the_same_generator(tmp_path: Path):
    index = _single_image(tmp_path, _ramp(40, 30))
    aug = cifar_augment()
    views, _ = TrainCrops(index, 16, aug, 2, seed=3, finished=True)[(1, 0)]
    crops, _ = TrainCrops(index, 16, aug, 2, seed=3)[(1, 0)]
    gen = torch.Generator().manual_seed(stream.derived_seed(3, stream._CROP, 1, 0))
    sample_crop_params(2, 30, 40, aug, gen)  # the crops' draws come first
    assert views.dtype == torch.float32 and views.shape == (2, 3, 16, 16)
    assert torch.equal(views, photometric(crops, aug, gen))


@pytest.mark.parametrize("finished", [False, True], ids=["cropped", "finished"])
def test_batches_do_not_depend_on_the_number_of_workers(tree: Path, tmp_path: Path, finished):
    _prepare(tree, tmp_path / "out", "stream")
    train = open_split(tmp_path / "out", "train")
    crops = TrainCrops(train, 16, cifar_augment(), 2, seed=0, finished=finished)
    keys = rank_batches(len(crops), 8, seed=0, epoch=1)[:3]
    batches = {n: list(loader(crops, keys, num_workers=n)) for n in (0, 2)}
    for (a, ia), (b, ib) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a, b) and torch.equal(ia, ib)


def test_training_on_a_cpu_takes_the_views_the_workers_finished(tree: Path, tmp_path: Path):
    _prepare(tree, tmp_path / "out", "stream")
    train = open_split(tmp_path / "out", "train")
    cfg = _config(loss={"symmetric": False, "pairs": 2})
    source = StreamBatches(cfg, train, torch.device("cpu"), rank=0, world=1)
    idx, pairs = next(source.epoch(1, torch.Generator().manual_seed(0)))
    finished = TrainCrops(train, 16, augmentation(cfg), 4, cfg.seed, finished=True)
    first = int(idx[0])
    assert torch.equal(torch.stack([v[0] for pair in pairs for v in pair]), finished[(1, first)][0])


class _WhoLoads(torch.utils.data.Dataset):
    """Each item: the key asked for, and the pid of the worker process that loaded it."""

    def __getitem__(self, key: int) -> torch.Tensor:
        return torch.tensor([key, os.getpid()])


def test_the_epoch_loader_starts_its_workers_once_and_gives_each_epoch_its_keys():
    keys_of = lambda epoch: [[10 * epoch + i, 10 * epoch + i + 1] for i in range(0, 6, 2)]  # noqa: E731
    epochs = EpochLoader(_WhoLoads(), keys_of, num_workers=2)
    pids = set()
    for epoch in (1, 2, 3):
        batches = list(epochs(epoch))
        assert [b[:, 0].tolist() for b in batches] == keys_of(epoch)
        pids |= {pid for b in batches for pid in b[:, 1].tolist()}
    assert len(pids) == 2 and os.getpid() not in pids  # not 6: the same two workers throughout
    in_process = EpochLoader(_WhoLoads(), keys_of, num_workers=0)  # no workers: this process
    assert [b[:, 0].tolist() for b in in_process(2)] == keys_of(2)


def test_workers_share_the_cores_among_torchrun_s_local_processes(monkeypatch):
    monkeypatch.delenv("SIMSIAM_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert workers() == 8  # 15 free cores, at most 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert workers() == 3  # 4 cores a process, one of them the training loop's
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert workers() == 1


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_share_each_global_batch_exactly_once(world: int):
    whole = rank_batches(50, 8, seed=1, epoch=3)
    assert len(whole) == 50 // 8 and len({i for b in whole for _, i in b}) == 6 * 8
    shards = [rank_batches(50, 8, seed=1, epoch=3, rank=r, world=world) for r in range(world)]
    for step, batch in enumerate(whole):
        # In rank order the shards are the global batch: the rows BatchShard gives each rank.
        assert [key for shard in shards for key in shard[step]] == batch
    assert len(rank_batches(50, 8, 1, 3, drop_last=False)[-1]) == 2


def test_evaluation_views_the_centre_crop_unless_told_to_resize():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    cfg = PARAMS.resolve("cpu")  # image_size 24 of 32
    assert cfg.data.test_view == "resize"
    assert eval_view(cfg)(images).shape == (2, 3, 24, 24)
    centre = cfg.merged({"data": {"test_view": "centre_crop"}}, "test")
    expected = eval_view(cfg)(images[..., 4:28, 4:28])  # a 24 px input is only normalised
    assert torch.equal(eval_view(centre)(images), expected)
    assert PARAMS.resolve("imagenet").data.test_view == "centre_crop"


def _config(**overrides) -> RunConfig:
    cfg = PARAMS.resolve("smoke")
    small = {
        "data": {"image_size": 16, "stored_size": 24, "test_view": "centre_crop"},
        "optim": {"epochs": 3, "batch_size": 16},
        "monitor": {"knn_every": 0},
        "eval": {"knn_k": 5, "linear_epochs": 2, "linear_batch_size": 16},
    }
    return cfg.merged(small, "test").merged(overrides, "test")


def test_both_paths_evaluate_the_same_features(tree: Path, tmp_path: Path):
    _prepare(tree, tmp_path / "memory", "memory")
    _prepare(tree, tmp_path / "stream", "stream")
    cfg, model = _config(), build_model(_config())
    for split in ("train", "test"):
        a, b = (encode(model, cfg, open_split(tmp_path / d, split)) for d in ("memory", "stream"))
        assert torch.equal(a, b)


def test_the_monitor_streams_a_fixed_subset_decoded_once(tree: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(evaluate, "MONITOR_PER_CLASS", {"train": 5, "test": 2})
    _prepare(tree, tmp_path / "memory", "memory")
    _prepare(tree, tmp_path / "stream", "stream")
    cfg = _config()
    memory = [open_split(tmp_path / "memory", s) for s in ("train", "test")]
    streamed = [open_split(tmp_path / "stream", s) for s in ("train", "test")]
    # In memory: the whole splits, as before.
    probe = evaluate.monitor_probe(cfg, *memory)
    assert probe.train is memory[0] and probe.test is memory[1]
    # Streamed: 5 training and 2 test images a class, in memory, the same ones every time.
    first, again = (evaluate.monitor_probe(cfg, *streamed) for _ in range(2))
    assert isinstance(first.train, Split) and isinstance(first.test, Split)
    assert first.train.labels.bincount().tolist() == [5, 5, 5]
    assert first.test.labels.bincount().tolist() == [2, 2, 2]
    assert torch.equal(first.train.images, again.train.images)
    # ... decoded as the in-memory path stores them: each image is one of that split's.
    stored = {bytes(img.numpy()) for img in memory[0].images}
    assert all(bytes(img.numpy()) in stored for img in first.train.images)
    assert 0 <= first(build_model(cfg)) <= 100


def test_the_paper_probe_runs_on_streamed_files(tree: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(stream.ENV_WORKERS, "0")
    _prepare(tree, tmp_path / "stream", "stream")
    cfg = _config(eval={"linear_probe": "paper"})
    train, test = (open_split(tmp_path / "stream", s) for s in ("train", "test"))
    found = frozen_accuracies(build_model(cfg), cfg, KnnProbe(cfg, train, test))
    assert 0.0 <= found["linear"] <= 100.0 and 0.0 <= found["knn"] <= 100.0


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_a_streamed_run_resumes_to_the_same_weights(tree: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(stream.ENV_WORKERS, "1")
    _prepare(tree, tmp_path / "data", "stream")
    cfg = _config(loss={"symmetric": False, "pairs": 2})  # two pairs: four crops an image
    pretrain(cfg, tmp_path / "data", tmp_path / "whole")

    def kill_after_epoch_2(record):
        if record["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        pretrain(cfg, tmp_path / "data", tmp_path / "resumed", kill_after_epoch_2)
    summary = pretrain(cfg, tmp_path / "data", tmp_path / "resumed")
    assert summary["status"] == "ok" and summary["steps"] == 3 * (48 // 16)
    whole, resumed = (torch.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "resumed"))
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    history = [
        json.loads((tmp_path / d / "history.json").read_text()) for d in ("whole", "resumed")
    ]
    assert history[0] == history[1]


@pytest.mark.slow
def test_two_cpu_processes_stream_as_one(tree: Path, tmp_path: Path):
    params = tmp_path / "params"
    shutil.copytree(PARAMS.root, params)
    profiles = yaml.safe_load((params / "profiles.yaml").read_text())
    profiles["ddp"] = {
        "description": "two processes on the streaming path",
        "overrides": deep_merge(
            profiles["smoke"]["overrides"],
            {
                "data": {"dataset": "imagefolder", "image_size": 16, "stored_size": 24},
                "optim": {"epochs": 2, "batch_size": 16},  # 3 steps an epoch
                "monitor": {"knn_every": 0},
            },
            "test",
        ),
    }
    profiles["ddp"]["overrides"]["data"] |= {"loader": "stream"}
    (params / "profiles.yaml").write_text(yaml.safe_dump(profiles, sort_keys=False))
    simsiam = [shutil.which("simsiam"), "--params", str(params), "--threads", "1"]
    env = dict(
        os.environ,
        SIMSIAM_DATA=str(tree),
        SIMSIAM_WORKERS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
    )
    pretrain = [*simsiam, "pretrain", "--profile", "ddp", "--row", "table3:c"]
    pretrain += ["--data", str(tmp_path / "data"), "--out"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", "2", "--no-python"]
    for cmd in (
        [*simsiam, "prepare", "--profile", "ddp", "--out", str(tmp_path / "data")],
        [*pretrain, str(tmp_path / "one")],
        [*torchrun, *pretrain, str(tmp_path / "two")],
    ):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    histories = [json.loads((tmp_path / r / "history.json").read_text()) for r in ("one", "two")]
    losses = [[r["loss"] for r in history] for history in histories]
    assert len(losses[0]) == 2
    # As tests/test_distributed.py: the same batches, sums reduced in another order.
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    w1, w2 = (torch.load(tmp_path / r / "checkpoint.pt")["model"] for r in ("one", "two"))
    for key in w1:
        if w1[key].is_floating_point():
            torch.testing.assert_close(w2[key], w1[key], atol=5e-5, rtol=1e-3, msg=key)

"""The benchmark compares like with like: from the same weights, every contender computes the
same loss and the same gradients as our step; the epoch section's loops train on the same
images, the official-style one with the paper's augmentation, ours being the library's loop."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from baseline import model_config
from PIL import Image

from simsiam_lab.augment import CIFAR_STATS, augmentation
from simsiam_lab.config import deep_merge
from simsiam_lab.data import CIFAR10_CLASSES, load_split
from simsiam_lab.loss import SimSiamLoss
from simsiam_lab.model import ResNetTrunk, SimSiam
from simsiam_lab.study import Params
from simsiam_lab.train import pretrain

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from peers import (
    LightlySimSiam,
    ReferenceSimSiam,
    TwoCropsTransform,
    lightly_loss,
    official_augmentation,
    reference_loss,
)
from run import (
    ROOT,
    TINY,
    EpochScale,
    OurLoop,
    bench_streaming,
    epoch_config,
    run_epoch,
    write_report,
)


def _ours() -> SimSiam:
    torch.manual_seed(0)
    cfg = model_config(
        backbone="resnet18", width=8, cifar_stem=True, dim=32, predictor_hidden_dim=8
    )
    return SimSiam(cfg)


def _with_our_weights(peer: torch.nn.Module, ours: SimSiam) -> torch.nn.Module:
    """Same layers in the same order: copy tensor by tensor."""
    theirs, mine = peer.state_dict(), ours.state_dict()
    assert [t.shape for t in theirs.values()] == [t.shape for t in mine.values()]
    peer.load_state_dict(dict(zip(theirs, mine.values(), strict=True)))
    return peer


@pytest.mark.parametrize("peer", ["reference", "lightly"])
def test_a_peer_computes_our_loss_and_gradients(peer: str):
    if peer == "lightly":
        pytest.importorskip("lightly", reason="benchmark-only dependency: pip install '.[bench]'")
        cls, loss_fn = LightlySimSiam, lightly_loss
    else:
        cls, loss_fn = ReferenceSimSiam, reference_loss
    ours = _ours()
    model = _with_our_weights(cls(ResNetTrunk("resnet18", 8, True), 64, 32, 8), ours)
    torch.manual_seed(1)
    x1, x2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)

    loss = SimSiamLoss("cosine", stop_gradient=True, symmetric=True)(*ours(x1, x2))
    loss.backward()
    peer_loss = loss_fn(model, x1, x2)
    peer_loss.backward()
    assert peer_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    grads = [p.grad for p in ours.parameters()]
    peer_grads = [p.grad for p in model.parameters()]
    assert len(grads) == len(peer_grads)
    for g, h in zip(grads, peer_grads, strict=True):
        torch.testing.assert_close(h, g, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------- an epoch

CPU = torch.device("cpu")


@pytest.fixture
def jpeg_archive(tmp_path: Path):
    """A CIFAR-10-shaped archive as the shared one is laid out: cifar10/{train,test}/<class>/."""

    def make(train: int, test: int) -> Path:
        rng = np.random.default_rng(0)
        path = tmp_path / "cifar10-jpeg.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for split, n in (("train", train), ("test", test)):
                for cls in CIFAR10_CLASSES:
                    for i in range(n):
                        buf = io.BytesIO()
                        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                        Image.fromarray(pixels).save(buf, "JPEG")
                        info = tarfile.TarInfo(f"cifar10/{split}/{cls}/{i:04d}.jpg")
                        info.size = buf.tell()
                        buf.seek(0)
                        tar.addfile(info, buf)
        return path

    return make


def test_the_official_style_peer_augments_as_the_paper_and_as_we_do():
    """main_simsiam.py's pipeline at CIFAR size, with App. D's values, which are also ours."""
    from torchvision import transforms as T

    cfg = Params(ROOT / "params").resolve("cifar10")
    ours = augmentation(cfg)
    size = cfg.data.image_size
    steps = official_augmentation(size, ours.mean, ours.std).transforms
    kinds = [T.RandomResizedCrop, T.RandomApply, T.RandomGrayscale, T.RandomHorizontalFlip]
    assert [type(t) for t in steps] == [*kinds, T.ToTensor, T.Normalize]
    crop, jitter, gray, flip, _, norm = steps
    assert crop.size == (32, 32) and size == 32
    assert crop.scale == (0.2, 1.0) == ours.crop_scale
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3)) and ours.crop_ratio == crop.ratio
    assert jitter.p == 0.8 == ours.jitter_p
    (cj,) = jitter.transforms
    assert isinstance(cj, T.ColorJitter)
    for name, strength in (("brightness", 0.4), ("contrast", 0.4), ("saturation", 0.4)):
        assert getattr(cj, name) == pytest.approx((1 - strength, 1 + strength))
        assert getattr(ours, name) == strength
    assert cj.hue == pytest.approx((-0.1, 0.1)) and ours.hue == 0.1
    assert gray.p == 0.2 == ours.grayscale_p
    assert flip.p == 0.5 == ours.flip_p
    assert ours.blur_p == 0  # App. D: no blur on CIFAR, and the peer has none
    assert tuple(norm.mean) == CIFAR_STATS[0] == ours.mean
    assert tuple(norm.std) == CIFAR_STATS[1] == ours.std
    image = Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 128)
    views = TwoCropsTransform(official_augmentation(size, ours.mean, ours.std))(image)
    assert [v.shape for v in views] == [(3, 32, 32)] * 2


def test_our_loop_ends_an_epoch_on_the_weights_pretrain_ends_on(tmp_path: Path, write_prepared):
    """The benchmark times the library's loop, not a look-alike: same batches, views, steps."""
    prepared = write_prepared(
        tmp_path / "prepared", classes=2, train_per_class=20, test_per_class=2
    )
    cfg = epoch_config(EpochScale(1, 1, overrides=TINY)).merged(
        {"optim": {"epochs": 1, "batch_size": 8}, "monitor": {"knn_every": 0}}, "test"
    )
    pretrain(cfg, prepared, tmp_path / "run")
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    loop = OurLoop(cfg, load_split(prepared, "train"), CPU)
    assert loop.epoch()["steps"] == 5
    mine = loop.model.state_dict()
    assert mine.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(mine[key], value), key


@pytest.fixture
def one_thread():
    """One torch thread: beside a DataLoader worker, two OpenMP threads on two busy cores spin
    against each other (a 3 s test took 20 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_an_epoch_of_both_loops_on_a_cpu(tmp_path: Path, jpeg_archive, one_thread):
    """The epoch section end to end on a tiny network: the archive extracted (a subset) and
    prepared, both loops over the same images, the figures in the JSON and the report."""
    archive = jpeg_archive(train=3, test=1)
    tiny = deep_merge(TINY, {"optim": {"batch_size": 8}}, "test")
    scale = EpochScale(repeats=1, probe_steps=1, per_class=2, workers=1, overrides=tiny)
    e = run_epoch(archive, CPU, scale, with_compile=False, workdir=tmp_path / "work")

    assert e["train_images"] == 20  # the first 2 of each class's 3
    loops = e["loops"]
    assert len(loops) == 2
    official = loops[e["official"]]
    ours = next(r for name, r in loops.items() if name != e["official"])
    for r in (ours, official, e["pretrain"]):
        assert r["images"] == 16, r  # every loop on the same images: 2 batches of 8 of the 20
        assert r["epoch_s"] > 0
    for r in (ours, official):
        assert r["steps"] == 2
        assert r["images_per_s"] > 0 and r["step_alone_s"] > 0 and np.isfinite(r["loss"])
    assert ours["augment_alone_s"] > 0 and ours["augment_share"] > 0
    assert 0 < official["data_wait_s"] < official["epoch_s"]
    assert e["speedup_vs_official"] == {
        name: pytest.approx(official["epoch_s"] / ours["epoch_s"])
        for name in loops
        if name != e["official"]
    }
    assert e["reduced"] and e["machine"]["device"] == "cpu" and e["pretrain"]["status"] == "ok"

    out = tmp_path / "benchmarks.md"
    write_report({"epoch": e}, out)
    assert json.loads(out.with_suffix(".json").read_text())["epoch"] == json.loads(json.dumps(e))
    text = out.read_text()
    assert "Not measured on a GPU yet; run `bash benchmarks/gpu.sh`" in text
    assert "reduced CPU run" in text and e["official"] in text

    # Measured on a GPU, the section stands as the GPU's (the numbers here are the CPU's).
    gpu = e | {"machine": e["machine"] | {"device": "cuda:0", "gpu": "Some GPU, 80 GiB"}}
    write_report({"epoch": gpu}, out)
    text = out.read_text()
    assert "Not measured on a GPU" not in text and "Some GPU, 80 GiB" in text


def test_the_streaming_section_times_both_loaders_on_one_generated_tree(tmp_path: Path):
    tree = {"classes": 2, "per_class": 32, "size": 40}
    found = bench_streaming(tmp_path, workers=1, repeats=1, tree=tree)
    rates = found["images_per_s"]
    assert list(rates) == [
        "ours: streaming, as it trains on a CPU (decoded, cropped, finished in workers)",
        "official-style: ImageFolder + PIL in 1 DataLoader workers",
        "ours laid out as on a GPU: the workers crop, the training process finishes",
    ]
    assert all(rate > 0 for rate in rates.values()) and found["crop"] == 35
    ours, official, gpu_layout = rates.values()
    assert found["speedup"] == pytest.approx(ours / official)
    assert found["gpu_layout_speedup"] == pytest.approx(gpu_layout / official)
    out = tmp_path / "benchmarks.md"
    committed = json.loads((ROOT / "reports" / "benchmarks.json").read_text())
    write_report(committed | {"streaming": found}, out)
    assert "| ours: streaming, as it trains on a CPU (decoded, cropped, finished in" in (
        out.read_text()
    )


def test_without_an_epoch_the_report_says_how_to_measure_one(tmp_path: Path):
    out = tmp_path / "benchmarks.md"
    write_report({}, out)
    assert (
        "Not measured on a GPU yet; run `bash benchmarks/gpu.sh` on a CUDA machine"
        in out.read_text()
    )


@pytest.mark.slow  # gpu.sh starts Python and torch twice: ~8 s
def test_gpu_sh_refuses_a_machine_without_a_gpu_in_one_line(tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"gpu.sh: no CUDA device visible to {sys.executable} (torch {torch.__version__}): "
        "the GPU figures need one"
    ]


@pytest.mark.slow  # two Python processes that import torch, and a reduced epoch: ~10 s
def test_gpu_sh_runs_its_steps_on_a_cpu(tmp_path: Path, jpeg_archive):
    archive = jpeg_archive(train=4, test=1)
    out = tmp_path / "benchmarks.md"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu", str(archive), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"report: {out}" in result.stdout and not result.stdout.rstrip().endswith("}")
    epoch = json.loads(out.with_suffix(".json").read_text())["epoch"]
    assert {r["images"] for r in epoch["loops"].values()} == {32}  # 40 images, batch 32
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["benchmarks.md", "benchmarks.json", archive.name]
    )  # its temporary data removed

"""Speed of our SimSiam beside its peers, in one process, on one device, with the same seeds.

    python benchmarks/run.py [--quick [--with-dvc]] [--device cpu|cuda] [--data ARCHIVE]

Writes reports/benchmarks.md and reports/benchmarks.json; the last stdout line is that JSON.
Every throughput is the median over repeats, contenders interleaved so drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from jinja2 import Environment, FileSystemLoader

from simsiam_lab.augment import augment_config, two_views
from simsiam_lab.config import Params, deep_merge
from simsiam_lab.distributed import autocast_dtype
from simsiam_lab.evaluate import knn_accuracy
from simsiam_lab.model import ResNetTrunk
from simsiam_lab.target import LiveTarget
from simsiam_lab.train import (
    build_criterion,
    build_model,
    build_optimizer,
    fast_path,
    sgd_step,
    view_format,
)

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the tests' project copier
from peers import LightlySimSiam, ReferenceSimSiam, lightly_loss, reference_loss
from project import copy_project, use_dvc_profile

ROOT = Path(__file__).parents[1]
ARCHIVE = "cifar10-jpeg.tar.gz"
SLOW_STEP_S = 20.0
OFF = {"channels_last": False, "precision": "fp32", "compile": False}


@dataclass(frozen=True)
class Scale:
    batch: int
    warmup: int
    steps: int  # per timed repeat
    repeats: int
    knn_repeats: int


QUICK = {"cpu": Scale(64, 2, 2, 3, 2), "cuda": Scale(512, 10, 10, 5, 3)}
FULL = {"cpu": Scale(256, 2, 3, 5, 3), "cuda": Scale(512, 20, 20, 7, 5)}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], dev: torch.device, n: int) -> float:
    sync(dev)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    return time.perf_counter() - start


def study_config() -> dict:
    """The CIFAR-10 profile with the paper's ImageNet heads, which lightly's heads hard-code."""
    cfg = Params(ROOT / "params").resolve("cifar10")
    heads = {"projector_layers": 3, "dim": 2048, "predictor_hidden_dim": 512}
    return deep_merge(cfg, {"model": heads}, "benchmark")


def our_step(cfg: dict, compute: dict, views, dev: torch.device) -> Callable[[], object]:
    cfg = deep_merge(cfg, {"compute": compute}, "benchmark")
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    fmt, dtype = fast_path(cfg, model, dev)
    criterion = build_criterion(cfg)
    opt = build_optimizer(model, cfg)
    idx = torch.arange(len(views[0]), device=dev)
    pair = [fmt(views)]
    return lambda: sgd_step(model, criterion, LiveTarget(), opt, pair, idx, 0, dtype)


def peer_step(cfg: dict, peer: str, views, dev: torch.device) -> Callable[[], object]:
    torch.manual_seed(0)
    m = cfg["model"]
    backbone = ResNetTrunk(m["backbone"], m["width"], m["cifar_stem"])
    cls, loss_fn = (
        (LightlySimSiam, lightly_loss) if peer == "lightly" else (ReferenceSimSiam, reference_loss)
    )
    model = cls(backbone, backbone.out_dim, m["dim"], m["predictor_hidden_dim"]).to(dev)
    o = cfg["optim"]
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=o["momentum"], weight_decay=o["weight_decay"]
    )

    def step() -> None:
        loss = loss_fn(model, *views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def contenders(cfg: dict, dev: torch.device, with_compile: bool) -> dict[str, dict | str]:
    default = cfg["compute"]
    ours: dict[str, dict | str] = {
        "lightly (fp32, eager)": "lightly",
        "builder.py reference (fp32, eager)": "reference",
        "ours, all switches off": OFF,
        "ours + channels_last": OFF | {"channels_last": True},
        "ours + bf16 autocast": OFF | {"precision": "bf16"},
    }
    if with_compile:
        ours["ours + torch.compile"] = OFF | {"compile": True}
    ours[f"ours, defaults ({_describe(default, dev)})"] = default
    return ours


def _describe(compute: dict, dev: torch.device) -> str:
    on = [k for k in ("channels_last", "compile") if compute[k]]
    return ", ".join([*on, "bf16" if autocast_dtype(compute["precision"], dev) else "fp32"])


def bench_train_step(cfg: dict, dev: torch.device, scale: Scale, with_compile: bool) -> dict:
    gen = torch.Generator(device=dev).manual_seed(0)
    size = cfg["data"]["image_size"]
    images = torch.randint(0, 256, (scale.batch, 3, size, size), dtype=torch.uint8, device=dev)
    views = two_views(images, size, augment_config(cfg), gen)
    steps, warmup_s, rates, slow = {}, {}, {}, set()
    for name, spec in contenders(cfg, dev, with_compile).items():
        make = peer_step if isinstance(spec, str) else our_step
        steps[name] = make(cfg, spec, views, dev)
        warmup_s[name] = timed(steps[name], dev, 1)  # compiles, if it compiles
        second = timed(steps[name], dev, 1)
        rates[name] = []
        if second > SLOW_STEP_S:  # an order of magnitude off the pace: that step is its figure
            slow.add(name)
            rates[name].append(scale.batch / second)
        else:
            timed(steps[name], dev, max(0, scale.warmup - 2))
    for _ in range(scale.repeats):
        for name in [n for n in steps if n not in slow]:
            rates[name].append(scale.batch * scale.steps / timed(steps[name], dev, scale.steps))
    return {
        name: {
            "images_per_s": statistics.median(r),
            "spread": (min(r), max(r)),
            "warmup_s": warmup_s[name],
            "timed_steps": 1 if name in slow else len(r) * scale.steps,
        }
        for name, r in rates.items()
    }


def bench_data_path(cfg: dict, dev: torch.device, scale: Scale) -> dict:
    """Prepared uint8 on the device -> two augmented, formatted views, as the training loop does."""
    size, stored = cfg["data"]["image_size"], cfg["data"]["stored_size"]
    fmt = view_format(cfg["compute"])
    n = scale.batch * 8
    images = torch.randint(0, 256, (n, 3, stored, stored), dtype=torch.uint8, device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    aug = augment_config(cfg)

    def views() -> None:
        idx = torch.randint(0, n, (scale.batch,), device=dev, generator=gen)
        fmt(two_views(images[idx], size, aug, gen))

    timed(views, dev, 2)
    rates = [scale.batch * 10 / timed(views, dev, 10) for _ in range(max(3, scale.repeats))]
    return {"images_per_s": statistics.median(rates), "spread": (min(rates), max(rates))}


def bench_knn(dev: torch.device, repeats: int) -> dict:
    gen = torch.Generator(device=dev).manual_seed(0)
    bank = torch.randn(50_000, 512, device=dev, generator=gen)
    queries = torch.randn(10_000, 512, device=dev, generator=gen)
    labels = torch.randint(0, 10, (50_000,), device=dev, generator=gen)
    query_labels = torch.randint(0, 10, (10_000,), device=dev, generator=gen)

    def knn() -> None:
        knn_accuracy(bank, labels, queries, query_labels, 10, 200, 0.1)

    times = [timed(knn, dev, 1) for _ in range(repeats)]
    return {"seconds": statistics.median(times), "spread": (min(times), max(times))}


def _wall(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{tail}")
    return time.perf_counter() - start


def bench_pipeline(data: Path, with_dvc: bool) -> dict:
    """Smoke Table 3 through Snakemake, one job at a time, and the time that is not the jobs'."""
    env = dict(os.environ, SIMSIAM_DATA=str(data.resolve()))
    env.pop("MLFLOW_TRACKING_URI", None)
    threads = str(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "snakemake"
        copy_project(project)
        wall = _wall(
            [
                "snakemake",
                "--cores",
                threads,
                "reports/table3.md",
                "--config",
                "profile=smoke",
                f"threads={threads}",
            ],
            project,
            env,
        )
        jobs = [
            float(tsv.read_text().splitlines()[1].split("\t")[0])
            for tsv in (project / "logs" / "smoke" / "benchmark").rglob("*.tsv")
        ]
        out = {
            "table3_wall_s": wall,
            "jobs": len(jobs),
            "jobs_s": sum(jobs),
            "snakemake_overhead_per_job_s": (wall - sum(jobs)) / len(jobs),
        }
        if with_dvc:
            project = Path(tmp) / "dvc"
            copy_project(project)
            use_dvc_profile(project, "smoke")
            dvc_wall = _wall(["dvc", "repro", "report-table3"], project, env)
            # Same commands as Snakemake's jobs: what DVC adds is its wall minus theirs.
            out |= {
                "dvc_table3_wall_s": dvc_wall,
                "dvc_overhead_per_stage_s": (dvc_wall - sum(jobs)) / len(jobs),
            }
        return out


def machine(dev: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    try:
        info["lightly"] = version("lightly")
    except PackageNotFoundError:
        info["lightly"] = "not installed"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 10 minutes on 2 CPU cores")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument(
        "--data",
        type=Path,
        default=os.environ.get("SIMSIAM_DATA") or ROOT.parent / "shared" / "datasets" / ARCHIVE,
        help="CIFAR-10 archive or tree for the pipeline section (skipped if missing)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks.md")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument(
        "--with-dvc",
        action="store_true",
        help="with --quick, also time smoke Table 3 through DVC (about 2.5 more minutes)",
    )
    args = parser.parse_args()
    try:
        import lightly  # noqa: F401
    except ImportError:
        sys.exit("benchmarks need lightly: pip install -e '.[bench]'")

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scale = (QUICK if args.quick else FULL)[dev.type]
    cfg = study_config()
    results: dict = {"machine": machine(dev), "quick": args.quick, "batch": scale.batch}
    print(f"machine: {results['machine']}", flush=True)

    # Compiling a ResNet-18 step takes minutes on 2 cores: --quick leaves it to the full run.
    with_compile = not args.no_compile and not (args.quick and dev.type == "cpu")
    results["compile_measured"] = with_compile
    results["train_step"] = bench_train_step(cfg, dev, scale, with_compile)
    for name, r in results["train_step"].items():
        print(f"train step  {name:45s} {r['images_per_s']:8.1f} img/s", flush=True)
    names = list(results["train_step"])
    ours, lightly_rate = results["train_step"][names[-1]], results["train_step"][names[0]]
    results["train_step_speedup_vs_lightly"] = ours["images_per_s"] / lightly_rate["images_per_s"]

    results["data_path"] = bench_data_path(cfg, dev, scale)
    results["data_path_over_train_step"] = (
        results["data_path"]["images_per_s"] / ours["images_per_s"]
    )
    print(f"data path   {results['data_path']['images_per_s']:.0f} img/s", flush=True)

    results["knn_50k_10k_s"] = bench_knn(dev, scale.knn_repeats)["seconds"]
    print(f"kNN 50k x 10k, d=512: {results['knn_50k_10k_s']:.2f} s", flush=True)

    if Path(args.data).exists():
        with_dvc = args.with_dvc or not args.quick
        results["pipeline"] = bench_pipeline(Path(args.data), with_dvc)
        print(f"pipeline    {results['pipeline']}", flush=True)
    else:
        results["pipeline"] = None
        print(f"pipeline    skipped: no data at {args.data} (pass --data)", flush=True)

    env = Environment(loader=FileSystemLoader(Path(__file__).parent), keep_trailing_newline=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(env.get_template("benchmarks.md.j2").render(r=results, cfg=cfg))
    line = json.dumps(results)
    args.out.with_suffix(".json").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()

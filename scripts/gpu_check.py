"""GPU check: training steps, host-to-device share, prediction and epitome throughput.

Measures, with lcip's default recipe (``lcip/conf/lcip.yaml`` composed with no overrides: the
model, loss and learning rate of ``lcip-train``) at the paper's size (FCN of 128 filters,
crops of 128 px, batches of 128, bf16 autocast, channels_last, loader workers):

1. **training steps**: model only (the same batch, already on the device) against full steps
   (the next batch from lcip's default training loader, its transfer to the device and the
   step), medians over timed steps; the host-to-device transfer of one batch alone, and its
   share of a full step; the loader alone (crops/s);
2. **prediction**: :func:`lcip.inference.predict.predict_manifest` (sliding windows, q and r maps
written
   as COGs) on one 7000 x 6000 px tile, in px/s, and the network's forward passes alone over
   the same pixels (windows of ``predict.window`` plus the margin, bf16);
3. **self-epitomic LSR**: seconds of :func:`lcip.epitome.core.epitome_window` on one 1024 px window.

Writes a markdown table (the figures for BENCHMARKS.md) to ``--out`` and prints it. Each
section has a share of the time budget (``--budget``, 420 s): a section that fails or runs
out of time says so in its row instead of stopping the check. ``--tiny`` runs every section
on tiny sizes on the CPU, to check the script itself (``GPU_CHECK_SMOKE=1
scripts/gpu_check.sh``, tested by ``tests/scripts/test_gpu_check.py``).

    scripts/gpu_check.sh                     # on a GPU machine; table in outputs/gpu_check/
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from affine import Affine
from rasterio.crs import CRS

from lcip.classes import CHESAPEAKE4
from lcip.config import compose_config, to_dict
from lcip.data.datamodules import TileDataModule
from lcip.data.datasets import LayerSpec
from lcip.inference.windows import WindowConfig
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import Grid, write_raster
from lcip.losses import build_loss
from lcip.priors.build import NLCDPriorJob, results_manifest, run_tile_jobs, write_prior
from lcip.priors.cooccurrence import count_cooccurrence
from lcip.stages.demo import machine_description
from lcip.synthetic import RegionConfig, generate_region


@dataclass(frozen=True)
class Sizes:
    """What the check runs on: the paper's sizes on a GPU, tiny ones for the smoke test."""

    filters: int = 128
    crop: int = 128
    batch: int = 128
    steps: int = 20
    workers: int = 8
    tiles: tuple[int, int, int] = (3, 2, 1024)  # tiles x, tiles y, tile size (px)
    predict_shape: tuple[int, int] = (6000, 7000)  # rows, columns
    predict_batch: int = 16
    epitome_window: int = 1024


TINY = Sizes(
    filters=8,
    crop=64,
    batch=4,
    steps=2,
    workers=1,
    tiles=(2, 1, 256),
    predict_shape=(300, 260),
    predict_batch=2,
    epitome_window=96,
)


def default_recipe(filters: int) -> dict[str, Any]:
    """Model, loss and optimizer settings of ``lcip-train`` with no overrides."""
    cfg = compose_config([f"model.num_filters={filters}"])
    return {
        "model": to_dict(cfg.model),
        "loss": to_dict(cfg.loss),
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.get("weight_decay", 0.0)),
        "predict": to_dict(cfg.predict),
        "data": to_dict(cfg.data),
    }


def build_model(recipe: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The default network for the Chesapeake 4 classes, channels_last, on ``device``."""
    from hydra.utils import instantiate

    model: torch.nn.Module = instantiate(recipe["model"], classes=CHESAPEAKE4.num_classes)
    return model.to(device).to(memory_format=torch.channels_last)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_region(root: Path, sizes: Sizes) -> Manifest:
    """A generated region with its NLCD prior (layers ``naip``, ``prior``, ``lc``)."""
    tiles_x, tiles_y, size = sizes.tiles
    config = RegionConfig(name="gpu_check", tiles_x=tiles_x, tiles_y=tiles_y, tile_size=size)
    manifest = Manifest.read(generate_region(config, root))
    matrix = count_cooccurrence(
        manifest, CHESAPEAKE4, nlcd_layer="nlcd_30m", allow_test=True, progress=False
    ).matrix
    job = NLCDPriorJob(root / "prior", scheme=CHESAPEAKE4, matrix=matrix, nlcd_layer="nlcd_30m")
    return results_manifest(manifest, run_tile_jobs(job, manifest), "prior")


def training_steps(
    manifest: Manifest, root: Path, sizes: Sizes, recipe: dict[str, Any], device: torch.device
) -> dict[str, float]:
    """Model-only and full step times, the transfer of one batch, and the loader alone."""
    torch.manual_seed(0)
    data = recipe["data"]
    copy = data.get("training_copy")
    dm = TileDataModule(
        manifest,
        CHESAPEAKE4,
        train_splits=sorted({t.split for t in manifest}),
        val_splits=[],
        crop_size=sizes.crop,
        batch_size=sizes.batch,
        steps_per_epoch=4 * sizes.steps + 16,
        num_workers=sizes.workers,
        channels_last=True,
        training_copy=root / "training_copy" if copy else None,
    )
    dm.setup("fit")
    model = build_model(recipe, device)
    loss_cfg = dict(recipe["loss"])
    loss_fn = build_loss(str(loss_cfg.pop("name")), **loss_cfg)
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"]
    )
    bf16 = torch.autocast(device.type, dtype=torch.bfloat16)

    def to_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return dm.on_after_batch_transfer(moved, 0)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with bf16:
            logits = model(batch["image"])
        loss = loss_fn(logits.float(), batch["prior"], batch["valid"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    it: Iterator[dict[str, torch.Tensor]] = iter(dm.train_dataloader())
    fixed = to_device(next(it))
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator, workers started
        step(fixed)
    _sync(device)
    model_only = _median(lambda: step(fixed), sizes.steps, device)
    host = next(it)
    transfer = _median(lambda: to_device(host), sizes.steps, device)
    full = _median(lambda: step(to_device(next(it))), sizes.steps, device)
    start = time.perf_counter()
    for _ in range(sizes.steps):
        next(it)
    loader = sizes.batch * sizes.steps / (time.perf_counter() - start)
    return {"model_only": model_only, "full": full, "transfer": transfer, "loader": loader}


def prediction_tile(root: Path, shape: tuple[int, int]) -> Manifest:
    """One tile of ``shape`` px: textured NAIP-like imagery and a smooth 4-class prior."""
    height, width = shape
    grid = Grid(CRS.from_epsg(32618), Affine(1.0, 0, 400000.0, 0, -1.0, 4400000.0), height, width)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    image = np.empty((4, height, width), np.uint8)
    for band in range(4):
        wave = np.sin(rows / (37.0 + 11 * band)) * np.cos(cols / (53.0 + 7 * band))
        image[band] = (120 + 100 * wave).astype(np.uint8)
    naip = write_raster(root / "predict" / "naip.tif", image, grid)
    del image
    prior = np.empty((4, height, width), np.float32)
    for band in range(4):
        prior[band] = 1.0 + np.sin(rows / 300.0 + band) * np.cos(cols / 400.0 - band) * 0.9
    prior /= prior.sum(axis=0)
    valid = np.ones((height, width), bool)
    path = write_prior(root / "predict" / "prior.tif", prior, valid, grid, CHESAPEAKE4, {})
    tile = Tile("p0", "test", grid.crs.to_string(), grid.bounds, {"naip": naip, "prior": path})
    return Manifest((tile,))


def prediction(
    root: Path, sizes: Sizes, recipe: dict[str, Any], device: torch.device
) -> dict[str, float]:
    """Pixels per second of whole-tile prediction, and of the network's forward passes alone."""
    from lcip.inference.predict import predict_manifest
    from lcip.inference.windows import receptive_field

    manifest = prediction_tile(root, sizes.predict_shape)
    model = build_model(recipe, device).eval()
    p = recipe["predict"]
    window = WindowConfig(
        window=int(p["window"]),
        batch_size=sizes.predict_batch,
        device=str(device),
        num_workers=min(sizes.workers, 4),
        edge=str(p.get("edge", "reflect")),
    )
    pixels = sizes.predict_shape[0] * sizes.predict_shape[1]
    start = time.perf_counter()
    predict_manifest(
        model,
        manifest,
        LayerSpec("naip", "prior", None),
        CHESAPEAKE4,
        root / "predictions",
        window,
        params={"check": "gpu_check"},
        force=True,
    )
    whole = pixels / (time.perf_counter() - start)
    margin = max(8, receptive_field(model) // 2)
    side = window.window + 2 * margin
    batch = torch.rand(sizes.predict_batch, 4, side, side, device=device)
    batch = batch.contiguous(memory_format=torch.channels_last)
    bf16 = torch.autocast(device.type, dtype=torch.bfloat16)
    with torch.inference_mode(), bf16:
        model(batch)
        _sync(device)
        passes = max(1, -(-pixels // (sizes.predict_batch * window.window**2)))
        start = time.perf_counter()
        for _ in range(passes):
            model(batch)
        _sync(device)
    forward = passes * sizes.predict_batch * window.window**2 / (time.perf_counter() - start)
    return {"predict_px_s": whole, "forward_px_s": forward, "pixels": pixels}


def epitome(sizes: Sizes, device: torch.device) -> dict[str, float]:
    """Seconds of one self-epitomic LSR window on seeded imagery (as ``bench_epitome.py``)."""
    from lcip.epitome.core import EpitomeParams
    from lcip.epitome.timing import random_mosaic, time_window

    image, nlcd = random_mosaic(1024, seed=0)
    seconds, _, _ = time_window(image, nlcd, sizes.epitome_window, EpitomeParams(), str(device))
    return {"seconds": seconds}


def machine(device: torch.device) -> str:
    """One line: GPU, CPU, torch and CUDA versions."""
    cpu = machine_description()["cpu"]
    gpu = (
        f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), "
        if device.type == "cuda"
        else "no GPU (CPU run), "
    )
    return f"{gpu}{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def run_section(
    name: str, fn: Callable[[], dict[str, float]], deadline: float
) -> dict[str, float] | str:
    """Run one section; its figures, or one line saying why there are none."""
    if time.monotonic() > deadline:
        return "skipped: the time budget was spent"
    start = time.monotonic()
    try:
        out = fn()
    except Exception as exc:  # reported in the table; the other sections still run
        traceback.print_exc(file=sys.stderr)
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    print(f"{name}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return out


def table(
    results: dict[str, dict[str, float] | str], sizes: Sizes, device: torch.device, title: str
) -> str:
    """The markdown table of the figures."""
    lines = [
        title,
        "",
        "| measure | value | setting |",
        "| --- | ---: | --- |",
    ]
    setting = (
        f"FCN {sizes.filters} filters (default recipe), crops {sizes.crop} px, batches of "
        f"{sizes.batch}, bf16 autocast, channels_last, {sizes.workers} loader workers"
    )
    steps = results["steps"]
    if isinstance(steps, str):
        lines.append(f"| training steps | {steps} | {setting} |")
    else:
        full, only, moved = steps["full"], steps["model_only"], steps["transfer"]
        lines += [
            f"| model-only step (s, median) | {only:.4f} | {setting} |",
            f"| full step: loader + transfer + step (s, median) | {full:.4f} | same |",
            f"| model-only / full | {100 * only / full:.0f} % | target >= 90 % |",
            f"| host-to-device transfer of a batch (s, median) | {moved:.4f} | "
            "from pinned memory on CUDA |",
            f"| host-to-device share of a full step | {100 * moved / full:.1f} % | |",
            f"| loader alone (crops/s) | {steps['loader']:.0f} | default training loader |",
        ]
    pred = results["predict"]
    rows, cols = sizes.predict_shape
    if isinstance(pred, str):
        lines.append(f"| prediction | {pred} | {cols} x {rows} px tile |")
    else:
        lines += [
            f"| prediction, whole tile (px/s) | {pred['predict_px_s']:,.0f} | {cols} x {rows} "
            f"px tile, `predict_manifest`: windows, q and r COGs written |",
            f"| network forward passes alone (px/s) | {pred['forward_px_s']:,.0f} | bf16, "
            f"batches of {sizes.predict_batch} windows |",
        ]
    epi = results["epitome"]
    value = epi if isinstance(epi, str) else f"{epi['seconds']:.2f}"
    lines.append(
        f"| self-epitomic LSR (s per {sizes.epitome_window} px window) | {value} | "
        f"default `epitome` settings, float32 |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the check and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test on a CPU)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all sections")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check/gpu_check.md"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    sizes = TINY if args.tiny else Sizes()
    if device.type == "cpu" and not args.tiny:
        sizes = Sizes(workers=min(Sizes.workers, os.cpu_count() or 1))
    start = time.monotonic()
    recipe = default_recipe(sizes.filters)
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Budget shares: region and training steps 45 %, prediction 35 %, epitome the rest.
        made: list[Manifest] = []

        def steps() -> dict[str, float]:
            made.append(make_region(root / "region", sizes))
            return training_steps(made[0], root, sizes, recipe, device)

        results["steps"] = run_section("steps", steps, start + 0.45 * args.budget)
        results["predict"] = run_section(
            "predict", lambda: prediction(root, sizes, recipe, device), start + 0.8 * args.budget
        )
        results["epitome"] = run_section(
            "epitome", lambda: epitome(sizes, device), start + args.budget
        )
    elapsed = time.monotonic() - start
    title = (
        f"GPU check (`scripts/gpu_check.sh`{', tiny CPU smoke run' if args.tiny else ''}): "
        f"{machine(device)}; {elapsed:.0f} s in all."
    )
    text = table(results, sizes, device, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: lcip's training loader vs TorchGeo's stock pipeline, and where a step's time goes.

On the same generated tiles (tiled DEFLATE GeoTIFFs: imagery uint8 x 4, prior float32 x 4,
labels uint8), it measures

1. crops per second of lcip's training loader (``TileDataModule.train_dataloader``: random
   128 x 128 crops from many tiles, imagery + prior + labels + validity mask) and of TorchGeo's
   stock pipeline for the same files (``RasterDataset`` for imagery, prior and labels,
   intersected with ``&``, ``RandomBatchGeoSampler``, ``stack_samples``), at 0 and 2 workers;
   lcip also with GDAL's block cache off (every crop decodes its blocks, as on a region much
   larger than the cache) from the DEFLATE tiles and from its training copy
   (:mod:`lcip.training_copy`);
2. where lcip's loading time goes (0 workers): window reads (GDAL decode + copy), the rest of
   the sample (validity masks, scaling, NaN handling, tensors) and collation;
3. a training step of the FCN with the QR loss on this CPU: model-only (a batch already in
   memory) vs full (loader + step), in fp32 and in bf16 autocast, contiguous and
   channels_last.

    python scripts/bench_loader.py [--batches 30] [--filters 16] [--steps 3] [--tile-size 1024]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import rasterio
import torch
from torch.utils.data import DataLoader

from lcip.classes import CHESAPEAKE4
from lcip.datamodules import TileDataModule
from lcip.datasets import TileWindowDataset, collate_windows
from lcip.losses import build_loss
from lcip.manifest import Manifest
from lcip.models import FCN
from lcip.priors.build import NLCDPriorJob, results_manifest, run_tile_jobs
from lcip.priors.cooccurrence import count_cooccurrence
from lcip.synthetic import RegionConfig, generate_region


def make_region(root: Path, tiles_x: int, tiles_y: int, tile_size: int) -> Manifest:
    """A generated region with its NLCD prior (layers ``naip``, ``prior``, ``lc``)."""
    config = RegionConfig(name="bench", tiles_x=tiles_x, tiles_y=tiles_y, tile_size=tile_size)
    manifest = Manifest.read(generate_region(config, root))
    matrix = count_cooccurrence(
        manifest.select("train"), CHESAPEAKE4, nlcd_layer="nlcd_30m", progress=False
    ).matrix
    job = NLCDPriorJob(root / "prior", scheme=CHESAPEAKE4, matrix=matrix, nlcd_layer="nlcd_30m")
    return results_manifest(manifest, run_tile_jobs(job, manifest), "prior")


def lcip_loader(
    manifest: Manifest,
    crop: int,
    batch: int,
    batches: int,
    workers: int,
    copy: Path | None = None,
) -> Any:
    """Lcip's training loader over every tile of the manifest (``copy``: training layout)."""
    dm = TileDataModule(
        manifest,
        CHESAPEAKE4,
        prior_layer="prior",
        train_splits=sorted({t.split for t in manifest}),
        crop_size=crop,
        batch_size=batch,
        steps_per_epoch=batches + 1,
        num_workers=workers,
        training_copy=copy,
    )
    dm.setup("fit")
    return dm.train_dataloader()


def torchgeo_loader(root: Path, crop: int, batch: int, batches: int, workers: int) -> Any:
    """TorchGeo 0.8's stock pipeline over the same files: raster datasets intersected."""
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import RandomBatchGeoSampler

    class Imagery(RasterDataset):
        filename_glob = "*.tif"
        is_image = True

    class Labels(RasterDataset):
        filename_glob = "*.tif"
        is_image = False

    dataset = Imagery(paths=root / "naip") & Imagery(paths=root / "prior")
    dataset = dataset & Labels(paths=root / "lc")
    # length counts crops; every batch of this sampler comes from a single tile
    sampler = RandomBatchGeoSampler(
        dataset, size=crop, batch_size=batch, length=(batches + 1) * batch
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=stack_samples,
        persistent_workers=workers > 0,
    )


def crops_per_second(loader: Any, batch: int, batches: int) -> float:
    """Crops per second over ``batches`` batches after a first (warm-up) batch."""
    it = iter(loader)
    next(it)  # workers start, files open
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batch * batches / (time.perf_counter() - start)


def loading_split(manifest: Manifest, crop: int, batch: int, batches: int) -> dict[str, float]:
    """Seconds per batch in window reads, the rest of ``__getitem__``, and collation."""
    loader = lcip_loader(manifest, crop, batch, batches, 0)
    dataset: TileWindowDataset = loader.dataset
    spent = {"read": 0.0, "sample": 0.0, "collate": 0.0}
    read = dataset.read

    def timed_read(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = read(*args, **kwargs)
        spent["read"] += time.perf_counter() - t0
        return out

    dataset.read = timed_read  # type: ignore[method-assign]
    keys = iter(loader.sampler)
    for i in range(batches + 1):
        if i == 1:
            spent = dict.fromkeys(spent, 0.0)
        t0 = time.perf_counter()
        samples = [dataset[next(keys)] for _ in range(batch)]
        t1 = time.perf_counter()
        collate_windows(samples)
        t2 = time.perf_counter()
        spent["sample"] += t1 - t0
        spent["collate"] += t2 - t1
    spent["sample"] -= spent["read"]
    return {k: v / batches for k, v in spent.items()}


def step_times(
    loader: Any, filters: int, steps: int, bf16: bool, channels_last: bool
) -> tuple[float, float]:
    """Median seconds of a model-only step (fixed batch) and of a full step (loader + step)."""
    torch.manual_seed(0)
    model = FCN(4, 4, num_filters=filters)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    loss_fn = build_loss("qr")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch: dict[str, torch.Tensor]) -> None:
        image = batch["image"].contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = model(image)
        loss = loss_fn(logits.float(), batch["prior"], batch["mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    it: Iterator[dict[str, torch.Tensor]] = iter(loader)
    fixed = next(it)
    step(fixed)  # warm-up
    model_only = _median(lambda: step(fixed), steps)
    full = _median(lambda: step(next(it)), steps)
    return model_only, full


def _median(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per loader")
    parser.add_argument("--tiles-x", type=int, default=3)
    parser.add_argument("--tiles-y", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--filters", type=int, default=16, help="FCN width for the step times")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--skip-steps", action="store_true", help="loaders only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = make_region(root, args.tiles_x, args.tiles_y, args.tile_size)
        rates: dict[tuple[str, int], float] = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in loader workers; see collate_windows
        copy = root / "training_copy"
        lcip_loader(manifest, args.crop, args.batch, 1, 0, copy)  # make the copies
        for workers in (0, 2):
            rates[("lcip", workers)] = crops_per_second(
                lcip_loader(manifest, args.crop, args.batch, args.batches, workers),
                args.batch,
                args.batches,
            )
            rates[("torchgeo", workers)] = crops_per_second(
                torchgeo_loader(root, args.crop, args.batch, args.batches, workers),
                args.batch,
                args.batches,
            )
            with rasterio.Env(GDAL_CACHEMAX=0):  # every crop decodes: a region >> the cache
                for name, source in (("lcip, no block cache", None), ("lcip copy", copy)):
                    loader = lcip_loader(
                        manifest, args.crop, args.batch, args.batches, workers, source
                    )
                    rates[(name, workers)] = crops_per_second(loader, args.batch, args.batches)
        split = loading_split(manifest, args.crop, args.batch, args.batches)
        torch.set_num_threads(threads)
        steps = []
        if not args.skip_steps:
            for bf16, cl in ((False, False), (False, True), (True, False), (True, True)):
                loader = lcip_loader(manifest, args.crop, args.batch, 2 * args.steps + 2, 0)
                steps.append((bf16, cl, *step_times(loader, args.filters, args.steps, bf16, cl)))
    n = len(manifest)
    print(
        f"\n{n} tiles of {args.tile_size} px, crops of {args.crop} px, batches of {args.batch}, "
        f"{args.batches} timed batches; loaders with 1 torch thread, steps with "
        f"{torch.get_num_threads()}\n"
    )
    print("| loader | GDAL block cache | workers | crops/s | vs TorchGeo |")
    print("| --- | --- | ---: | ---: | ---: |")
    rows = (
        ("torchgeo", "TorchGeo 0.8.1 RasterDatasets + RandomBatchGeoSampler", "default"),
        ("lcip", "lcip, DEFLATE tiles", "default (region fits)"),
        ("lcip, no block cache", "lcip, DEFLATE tiles", "0 (region >> cache)"),
        ("lcip copy", "lcip, training copy", "0 (region >> cache)"),
    )
    for workers in (0, 2):
        base = rates[("torchgeo", workers)]
        for key, label, cache in rows:
            rate = rates[(key, workers)]
            print(f"| {label} | {cache} | {workers} | {rate:.0f} | {rate / base:.1f}x |")
    total = sum(split.values())
    print("\nlcip loading, 0 workers (ms per batch):")
    print("| window reads (decode + copy) | masks, scaling, tensors | collation | total |")
    print("| ---: | ---: | ---: | ---: |")
    print(
        f"| {1e3 * split['read']:.1f} | {1e3 * split['sample']:.1f} | "
        f"{1e3 * split['collate']:.1f} | {1e3 * total:.1f} |"
    )
    if steps:
        print(f"\nQR training step, FCN {args.filters} filters, CPU (s per step, median):")
        print("| precision | memory format | model only | full (loader + step) | full / model |")
        print("| --- | --- | ---: | ---: | ---: |")
        for bf16, cl, model_only, full in steps:
            prec = "bf16 autocast" if bf16 else "fp32"
            fmt = "channels_last" if cl else "contiguous"
            print(f"| {prec} | {fmt} | {model_only:.3f} | {full:.3f} | {full / model_only:.2f} |")
        base = steps[0][2]
        best = min(steps, key=lambda s: s[2])
        print(
            f"\nfastest model step: {'bf16' if best[0] else 'fp32'}"
            f"{' + channels_last' if best[1] else ''} ({base / best[2]:.2f}x fp32 contiguous)"
        )


if __name__ == "__main__":
    main()

"""Benchmark: lcip's training loader vs TorchGeo's stock pipeline, and where a step's time goes.

On the same generated tiles (tiled GeoTIFFs written by the pipeline: imagery uint8 x 4 and
labels uint8 DEFLATE, NLCD prior float32 x 4 ZSTD), it measures

1. crops per second of lcip's training loader (``TileDataModule.train_dataloader``: random
   128 x 128 crops from many tiles, imagery + prior + labels + validity mask) and of TorchGeo's
   stock pipeline for the same files (``RasterDataset`` for imagery, prior and labels,
   intersected with ``&``, ``RandomBatchGeoSampler``, ``stack_samples``), at 0 and
   ``--workers`` workers; lcip's default loader reads the training copy it makes
   (:mod:`lcip.data.training_copy`, ``data.training_copy``), measured with GDAL's block cache on and
   off (off: every crop of a GDAL read decodes its blocks, as on a region much larger than the
   cache), also with batches handed over in new shared memory, as PyTorch does, instead of
   lcip's reused buffers (:mod:`lcip.data.batch_slots`); and lcip reading the DEFLATE originals
   (``data.training_copy=null``), cache on and off. It prints whether the default loader is
   >= 10x TorchGeo in both cache states;
2. where lcip's loading time goes (0 workers): window reads (GDAL decode or memory-map copy)
   and the rest of a batch (validity masks, scaling, NaN handling, label mapping);
3. a training step of the FCN with the QR loss on ``--device``: model-only (a batch already on
   the device) vs full (loader + transfer + step), and the transfer alone, in fp32 and in bf16
   autocast, contiguous and channels_last.

    python scripts/bench_loader.py [--batches 30] [--workers 2] [--filters 16] [--steps 3]
        [--device cuda --step-workers 8]
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
from lcip.data.batch_slots import batch_memory
from lcip.data.datamodules import TileDataModule
from lcip.data.datasets import TileWindowDataset
from lcip.io.manifest import Manifest
from lcip.losses import build_loss
from lcip.priors.build import NLCDPriorJob, results_manifest, run_tile_jobs
from lcip.priors.cooccurrence import count_cooccurrence
from lcip.synthetic import RegionConfig, generate_region
from lcip.training.models import FCN


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
    reuse_memory: bool = True,
) -> Any:
    """Lcip's training loader over every tile of the manifest (``copy``: training layout).

    ``reuse_memory=False`` hands every batch over in new shared memory, as PyTorch does.
    """
    dm = TileDataModule(
        manifest,
        CHESAPEAKE4,
        train_splits=sorted({t.split for t in manifest}),
        crop_size=crop,
        batch_size=batch,
        steps_per_epoch=batches + 1,
        num_workers=workers,
        training_copy=copy,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.reuse_memory = reuse_memory
    return loader


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


class EmptyBatches(torch.utils.data.Dataset[Any]):
    """Batches of the training layout that are only handed over: one write per memory page.

    Measures the hand-over from a worker to the training process alone (no reads), through
    lcip's reused buffers or in new shared memory, with the loader the training uses.
    """

    def __init__(self, dataset: TileWindowDataset) -> None:
        self.layout = dataset.batch_layout
        self.slots: Any = None

    def batch_layout(self, count: int, height: int, width: int) -> Any:
        """The training dataset's batch layout."""
        return self.layout(count, height, width)

    def __len__(self) -> int:
        return 1

    def __getitems__(self, keys: list[Any]) -> Any:
        """A batch's memory, each page written once, handed over as the training loader does."""
        layout = self.layout(len(keys), keys[0][3], keys[0][4])
        batch, message = batch_memory(layout, self.slots)
        for value in batch.values():
            value.view(-1).view(torch.uint8)[::4096] = 1  # first touch of every page
        return message or batch


def handover_rate(
    manifest: Manifest, crop: int, batch: int, batches: int, workers: int, reuse: bool
) -> float:
    """Crops per second of a loader whose batches are only handed over (see EmptyBatches)."""
    loader = lcip_loader(manifest, crop, batch, batches, workers, reuse_memory=reuse)
    empty = EmptyBatches(loader.dataset)
    loader = type(loader)(
        empty,
        loader.sampler,
        batch,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        persistent_workers=workers > 0,
        reuse_memory=reuse,
    )
    return crops_per_second(loader, batch, batches)


def loading_split(
    manifest: Manifest, crop: int, batch: int, batches: int, copy: Path | None = None
) -> dict[str, float]:
    """Seconds per batch in window reads and in the rest of a batch (masks, scaling, labels).

    Batches are read whole into their final arrays (:meth:`TileWindowDataset.read_batch`):
    there is no collation copy, and a worker's hand-over of a reused buffer costs no copy.
    """
    loader = lcip_loader(manifest, crop, batch, batches, 0, copy)
    dataset: TileWindowDataset = loader.dataset
    spent = {"read": 0.0, "rest": 0.0}
    read_into = dataset.read_into

    def timed_read(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        read_into(*args, **kwargs)
        spent["read"] += time.perf_counter() - t0

    dataset.read_into = timed_read  # type: ignore[method-assign]
    keys = iter(loader.sampler)
    for i in range(batches + 1):
        if i == 1:
            spent = dict.fromkeys(spent, 0.0)
        t0 = time.perf_counter()
        dataset.read_windows([next(keys) for _ in range(batch)])
        spent["rest"] += time.perf_counter() - t0
    spent["rest"] -= spent["read"]
    return {k: v / batches for k, v in spent.items()}


def step_times(
    loader: Any, filters: int, steps: int, bf16: bool, channels_last: bool, device: str
) -> tuple[float, float, float]:
    """Median seconds of a model-only step, a full step and the batch transfer.

    Model only: a batch already on the device. Full: the next batch from the loader, its
    transfer to the device and the step. Transfer: moving a batch to the device (0 on the CPU).
    """
    torch.manual_seed(0)
    dev = torch.device(device)
    model = FCN(4, 4, num_filters=filters).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    loss_fn = build_loss("qr")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def to_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}

    def step(batch: dict[str, torch.Tensor]) -> None:
        image = batch["image"].contiguous(memory_format=fmt)
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = model(image)
        loss = loss_fn(logits.float(), batch["prior"], batch["valid"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def transfer(batch: dict[str, torch.Tensor]) -> None:
        to_device(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    it: Iterator[dict[str, torch.Tensor]] = iter(loader)
    fixed = to_device(next(it))
    for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
        step(fixed)
    model_only = _median(lambda: step(fixed), steps)
    host = next(it)
    moved = _median(lambda: transfer(host), steps) if dev.type != "cpu" else 0.0
    full = _median(lambda: step(to_device(next(it))), steps)
    return model_only, full, moved


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
    parser.add_argument("--workers", type=int, default=2, help="loader workers besides 0")
    parser.add_argument("--filters", type=int, default=16, help="FCN width for the step times")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--device", default="cpu", help="device of the step times (cpu, cuda)")
    parser.add_argument(
        "--step-workers", type=int, default=0, help="loader workers of the full steps"
    )
    parser.add_argument("--skip-steps", action="store_true", help="loaders only")
    args = parser.parse_args()
    counts = (0, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = make_region(root, args.tiles_x, args.tiles_y, args.tile_size)
        rates: dict[tuple[str, int], float] = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in loader workers; see collate_windows
        copy = root / "training_copy"
        lcip_loader(manifest, args.crop, args.batch, 1, 0, copy)  # make the copies
        for workers in counts:
            rates[("lcip", workers)] = crops_per_second(
                lcip_loader(manifest, args.crop, args.batch, args.batches, workers),
                args.batch,
                args.batches,
            )
            rates[("default", workers)] = crops_per_second(
                lcip_loader(manifest, args.crop, args.batch, args.batches, workers, copy),
                args.batch,
                args.batches,
            )
            rates[("torchgeo", workers)] = crops_per_second(
                torchgeo_loader(root, args.crop, args.batch, args.batches, workers),
                args.batch,
                args.batches,
            )
            with rasterio.Env(GDAL_CACHEMAX=0):  # every crop decodes: a region >> the cache
                for name, source, reuse in (
                    ("lcip, no block cache", None, True),
                    ("lcip copy, new memory", copy, False),
                    ("lcip copy", copy, True),
                ):
                    loader = lcip_loader(
                        manifest, args.crop, args.batch, args.batches, workers, source, reuse
                    )
                    rates[(name, workers)] = crops_per_second(loader, args.batch, args.batches)
        handovers = {
            (workers, reuse): handover_rate(
                manifest, args.crop, args.batch, 3 * args.batches, workers, reuse
            )
            for workers in (1, args.workers)
            for reuse in (False, True)
        }
        splits = {
            "DEFLATE tiles, warm block cache": loading_split(
                manifest, args.crop, args.batch, args.batches
            ),
            "training copy": loading_split(manifest, args.crop, args.batch, args.batches, copy),
        }
        torch.set_num_threads(threads)
        steps = []
        if not args.skip_steps:
            for bf16, cl in ((False, False), (False, True), (True, False), (True, True)):
                loader = lcip_loader(
                    manifest, args.crop, args.batch, 3 * args.steps + 6, args.step_workers, copy
                )
                times = step_times(loader, args.filters, args.steps, bf16, cl, args.device)
                steps.append((bf16, cl, *times))
    n = len(manifest)
    print(
        f"\n{n} tiles of {args.tile_size} px, crops of {args.crop} px, batches of {args.batch}, "
        f"{args.batches} timed batches; loaders with 1 torch thread, steps with "
        f"{torch.get_num_threads()}\n"
    )
    print("| loader | GDAL block cache | batch hand-over | workers | crops/s | vs TorchGeo |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    default = "lcip default (training copy, made automatically)"
    originals = "lcip, compressed originals (data.training_copy=null)"
    rows = (
        ("torchgeo", "TorchGeo 0.8.1 RasterDatasets + RandomBatchGeoSampler", "default", "new"),
        ("default", default, "default (region fits)", "reused"),
        ("lcip copy", default, "0 (region >> cache)", "reused"),
        ("lcip copy, new memory", default, "0 (region >> cache)", "new"),
        ("lcip", originals, "default (region fits)", "reused"),
        ("lcip, no block cache", originals, "0 (region >> cache)", "reused"),
    )
    for workers in counts:
        base = rates[("torchgeo", workers)]
        for key, label, cache, handover in rows:
            rate = rates[(key, workers)]
            print(
                f"| {label} | {cache} | {handover} | {workers} | {rate:.0f} | {rate / base:.1f}x |"
            )
    for workers in counts:
        base = rates[("torchgeo", workers)]
        fits, large = rates[("default", workers)] / base, rates[("lcip copy", workers)] / base
        verdict = "met" if min(fits, large) >= 10 else "NOT met"
        print(
            f"\ndefault loader vs TorchGeo, {workers} workers: {fits:.1f}x (region fits the "
            f"cache), {large:.1f}x (region >> cache); the 10x bar is {verdict}"
        )
    print("\nhand-over alone (batches of the same layout, no reads; ms per batch):")
    print("| workers | new memory per batch | reused buffers | new / reused |")
    print("| ---: | ---: | ---: | ---: |")
    for workers in (1, args.workers):
        new, reused = (1e3 * args.batch / handovers[(workers, r)] for r in (False, True))
        print(f"| {workers} | {new:.1f} | {reused:.1f} | {new / reused:.1f}x |")
    print("\nlcip loading, 0 workers (ms per batch):")
    print("| tiles | window reads (decode + copy) | masks, scaling, labels | total |")
    print("| --- | ---: | ---: | ---: |")
    for name, split in splits.items():
        total = sum(split.values())
        print(
            f"| {name} | {1e3 * split['read']:.1f} | {1e3 * split['rest']:.1f} | "
            f"{1e3 * total:.1f} |"
        )
    if steps:
        print(
            f"\nQR training step, FCN {args.filters} filters, {args.device}, loader with "
            f"{args.step_workers} workers on the training copy (s per step, median):"
        )
        print(
            "| precision | memory format | model only | full (loader + transfer + step) | "
            "transfer | model / full |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for bf16, cl, model_only, full, moved in steps:
            prec = "bf16 autocast" if bf16 else "fp32"
            fmt = "channels_last" if cl else "contiguous"
            print(
                f"| {prec} | {fmt} | {model_only:.4f} | {full:.4f} | {moved:.4f} | "
                f"{100 * model_only / full:.0f} % |"
            )
        base = steps[0][2]
        best = min(steps, key=lambda s: s[2])
        print(
            f"\nfastest model step: {'bf16' if best[0] else 'fp32'}"
            f"{' + channels_last' if best[1] else ''} ({base / best[2]:.2f}x fp32 contiguous)"
        )


if __name__ == "__main__":
    main()

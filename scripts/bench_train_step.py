"""Benchmark: time per training step, split into data loading and compute.

Generates a small region (seeded), builds its NLCD prior, then times batches of random crops
(default 32 crops of 128x128, as in the paper) drawn from many tiles: data loading (windowed
reads of imagery, prior and labels, collation) and compute (forward, QR loss, backward,
AdamW step) of the paper's FCN. The baseline measured in the same run is the same step with
the soft-naive cross-entropy loss, so the table also shows what QR's denominator costs.

    python scripts/bench_train_step.py [--filters 128] [--crop 128] [--batch 32] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lcip.classes import CHESAPEAKE4
from lcip.data.datamodules import TileDataModule
from lcip.io.manifest import Manifest
from lcip.losses import build_loss
from lcip.priors.build import NLCDPriorJob, results_manifest, run_tile_jobs
from lcip.priors.cooccurrence import count_cooccurrence
from lcip.synthetic import RegionConfig, generate_region
from lcip.training.models import FCN


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--filters", type=int, default=128)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = Manifest.read(
            generate_region(RegionConfig(name="bench", tiles_x=3, tiles_y=2, tile_size=512), root)
        )
        matrix = count_cooccurrence(
            manifest.select("train"), CHESAPEAKE4, nlcd_layer="nlcd_30m", progress=False
        ).matrix
        job = NLCDPriorJob(root / "prior", scheme=CHESAPEAKE4, matrix=matrix, nlcd_layer="nlcd_30m")
        manifest = results_manifest(manifest, run_tile_jobs(job, manifest), "prior")
        dm = TileDataModule(
            manifest,
            CHESAPEAKE4,
            train_splits=["train", "val", "test"],
            crop_size=args.crop,
            batch_size=args.batch,
            steps_per_epoch=args.steps + 1,
            num_workers=args.workers,
        )
        dm.setup("fit")
        model = FCN(4, 4, num_filters=args.filters)
        rows = []
        for loss_name in ("soft_naive", "qr"):
            loss = build_loss(loss_name)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            load_t, comp_t = [], []
            it = iter(dm.train_dataloader())
            for i in range(args.steps + 1):
                t0 = time.perf_counter()
                batch = next(it)
                t1 = time.perf_counter()
                out = loss(model(batch["image"]), batch["prior"], batch["valid"])
                opt.zero_grad()
                out.backward()
                opt.step()
                t2 = time.perf_counter()
                if i:  # the first step warms up
                    load_t.append(t1 - t0)
                    comp_t.append(t2 - t1)
            rows.append((loss_name, statistics.median(load_t), statistics.median(comp_t)))
    base = rows[0][2]
    print(
        f"\nbatch {args.batch} x {args.crop}x{args.crop} px, FCN {args.filters} filters, "
        f"{torch.get_num_threads()} threads, "
        f"workers {args.workers}, median of {args.steps} steps\n"
    )
    print("| loss | data loading (s/step) | compute (s/step) | total (s/step) | compute vs CE |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, load, comp in rows:
        print(f"| {name} | {load:.3f} | {comp:.3f} | {load + comp:.3f} | {comp / base:.2f}x |")
    print(
        f"\npixels per step: {args.batch * args.crop**2:,}; "
        f"data/compute ratio (qr): {rows[1][1] / rows[1][2]:.2f}"
    )


if __name__ == "__main__":
    main()

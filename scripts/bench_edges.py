"""Benchmark: what a network sees beyond a tile's edges (``predict.edge``), measured on runs.

For each trained run folder given (default: the real-data acceptance runs of ``make
acceptance``), it predicts the run's evaluation tiles twice into a temporary folder, with
``predict.edge=zeros`` (the convolutions' zero padding: the baseline) and
``predict.edge=reflect`` (the tile mirrored across its edges), and prints the accuracy of q
and r against the labels in the band of ``--band`` pixels along every tile edge and inside it.

    python scripts/bench_edges.py [RUN_DIR ...] [--band 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from omegaconf import DictConfig, OmegaConf

from lcip.classes import IGNORE_INDEX
from lcip.io.manifest import Manifest
from lcip.stages.paths import scheme_of
from lcip.stages.predict import predict

ACCEPTANCE = Path("outputs/runs/chesapeake_wv_patches")
RUNS = ("qr_nlcd", "rq_nlcd", "lsr_nlcd", "hard_naive_nlcd", "soft_naive_nlcd")


def band_accuracy(
    manifest: Manifest, layer: str, labels: str, cfg: DictConfig, band: int
) -> tuple[float, float, int]:
    """Accuracy (%) of a class map in the edge band and inside it, and the band's pixels."""
    scheme = scheme_of(cfg)
    hits = {"edge": [0, 0], "inner": [0, 0]}
    for tile in manifest:
        with rasterio.open(tile.layer(layer)) as src:
            pred = src.read(1)
        with rasterio.open(tile.layer(labels)) as src:
            truth = scheme.map_labels(src.read(1))
        edge = np.zeros(pred.shape, bool)
        edge[:band] = edge[-band:] = True
        edge[:, :band] = edge[:, -band:] = True
        keep = truth != IGNORE_INDEX
        for name, part in (("edge", edge), ("inner", ~edge)):
            k = keep & part
            hits[name][0] += int((pred[k] == truth[k]).sum())
            hits[name][1] += int(k.sum())
    edge_acc, inner_acc = (100 * a / max(b, 1) for a, b in (hits["edge"], hits["inner"]))
    return edge_acc, inner_acc, hits["edge"][1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, default=[ACCEPTANCE / r for r in RUNS])
    parser.add_argument("--band", type=int, default=4, help="edge band width in pixels")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            if not (run / "config.yaml").exists():
                raise SystemExit(
                    f"{run}: no config.yaml (train the run first, e.g. make acceptance)"
                )
            cfg = OmegaConf.load(run / "config.yaml")
            assert isinstance(cfg, DictConfig)
            for edge in ("zeros", "reflect"):
                cfg.predict.out_dir = str(Path(tmp) / run.name / edge)
                cfg.predict.edge = edge
                manifest = Manifest.read(predict(cfg))
                for layer in ("q_class", "r_class"):
                    result = band_accuracy(manifest, layer, cfg.region.label_layer, cfg, args.band)
                    rows.append((run.name, layer[0], edge, *result))
    print(f"\naccuracy (%) in the {args.band} px band along the tile edges and inside it")
    print("| run | map | edge | band | inside | band pixels |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for name, layer, edge, band, inner, count in rows:
        print(f"| {name} | {layer} | {edge} | {band:.1f} | {inner:.1f} | {count} |")


if __name__ == "__main__":
    main()

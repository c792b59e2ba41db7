import base64
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.errors import ConfigError
from lcip.evaluation.evaluate import MapSpec, evaluate_protocols, write_evaluations
from lcip.evaluation.report import (
    PUBLISHED_CSV,
    build_report,
    load_run,
    published_for,
    quicklook_grid,
    read_published,
)
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, read_on_grid, write_raster


def make_run(
    root: Path, region: Manifest, name: str, seed: int, published: list | None = None
) -> Path:
    """A tiny evaluated run folder shaped like lcip-train/predict/evaluate leave one."""
    run = root / "runs" / name
    rng = np.random.default_rng(seed)
    tiles = region.select(["val", "test"])
    maps: dict[str, dict[str, Path]] = {"q_class": {}, "r_class": {}}
    for t in tiles:
        grid = Grid.of(t.layer("lc"))
        truth = CHESAPEAKE4.map_labels(read_on_grid(t.layer("lc"), grid, bands=1))
        for layer, noise in (("q_class", 0.3), ("r_class", 0.2)):
            pred = np.where(rng.random(grid.shape) < noise, rng.integers(0, 4, grid.shape), truth)
            pred = np.where(truth == IGNORE_INDEX, 0, pred).astype(np.uint8)
            maps[layer][t.tile_id] = write_raster(
                run / "predictions" / layer / f"{t.tile_id}.tif", pred, grid, nodata=IGNORE_INDEX
            )
    tiles = tiles.with_layer("prior_nlcd", {t.tile_id: t.layer("prior") for t in tiles})
    for layer, paths in maps.items():
        tiles = tiles.with_layer(layer, paths)
    tiles.write(run / "predictions" / "manifest.csv")
    region_name = name.split("/")[0]
    config = {
        "region": {"name": region_name, "scheme": "chesapeake4", "image_layer": "naip"},
        "region_label": "lc",
        "loss": {"name": "qr"},
        "prior": {"name": "nlcd"},
        "task": {"init_from": None},
    }
    if published is not None:
        config["published"] = published
    OmegaConf.save(OmegaConf.create(config), run / "config.yaml")
    (run / "logs").mkdir(parents=True)
    log = ["epoch,step,train/loss,val/loss,val/q_acc,val/q_miou"]
    log += [f"0,{s},{1 / s:.3f},,," for s in range(10, 100, 10)]
    log += ["0,99,,0.5,0.7,0.4", "1,199,,0.4,0.8,0.5"]
    (run / "logs" / "metrics.csv").write_text("\n".join(log) + "\n")
    maps_spec = [
        MapSpec("prior nlcd (argmax)", "prior_nlcd", "prob"),
        MapSpec("QR (q)", "q_class"),
        MapSpec("QR (r)", "r_class"),
    ]
    write_evaluations(evaluate_protocols(tiles, maps_spec, CHESAPEAKE4, image_layer="naip"), run)
    return run


def test_published_copy_matches_its_rows() -> None:
    rows = read_published()
    assert len(rows) == 70 and len({r.id for r in rows}) == 70
    ny_qr_r = next(r for r in rows if r.id == "1/ny/qr/r/scratch/nlcd")
    assert (ny_qr_r.acc, ny_qr_r.miou) == (87.9, 74.4)
    assert "UAI 2022" in PUBLISHED_CSV.read_text().splitlines()[2]


def test_report_of_two_runs(fake_region: Manifest, tmp_path: Path) -> None:
    ny = make_run(tmp_path, fake_region, "chesapeake_ny/qr_nlcd", 0, ["1/ny/qr/r/scratch/nlcd"])
    make_run(tmp_path, fake_region, "chesapeake_pa/qr_nlcd", 1)  # matched by region/loss/prior
    out = tmp_path / "report"
    written = build_report([str(tmp_path / "runs" / "*" / "*")], out, quicklook_tiles=1)
    assert sorted(p.name for p in written.values()) == sorted(
        ["report.md", "report.csv", "report_metrics.csv", "report.html"]
    )
    with open(written["report.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    by = {(r["run"], r["map"], r["published_id"]): r for r in rows}
    # the listed id only, beside the r map; the fallback finds PA's QR q and r rows
    ny_r = by[("chesapeake_ny/qr_nlcd", "QR (r)", "1/ny/qr/r/scratch/nlcd")]
    assert (float(ny_r["published_acc"]), float(ny_r["published_miou"])) == (87.9, 74.4)
    assert by[("chesapeake_ny/qr_nlcd", "QR (q)", "")]["published_acc"] == "nan"
    pa_q = by[("chesapeake_pa/qr_nlcd", "QR (q)", "1/pa/qr/q/scratch/nlcd")]
    assert float(pa_q["published_miou"]) == 69.3
    assert ("chesapeake_pa/qr_nlcd", "QR (r)", "1/pa/qr/r/scratch/nlcd") in by
    # lcip's figures are the run's own metrics.csv, both protocols
    with open(ny / "metrics.csv", newline="") as f:
        metrics = {(r["protocol"], r["tile"], r["map"]): r for r in csv.DictReader(f)}
    lcip_acc = 100 * float(metrics[("paper", "all", "QR (r)")]["accuracy"])
    later_miou = 100 * float(metrics[("paraformer", "all", "QR (r)")]["miou"])
    assert float(ny_r["paper_acc"]) == pytest.approx(lcip_acc)
    assert float(ny_r["paraformer_miou"]) == pytest.approx(later_miou)
    # markdown: the published figures beside lcip's in one table row; per tile; figures
    md = written["report.md"].read_text()
    line = next(ln for ln in md.splitlines() if "1/ny/qr/r/scratch/nlcd" in ln)
    assert f"| {lcip_acc:.1f} |" in line and "| 87.9 | 74.4 |" in line
    assert "| t3 | QR (q) |" in md and "figures/chesapeake_ny_qr_nlcd_curves.png" in md
    # html: self-contained, the same numbers, every image a decodable PNG
    page = written["report.html"].read_text()
    assert '<td class="num">87.9</td>' in page and f">{lcip_acc:.1f}<" in page
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "http" not in "".join(refs) and "<script" not in page and "@import" not in page
    sizes = set()
    for ref in refs:
        image = Image.open(io.BytesIO(base64.b64decode(ref.split(",", 1)[1])))
        image.load()
        sizes.add(image.size)
    assert len(refs) == 4 and len(sizes) == 2  # per run: one quicklook, one curves plot
    assert (out / "figures" / "chesapeake_pa_qr_nlcd_t2.png").is_file()
    # per-tile metrics of every run, with the run named
    tiles = written["report_metrics.csv"].read_text().splitlines()
    assert tiles[0].startswith("run,protocol,tile,map,accuracy,miou,iou_water")
    assert sum(",paraformer,t3,QR (r)," in ln for ln in tiles) == 2


def test_unknown_published_id_and_no_runs(fake_region: Manifest, tmp_path: Path) -> None:
    run = make_run(tmp_path, fake_region, "chesapeake_ny/qr_nlcd", 0, ["1/ny/qr/x"])
    with pytest.raises(ConfigError, match=r"config.yaml: published: '1/ny/qr/x' names no"):
        published_for(load_run(run), read_published())
    # a row number (1-based, file order) or a mapping of columns also name rows
    OmegaConf.save(
        OmegaConf.create({"published": [11, {"region": "ny", "method": "rq"}]}), run / "config.yaml"
    )
    ids = [p.id for p in published_for(load_run(run), read_published())]
    assert ids == ["1/ny/qr/r/scratch/nlcd", "1/ny/rq/q/scratch/nlcd", "1/ny/rq/r/scratch/nlcd"]
    with pytest.raises(ConfigError, match=r"^report.runs=.*no run folder"):
        build_report([str(tmp_path / "nothing" / "*")], tmp_path / "r")


def test_quicklook_grid_caps_the_longest_side(fake_region: Manifest) -> None:
    grid = Grid.of(fake_region.tiles[0].layer("naip"))  # 96 px
    assert quicklook_grid(grid, 384) is grid
    small = quicklook_grid(grid, 40)
    assert small.shape == (32, 32) and small.bounds == grid.bounds


def test_report_stage_reads_its_config_node(fake_region: Manifest, tmp_path: Path) -> None:
    from lcip.config import compose_config
    from lcip.stages.report import report

    make_run(tmp_path, fake_region, "chesapeake_pa/qr_nlcd", 1)
    runs = str(tmp_path / "runs" / "*" / "*")
    cfg = compose_config(
        [f"report.runs=['{runs}']", f"report.out_dir={tmp_path / 'r'}", "report.quicklook_tiles=0"]
    )
    page = report(cfg)
    assert page == tmp_path / "r" / "report.html"
    assert "1/pa/qr/q/scratch/nlcd" in page.read_text()
    assert not (tmp_path / "r" / "figures" / "chesapeake_pa_qr_nlcd_t2.png").exists()

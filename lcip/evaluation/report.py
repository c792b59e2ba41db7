"""One comparison of evaluated runs beside the published numbers: markdown, CSV and HTML.

A *run* is a run folder (``<paths.runs>/<region>/<run_name>``) holding what the stages wrote:

- ``metrics.csv`` (``lcip-evaluate``; one row per protocol, tile and map, see
  :func:`lcip.evaluation.evaluate.metrics_rows`) or, for runs evaluated before protocols existed,
  ``evaluation.csv`` (read as the ``paper`` protocol);
- ``config.yaml`` (``lcip-train``; the resolved config: region, scheme, loss, prior,
  ``task.init_from`` and an optional ``published:`` list of published row ids);
- ``logs/metrics.csv`` (Lightning's CSV log of ``lcip-train``: training curves);
- ``predictions/manifest.csv`` (``lcip-predict``: q and r maps beside the region's layers:
  quicklooks).

Published rows (:data:`PUBLISHED_CSV`, a copy of the paper's tables) are matched to a run's
q and r maps by the ids its config lists under ``published:`` (the ``id`` column, e.g.
``1/ny/qr/r/scratch/nlcd``; a row number, 1-based, in the file's order; or a mapping of
columns such as ``{region: ny, method: qr}``), or else by region (``chesapeake_ny`` ->
``ny``, ``enviroatlas_pittsburgh_pa`` -> ``pittsburgh_pa``), method (= ``loss.name``),
prior (rows without one match any; lcip's ``published`` prior is the tables' ``fused``),
init (``scratch`` when ``task.init_from`` is null, otherwise ``pittsburgh`` when its path
names Pittsburgh) and output (``q`` or ``r``; a row without one is set beside q). Published
figures are under the ``paper`` protocol only.

:func:`build_report` writes into one folder ``report.md`` (images linked from
``figures/``), ``report.csv`` (one row per run and map: both protocols' figures over all
tiles, the published ones beside, and ``collapsed`` = 1 for a map ``lcip-evaluate`` found
collapsed to one class, also marked in the tables), ``report_metrics.csv`` (every metrics
row of every run, per tile, with IoU per class) and ``report.html``, a self-contained page
(inline CSS, images embedded as base64 ``data:`` URIs, no scripts, fonts or external links).
"""

from __future__ import annotations

import base64
import csv
import glob
import html
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from lcip.classes import ClassScheme, get_scheme
from lcip.errors import ConfigError, DataError
from lcip.evaluation.evaluate import METRICS_NAME, PAPER, PROTOCOLS, read_class_map, rows_to_csv
from lcip.evaluation.quicklook import save_quicklook
from lcip.io.atomic import atomic_write, write_text
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, read_on_grid
from lcip.priors.build import prior_layer

log = logging.getLogger(__name__)

#: The published figures packaged with lcip (source noted in the file's header).
PUBLISHED_CSV = Path(str(files("lcip") / "resources" / "published_results.csv"))

#: Columns of a published figures CSV.
PUBLISHED_COLUMNS = ("id", "table", "region", "method", "output", "init", "prior", "acc", "miou")

#: lcip prior name -> the published tables' name: the prior published with EnviroAtlas is the
#: paper's hand-made "fused" prior.
PRIOR_ALIASES = {"published": "fused"}

#: Files :func:`build_report` writes.
REPORT_FILES = ("report.md", "report.csv", "report_metrics.csv", "report.html")
#: Beside a map's name in the comparison when ``lcip-evaluate`` found it collapsed to one class
#: (``collapsed`` = 1 in its metrics.csv, see :meth:`lcip.evaluation.evaluate.Evaluation.collapse`).
COLLAPSED_MARK = "⚠ COLLAPSED (one class)"


@dataclass(frozen=True)
class Published:
    """A published result (percentages, as printed in the paper)."""

    id: str
    table: str
    region: str
    method: str
    output: str
    init: str
    prior: str
    acc: float
    miou: float


def read_published(path: str | Path | None = None) -> list[Published]:
    """Read a published figures CSV (``#`` lines are comments).

    Args:
        path: the CSV; None reads :data:`PUBLISHED_CSV`.

    Raises:
        DataError: if the file is missing or lacks a column of :data:`PUBLISHED_COLUMNS`.
    """
    path = Path(path) if path is not None else PUBLISHED_CSV
    try:
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    except OSError as exc:
        raise DataError(f"{path}: cannot read published figures ({exc.strerror})") from exc
    reader = csv.DictReader(lines)
    missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}: published figures lack columns {missing}")
    return [
        Published(
            **{c: r[c].strip() for c in PUBLISHED_COLUMNS[:-2]},
            acc=float(r["acc"]),
            miou=float(r["miou"]),
        )
        for r in reader
    ]


@dataclass(frozen=True)
class Run:
    """An evaluated run folder, as the report reads it.

    Args:
        path: the run folder.
        name: its label in the report (``<region>/<folder name>``).
        config: its resolved ``config.yaml`` (empty when absent).
        metrics: its metrics rows (strings, as in the CSV), with a ``protocol`` column.
    """

    path: Path
    name: str
    config: Mapping[str, Any]
    metrics: Sequence[Mapping[str, str]] = field(default_factory=list)

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key (``region.name``), ``default`` when absent."""
        node: Any = self.config
        for key in dotted.split("."):
            if not isinstance(node, Mapping) or key not in node:
                return default
            node = node[key]
        return node

    @property
    def region(self) -> str:
        """The region's name (the run folder's parent's name when the config lacks it)."""
        return str(self.setting("region.name", self.path.parent.name))

    @property
    def loss(self) -> str:
        """The loss (method) name."""
        return str(self.setting("loss.name", ""))

    @property
    def prior(self) -> str:
        """The prior's name."""
        return str(self.setting("prior.name", ""))

    @property
    def init(self) -> str:
        """``scratch``, ``pittsburgh`` (a checkpoint whose path names Pittsburgh) or a stem."""
        init_from = self.setting("task.init_from")
        if not init_from:
            return "scratch"
        return "pittsburgh" if "pittsburgh" in str(init_from).lower() else Path(init_from).stem

    def scheme(self) -> ClassScheme | None:
        """The region's class scheme (None when the config lacks it)."""
        scheme = self.setting("region.scheme")
        return None if scheme is None else get_scheme(scheme)

    def overall(self, protocol: str) -> list[Mapping[str, str]]:
        """The metrics rows over all tiles (``tile = all``) under a protocol."""
        return [r for r in self.metrics if r["protocol"] == protocol and r["tile"] == "all"]


def find_runs(patterns: Sequence[str]) -> list[Path]:
    """Run folders matching globs that hold ``metrics.csv`` or ``evaluation.csv``, sorted.

    Raises:
        ConfigError: one line naming ``report.runs`` when no evaluated run matches.
    """
    found = {
        Path(p)
        for pattern in patterns
        for p in glob.glob(str(pattern))
        if (Path(p) / METRICS_NAME).is_file() or (Path(p) / "evaluation.csv").is_file()
    }
    if not found:
        raise ConfigError(
            f"report.runs={list(patterns)}: no run folder with {METRICS_NAME} or "
            "evaluation.csv (run lcip-evaluate first)"
        )
    return sorted(found)


def load_run(path: str | Path) -> Run:
    """Read a run folder's config and metrics.

    Raises:
        DataError: if the folder has neither ``metrics.csv`` nor ``evaluation.csv``.
    """
    path = Path(path)
    config_path = path / "config.yaml"
    config: dict[str, Any] = {}
    if config_path.is_file():
        loaded = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
        config = {str(k): v for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    if (path / METRICS_NAME).is_file():
        metrics = _read_csv(path / METRICS_NAME)
    elif (path / "evaluation.csv").is_file():
        metrics = [{"protocol": PAPER.name, **r} for r in _read_csv(path / "evaluation.csv")]
    else:
        raise DataError(f"{path}: no {METRICS_NAME} or evaluation.csv (run lcip-evaluate first)")
    region = str(config.get("region", {}).get("name", path.parent.name))
    return Run(path, f"{region}/{path.name}", config, metrics)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def map_output(name: str) -> str:
    """The output a map name stands for: ``q``, ``r``, ``prior`` (argmax) or ``""``."""
    for suffix, output in (("(q)", "q"), ("(r)", "r"), ("(argmax)", "prior")):
        if name.endswith(suffix):
            return output
    return ""


def region_key(region: str) -> str:
    """The published tables' region name of an lcip region (``chesapeake_ny`` -> ``ny``)."""
    for prefix in ("chesapeake_", "enviroatlas_"):
        if region.startswith(prefix):
            return region[len(prefix) :]
    return region


def published_for(run: Run, published: Sequence[Published]) -> list[Published]:
    """The published rows a run reproduces: its config's ``published:`` list, else a match.

    Raises:
        ConfigError: one line naming the run's config for an id no published row has.
    """
    listed = run.setting("published")
    if listed is None or listed == []:
        return [
            p
            for p in published
            if p.region == region_key(run.region)
            and p.method == run.loss
            and p.prior in ("", run.prior, PRIOR_ALIASES.get(run.prior))
            and p.init in ("", run.init)
        ]
    out: list[Published] = []
    for entry in listed if isinstance(listed, list) else [listed]:
        hits = _published_by_id(entry, published)
        if not hits:
            raise ConfigError(
                f"{run.path / 'config.yaml'}: published: {entry!r} names no published row "
                f"(ids such as {published[0].id!r}; see {PUBLISHED_CSV.name})"
            )
        out += [h for h in hits if h not in out]
    return out


def _published_by_id(entry: Any, published: Sequence[Published]) -> list[Published]:
    """Rows named by an id string, a 1-based row number or a mapping of columns."""
    if isinstance(entry, Mapping):
        return [
            p
            for p in published
            if all(str(getattr(p, str(k), None)) == str(v) for k, v in entry.items())
        ]
    if isinstance(entry, int) and not isinstance(entry, bool):
        return [published[entry - 1]] if 1 <= entry <= len(published) else []
    return [p for p in published if p.id == str(entry)]


def comparison_rows(runs: Sequence[Run], published: Sequence[Published]) -> list[dict[str, Any]]:
    """One row per run and map over all tiles: every protocol's figures and the published ones.

    Figures are percentages. A map with several matching published rows gets one row each;
    ``published_*`` are empty where nothing is published.
    """
    rows: list[dict[str, Any]] = []
    for run in runs:
        matches = published_for(run, published)
        by_protocol = {
            p: {r["map"]: r for r in run.overall(p)} for p in PROTOCOLS if run.overall(p)
        }
        names = list(dict.fromkeys(r["map"] for rs in by_protocol.values() for r in rs.values()))
        for name in names:
            output = map_output(name)
            base: dict[str, Any] = {
                "run": run.name,
                "region": run.region,
                "loss": run.loss,
                "prior": run.prior,
                "init": run.init,
                "map": name,
                "output": output,
            }
            for protocol in PROTOCOLS:
                r = by_protocol.get(protocol, {}).get(name)
                base[f"{protocol}_acc"] = _pct(r["accuracy"]) if r else math.nan
                base[f"{protocol}_miou"] = _pct(r["miou"]) if r else math.nan
            base["collapsed"] = int(
                any(
                    _flag(rs[name].get("collapsed", ""))
                    for rs in by_protocol.values()
                    if name in rs
                )
            )
            hits = [p for p in matches if p.output == output or (not p.output and output == "q")]
            none: list[Published | None] = [None]
            for hit in hits or none:
                row = dict(base)
                row["published_id"] = hit.id if hit else ""
                row["published_acc"] = hit.acc if hit else math.nan
                row["published_miou"] = hit.miou if hit else math.nan
                rows.append(row)
    return rows


def _flag(value: str) -> bool:
    """A ``collapsed`` cell of metrics.csv (``1`` / ``0``; empty in older runs)."""
    return value.strip().lower() in ("1", "1.0", "true")


def _pct(value: str) -> float:
    return 100 * float(value) if value not in ("", "nan") else math.nan


def _fmt(value: Any, signed: bool = False) -> str:
    """A percentage cell (``—`` for NaN or empty)."""
    if value in ("", None) or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):+.1f}" if signed else f"{float(value):.1f}"


def _class_columns(run: Run) -> list[str]:
    return [k for k in (run.metrics[0] if run.metrics else {}) if k.startswith("iou_")]


def training_curves(run: Run, path: Path) -> Path | None:
    """Plot a run's training log (``logs/metrics.csv``) to a PNG; None when there is none.

    Left: the losses (``train/loss``, ``val/loss``) per step; right: every other ``val/``
    metric (accuracy and mIoU of q and r on the validation tiles, %) per step.
    """
    log_path = run.path / "logs" / "metrics.csv"
    if not log_path.is_file():
        return None
    rows = _read_csv(log_path)
    if not rows or "step" not in rows[0]:
        return None
    columns = [c for c in rows[0] if c.startswith(("train/", "val/")) and c != "train/warmup"]
    losses = [c for c in columns if c.endswith("loss")]
    scores = [c for c in columns if c.startswith("val/") and c not in losses]
    fig = Figure(figsize=(11, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, cols, scale, ylabel in (
        (axes[0], losses, 1.0, "loss"),
        (axes[1], scores, 100.0, "validation score (%)"),
    ):
        for col in cols:
            pts = [(float(r["step"]), float(r[col])) for r in rows if r.get(col) not in ("", None)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, np.asarray(ys) * scale, marker="o" if len(pts) < 20 else None, ms=3)
                ax.lines[-1].set_label(col)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"{run.name}: training curves")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    return path


def quicklook_grid(grid: Grid, size: int) -> Grid:
    """A coarser grid over the same extent whose longest side is at most ``size`` pixels."""
    factor = max(1, math.ceil(max(grid.shape) / size))
    if factor == 1:
        return grid
    return Grid(
        grid.crs,
        grid.transform * Affine.scale(factor),
        math.ceil(grid.height / factor),
        math.ceil(grid.width / factor),
    )


def run_quicklooks(run: Run, out_dir: Path, tiles: int, size: int) -> list[Path]:
    """Quicklook PNGs of a run's first ``tiles`` evaluation tiles: imagery | prior | q | r | truth.

    Each panel's title carries the tile's accuracy and mIoU (``paper`` protocol). Needs the
    run's ``predictions/manifest.csv`` and its config; returns [] without them.
    """
    manifest_path = run.path / "predictions" / "manifest.csv"
    scheme = run.scheme()
    if tiles <= 0 or scheme is None or not manifest_path.is_file():
        return []
    manifest = Manifest.read(manifest_path, verify=False)
    image_layer = str(run.setting("region.image_layer", "naip"))
    label_layer = str(run.setting("region.label_layer", "lc"))
    scores = {(r["tile"], r["map"]): r for r in run.metrics if r["protocol"] == PAPER.name}
    names = {map_output(m): m for (_, m) in scores}
    paths = []
    for tile in manifest.tiles[:tiles]:
        grid = quicklook_grid(Grid.of(tile.layer(image_layer)), size)
        panels = []
        for layer, kind, output in (
            (prior_layer(run.prior), "prob", "prior"),
            ("q_class", "class", "q"),
            ("r_class", "class", "r"),
        ):
            if layer not in tile.layers:
                continue
            name = names.get(output, f"{output}")
            score = scores.get((tile.tile_id, name))
            title = name
            if score:
                title += f"\nacc {_pct(score['accuracy']):.1f} %, mIoU {_pct(score['miou']):.1f} %"
            panels.append((title, read_class_map(tile.layer(layer), grid, kind)))
        if label_layer in tile.layers:
            truth = scheme.map_labels(read_on_grid(tile.layer(label_layer), grid, bands=1))
            panels.append((f"truth ({scheme.name})", truth))
        image = read_on_grid(tile.layer(image_layer), grid)
        path = out_dir / f"{_slug(run.name)}_{_slug(tile.tile_id)}.png"
        title = f"{run.name}: tile {tile.tile_id} ({tile.split})"
        paths.append(save_quicklook(path, image, panels, scheme, title=title, ignored=True))
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


@dataclass
class _RunFigures:
    curves: Path | None
    quicklooks: list[Path]


def comparison_markdown_table(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The comparison as table cells (header first): lcip beside the published figures."""
    head = [
        "run",
        "map",
        "init",
        "acc (%)",
        "mIoU (%)",
        "published acc",
        "published mIoU",
        "Δ acc",
        "Δ mIoU",
        "published row",
        "paraformer OA",
        "paraformer mIoU",
    ]
    cells = [head]
    for r in rows:
        d_acc = r["paper_acc"] - r["published_acc"]
        d_miou = r["paper_miou"] - r["published_miou"]
        cells.append(
            [
                r["run"],
                f"{r['map']} {COLLAPSED_MARK}" if r.get("collapsed") else r["map"],
                r["init"],
                _fmt(r["paper_acc"]),
                _fmt(r["paper_miou"]),
                _fmt(r["published_acc"]),
                _fmt(r["published_miou"]),
                _fmt(d_acc, signed=True),
                _fmt(d_miou, signed=True),
                r["published_id"] or "—",
                _fmt(r["paraformer_acc"]),
                _fmt(r["paraformer_miou"]),
            ]
        )
    return cells


def per_class_cells(run: Run) -> list[list[str]]:
    """Per-class IoU (%) over all tiles, per protocol and map (header first)."""
    classes = _class_columns(run)
    cells = [["protocol", "map", *(c[4:].replace("_", " ") for c in classes)]]
    for protocol in PROTOCOLS:
        for r in run.overall(protocol):
            cells.append([protocol, r["map"], *(_fmt(_pct(r[c])) for c in classes)])
    return cells


def per_tile_cells(run: Run) -> list[list[str]]:
    """Accuracy and mIoU (%) per tile and map under every protocol (header first)."""
    protocols = [p for p in PROTOCOLS if run.overall(p)]
    head = ["tile", "map"]
    for p in protocols:
        head += [f"{p} acc", f"{p} mIoU"] if p == PAPER.name else [f"{p} OA", f"{p} mIoU"]
    head.append("pixels")
    index = {(r["protocol"], r["tile"], r["map"]): r for r in run.metrics}
    keys = list(dict.fromkeys((r["tile"], r["map"]) for r in run.metrics if r["tile"] != "all"))
    cells = [head]
    for tile, name in keys:
        row = [tile, name]
        for p in protocols:
            r = index.get((p, tile, name))
            row += [_fmt(_pct(r["accuracy"])), _fmt(_pct(r["miou"]))] if r else ["—", "—"]
        first = index.get((protocols[0], tile, name)) if protocols else None
        row.append(f"{int(float(first['pixels'])):,}" if first else "—")
        cells.append(row)
    return cells


def markdown_table(cells: Sequence[Sequence[str]]) -> str:
    """A markdown table (first row = header; columns after the second right-aligned)."""
    head, *body = cells
    align = ["---" if i < 2 else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def html_table(cells: Sequence[Sequence[str]], css_class: str = "") -> str:
    """An HTML table (first row = header; ``+``/``-`` signed cells coloured)."""
    head, *body = cells
    out = [f'<table class="{css_class}"><thead><tr>']
    out += [f"<th>{html.escape(str(h))}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in body:
        out.append("<tr>")
        for i, cell in enumerate(row):
            text = str(cell)
            cls = ["num"] if i >= 2 and _NUMERIC.match(text) else []
            if text[:1] in "+-" and len(text) > 1 and text[1:2].isdigit():
                cls.append("pos" if text[0] == "+" else "neg")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            out.append(f"<td{attr}>{html.escape(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


_NUMERIC = re.compile(r"^(?:[+-]?[\d.,]+|—)$")


def data_uri(path: Path) -> str:
    """A PNG as a base64 ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;
color:#1d2329;background:#fff;max-width:1500px;line-height:1.4}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:2px solid #d0d7de;
padding-bottom:4px}h3{margin-top:1.2em}
.note{color:#57606a;font-size:.92em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:4px 8px}th{background:#f3f5f7;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pos{color:#116329;font-weight:600}td.neg{color:#a40e26;font-weight:600}
tbody tr:nth-child(even){background:#fafbfc}
img{max-width:100%;border:1px solid #d0d7de;margin:6px 0}
.run{border:1px solid #d0d7de;border-radius:6px;padding:4px 16px 12px;margin:18px 0}
code{background:#f3f5f7;padding:1px 4px;border-radius:3px}
"""


def _protocol_notes() -> list[str]:
    return [f"{p.name}: {p.description}" for p in PROTOCOLS.values()]


def build_report(
    patterns: Sequence[str],
    out_dir: str | Path,
    *,
    published: str | Path | None = None,
    quicklook_tiles: int = 2,
    quicklook_size: int = 384,
    title: str = "lcip report",
) -> dict[str, Path]:
    """Gather the evaluated runs matching ``patterns`` into one comparison.

    Args:
        patterns: globs of run folders.
        out_dir: where the report goes (``figures/`` beside it holds the PNGs).
        published: published figures CSV (None: :data:`PUBLISHED_CSV`).
        quicklook_tiles: tiles per run shown as quicklooks (0: none).
        quicklook_size: longest side of a quicklook panel, pixels.
        title: the page's title.

    Returns:
        file name -> path of each file of :data:`REPORT_FILES`.

    Raises:
        ConfigError: if no run matches, or a run names an unknown published row.
        DataError: for an unreadable published figures file.
    """
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    rows_published = read_published(published)
    runs = [load_run(p) for p in find_runs(patterns)]
    log.info("report: %d run(s): %s", len(runs), ", ".join(r.name for r in runs))
    comparison = comparison_rows(runs, rows_published)
    made = {
        run.name: _RunFigures(
            training_curves(run, figures / f"{_slug(run.name)}_curves.png"),
            run_quicklooks(run, figures, quicklook_tiles, quicklook_size),
        )
        for run in runs
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = published or f"{PUBLISHED_CSV.name} (packaged with lcip)"
    intro = (
        f"{len(runs)} run(s), generated {stamp}. lcip's figures are over all evaluation tiles "
        f"of each run (confusion matrices summed over tiles). Published figures: Rolf, Malkin "
        f'et al., UAI 2022 ({source}), under the "paper" protocol. Δ = lcip − published.'
    )
    cells = comparison_markdown_table(comparison)

    md = [f"# {title}", "", intro, "", "Protocols:", ""]
    md += [f"- {n}" for n in _protocol_notes()]
    md += ["", "## lcip beside the published numbers", "", markdown_table(cells), ""]
    page = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='note'>{html.escape(intro)}</p>",
        "<ul class='note'>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in _protocol_notes())
        + "</ul>",
        "<h2>lcip beside the published numbers</h2>",
        html_table(cells, "comparison"),
    ]
    for run in runs:
        fig = made[run.name]
        where = f"{run.path} · region {run.region} · loss {run.loss} · prior {run.prior}"
        where += f" · init {run.init}"
        md += [f"## {run.name}", "", where, "", "### IoU per class (%), all tiles", ""]
        md += [markdown_table(per_class_cells(run)), "", "### Per tile", ""]
        md += [markdown_table(per_tile_cells(run)), ""]
        page += [
            f"<div class='run'><h2>{html.escape(run.name)}</h2>",
            f"<p class='note'>{html.escape(where)}</p>",
            "<h3>IoU per class (%), all tiles</h3>",
            html_table(per_class_cells(run)),
            "<h3>Per tile</h3>",
            html_table(per_tile_cells(run)),
        ]
        for label, paths in (
            ("Quicklooks", fig.quicklooks),
            ("Training curves", [fig.curves] if fig.curves else []),
        ):
            if not paths:
                continue
            md += [f"### {label}", ""]
            md += [f"![{p.stem}](figures/{p.name})" for p in paths]
            md.append("")
            page.append(f"<h3>{label}</h3>")
            page += [f"<img alt='{html.escape(p.stem)}' src='{data_uri(p)}'>" for p in paths]
        page.append("</div>")
    page.append("</body></html>")
    metrics = [{"run": run.name, **row} for run in runs for row in run.metrics]
    written = {
        "report.md": write_text(out_dir / "report.md", "\n".join(md) + "\n"),
        "report.csv": write_text(out_dir / "report.csv", rows_to_csv(comparison)),
        "report_metrics.csv": write_text(out_dir / "report_metrics.csv", _csv_union(metrics)),
        "report.html": write_text(out_dir / "report.html", "\n".join(page) + "\n"),
    }
    return written


def _csv_union(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of rows whose keys may differ (header = the union, in first-seen order)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


__all__ = [
    "COLLAPSED_MARK",
    "PRIOR_ALIASES",
    "PUBLISHED_COLUMNS",
    "PUBLISHED_CSV",
    "REPORT_FILES",
    "Published",
    "Run",
    "build_report",
    "comparison_rows",
    "data_uri",
    "find_runs",
    "html_table",
    "load_run",
    "map_output",
    "markdown_table",
    "per_class_cells",
    "per_tile_cells",
    "published_for",
    "quicklook_grid",
    "read_published",
    "region_key",
    "run_quicklooks",
    "training_curves",
]

r"""Convert published cooccurrence statistics into lcip's built-in tables (package data).

Reads the upstream files, given as paths, and writes ``lcip/resources/cooccurrence/``: per table a
CSV (:meth:`lcip.priors.cooccurrence.Cooccurrence.to_csv` layout) and a JSON record of its
provenance; for ``chesapeake4`` also label super-resolution statistics; and the outline of the
Chesapeake Bay watershed states used by ``cooccurrence.source=auto``. See
:mod:`lcip.priors.builtin` for what the tables are.

Upstream files (bring them with ``git -C <clone> show <commit>:<path> > <file>``):

- ``--enviroatlas DIR``: the four ``avg_nlcd_*_label_cooccurrences.npy`` of
  ``estherrolf/implicit-posterior`` (``qr_for_landcover/compute_priors/cooccurrence_matrices/
  enviroatlas/``), commit ``3f7441fd299fd6d59eb8a133c5bb12fd0de511aa``;
- ``--land-cover DIR``: ``nlcd_mu.txt``, ``nlcd_sigma.txt`` and ``nlcd_to_lr_labels.txt`` of
  ``calebrob6/land-cover`` (``data/``), commit ``366e420d1766928ed6288d652246de89c9f14410``;
- ``--states FILE``: ``us-states.json`` of ``brujorge/us-states-map``, commit
  ``6a56d8972be689ecbd69394a2655926bdd36c429`` (the US state outlines circulated with
  folium's and Leaflet's choropleth examples).

Usage::

    python scripts/make_builtin_cooccurrence.py --enviroatlas upstream/enviroatlas \\
        --land-cover upstream/land-cover --states upstream/us-states.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lcip import __version__
from lcip.classes import CHESAPEAKE4, ENVIROATLAS5_RAW, NLCD_CODES, ClassScheme
from lcip.priors.builtin import (
    ENVIROATLAS_ROWS,
    ENVIROATLAS_TO_CHESAPEAKE4,
    STATES_FILE,
    collapse_rows,
    enviroatlas_row_classes,
    land_cover_rows,
    normalize_columns,
)
from lcip.priors.cooccurrence import NUM_NLCD, Cooccurrence, LSRStatistics

OUT = Path(__file__).resolve().parents[1] / "lcip" / "resources" / "cooccurrence"

IMPLICIT_POSTERIOR = {
    "repository": "estherrolf/implicit-posterior",
    "commit": "3f7441fd299fd6d59eb8a133c5bb12fd0de511aa",
    "folder": "qr_for_landcover/compute_priors/cooccurrence_matrices/enviroatlas",
    "code": "qr_for_landcover/compute_priors/compute_cooccurrence_matrices_enviroatlas.py",
    "license": "MIT (repository LICENSE)",
}
LAND_COVER = {
    "repository": "calebrob6/land-cover",
    "commit": "366e420d1766928ed6288d652246de89c9f14410",
    "path": "data/nlcd_mu.txt",
    "file_commit": "6d73638e443a00190ad9f850a8937bbe625dc7fe",  # last change of nlcd_mu.txt
}
STATES = {
    "repository": "brujorge/us-states-map",
    "commit": "6a56d8972be689ecbd69394a2655926bdd36c429",
    "path": "us-states.json",
    "names": [
        "New York",
        "Pennsylvania",
        "Maryland",
        "Delaware",
        "Virginia",
        "West Virginia",
        "District of Columbia",
    ],
}

#: name -> (upstream file, area, label year, which tiles were counted)
CITIES: dict[str, dict[str, Any]] = {
    "pittsburgh": {
        "file": "avg_nlcd_pa_whole_city_label_cooccurrences.npy",
        "area": {"name": "Pittsburgh, PA", "lon": -79.9959, "lat": 40.4406},
        "year": 2010,
        "tiles": "every tile of enviroatlas-pittsburgh_pa-2010 (descriptor whole_city)",
    },
    "durham": {
        "file": "avg_nlcd_nc_whole_city_label_cooccurrences.npy",
        "area": {"name": "Durham, NC", "lon": -78.8986, "lat": 35.9940},
        "year": 2012,
        "tiles": "every tile of enviroatlas-durham_nc-2012 (descriptor whole_city)",
    },
    "austin": {
        "file": "avg_nlcd_austin_tx_whole_city_no_ag_label_cooccurrences.npy",
        "area": {"name": "Austin, TX", "lon": -97.7431, "lat": 30.2672},
        "year": 2012,
        "tiles": "tiles of enviroatlas-austin_tx-2012 without unclassified pixels and "
        "without agriculture (descriptor whole_city_no_ag)",
    },
    "phoenix": {
        "file": "avg_nlcd_az_whole_city_no_ag_label_cooccurrences.npy",
        "area": {"name": "Phoenix, AZ", "lon": -112.0740, "lat": 33.4484},
        "year": 2010,
        "tiles": "tiles of enviroatlas-phoenix_az-2010 without unclassified pixels and "
        "without agriculture (descriptor whole_city_no_ag)",
    },
}


def sha256(path: Path) -> str:
    """The sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_table(
    out: Path,
    stem: str,
    name: str,
    scheme: ClassScheme,
    matrix: npt.NDArray[np.float64],
    record: dict[str, Any],
    lsr: LSRStatistics | None = None,
) -> None:
    """Write ``<stem>.csv`` and its JSON record (and ``<stem>.lsr_statistics.json``)."""
    coocc = Cooccurrence(
        matrix, np.zeros(matrix.shape, np.int64), scheme.name, scheme.classes, source=name
    )
    (out / f"{stem}.csv").write_text(coocc.to_csv())
    record = {
        "builtin": name,
        "scheme": scheme.name,
        "classes": list(scheme.classes),
        "nlcd_codes": list(NLCD_CODES),
        **record,
        "uniform_columns": coocc.uniform_codes,
        "source": f"builtin:{name}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "lcip_version": __version__,
    }
    if lsr is not None:
        lsr_name = f"{stem}.lsr_statistics.json"
        (out / lsr_name).write_text(json.dumps(lsr.metadata(), indent=2) + "\n")
        record["lsr_statistics"] = lsr_name
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")


def enviroatlas_tables(folder: Path, out: Path) -> None:
    """The four cities, in ``enviroatlas5_raw`` and in ``chesapeake4``."""
    for name, city in CITIES.items():
        path = folder / city["file"]
        source = np.load(path)
        if source.shape != (len(ENVIROATLAS_ROWS), NUM_NLCD):
            raise SystemExit(f"{path}: shape {source.shape}, expected (11, 17)")
        empty = [NLCD_CODES[n] for n in range(1, NUM_NLCD) if source[1:, n].sum() <= 1e-12]
        provenance = {
            "repository": IMPLICIT_POSTERIOR["repository"],
            "path": f"{IMPLICIT_POSTERIOR['folder']}/{city['file']}",
            "commit": IMPLICIT_POSTERIOR["commit"],
            "sha256": sha256(path),
            "license": IMPLICIT_POSTERIOR["license"],
            "region": f"EPA EnviroAtlas, {city['area']['name']}",
            "years": {
                "labels": city["year"],
                "nlcd": "as in the paper's EnviroAtlas tiles (not stated in the file)",
            },
            "source_scheme": "11 rows: EnviroAtlas codes "
            f"{list(ENVIROATLAS_ROWS)} (0 unclassified); 17 columns: NLCD codes {list(NLCD_CODES)}",
            "counted": (
                "per tile, pixel counts of (EnviroAtlas class, NLCD class) pairs; averaged over "
                f"the tiles with labelled pixels ({city['tiles']}); each NLCD column normalized "
                "to sum to 1; an NLCD class without labelled pixels put wholly on the "
                f"unclassified row ({IMPLICIT_POSTERIOR['code']}). Counted over the whole "
                "city, its evaluation tiles included."
            ),
            "paper": "Rolf, Malkin, Graikos, Jojic, Robinson, Jojic: Resolving label "
            "uncertainty with implicit posterior models (UAI 2022)",
        }
        five = enviroatlas_row_classes(ENVIROATLAS5_RAW)
        changes5 = [
            "rows summed into lcip's enviroatlas5 classes with ENVIROATLAS5_RAW.prior_map "
            "(shrub 52, orchards 82, woody wetlands 91 -> tree; agriculture 80, emergent "
            "wetlands 92 -> grass; rows 7-10 are all zero in this file)",
            "the unclassified row dropped and each column renormalized",
            f"NLCD columns without labelled pixels {empty} and the nodata column set uniform "
            "(1/5), as lcip's own counting does",
        ]
        write_table(
            out,
            f"{name}_enviroatlas5_raw",
            name,
            ENVIROATLAS5_RAW,
            collapse_rows(source, five, ENVIROATLAS5_RAW.num_classes),
            {
                "title": f"EnviroAtlas {city['area']['name']} ({city['year']}), 5 classes",
                "area": city["area"],
                "provenance": {**provenance, "lcip_changes": changes5},
            },
        )
        mapping = ", ".join(f"{k} -> {v}" for k, v in ENVIROATLAS_TO_CHESAPEAKE4.items())
        changes4 = [
            changes5[0],
            f"then mapped to chesapeake4 classes: {mapping} (the Chesapeake 4-class labels "
            "merge barren into impervious too)",
            changes5[1],
            f"NLCD columns without labelled pixels {empty} and the nodata column set uniform (1/4)",
        ]
        write_table(
            out,
            f"{name}_chesapeake4",
            name,
            CHESAPEAKE4,
            collapse_rows(source, enviroatlas_row_classes(CHESAPEAKE4), CHESAPEAKE4.num_classes),
            {
                "title": f"EnviroAtlas {city['area']['name']} ({city['year']}), as 4 classes",
                "area": city["area"],
                "caveat": "EnviroAtlas barren (soil, rock, sand) is counted as impervious",
                "provenance": {**provenance, "lcip_changes": changes4},
            },
        )


def read_codes(path: Path) -> dict[int, int]:
    """``nlcd_to_lr_labels.txt``: NLCD code -> row index."""
    pairs = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return {int(code): int(row) for code, row in pairs}


def chesapeake_table(folder: Path, out: Path) -> None:
    """``chesapeake4`` from ``nlcd_mu.txt`` (and ``nlcd_sigma.txt`` for LSR statistics)."""
    codes = read_codes(folder / "nlcd_to_lr_labels.txt")
    mu = np.loadtxt(folder / "nlcd_mu.txt")
    sigma = np.loadtxt(folder / "nlcd_sigma.txt")
    num = CHESAPEAKE4.num_classes
    matrix = normalize_columns(land_cover_rows(mu, codes, 1.0 / num))
    rho2 = land_cover_rows(sigma**2, codes, 0.25)
    lsr = LSRStatistics(
        eta=matrix,
        rho2=rho2,
        blocks=np.zeros(NUM_NLCD, np.int64),
        scheme_name=CHESAPEAKE4.name,
        class_names=CHESAPEAKE4.classes,
        source="builtin:chesapeake4",
    )
    files = {
        n: sha256(folder / n) for n in ("nlcd_mu.txt", "nlcd_sigma.txt", "nlcd_to_lr_labels.txt")
    }
    provenance = {
        "repository": LAND_COVER["repository"],
        "path": LAND_COVER["path"],
        "commit": LAND_COVER["commit"],
        "file_commit": LAND_COVER["file_commit"],
        "sha256": files["nlcd_mu.txt"],
        "files": {f"data/{n}": h for n, h in files.items()},
        "region": "Chesapeake Bay watershed: the Chesapeake Land Cover dataset (DE, MD, NY, "
        "PA, VA, WV)",
        "years": {
            "labels": "2013-2014 (Chesapeake Conservancy 1 m land cover, as in the dataset)",
            "nlcd": "2011 (as in the dataset)",
            "note": "the file itself states neither",
        },
        "source_scheme": "22 rows: NLCD row indices of data/nlcd_to_lr_labels.txt; 4 columns: "
        "water, tree canopy, field, built (Chesapeake barren and both impervious codes, "
        "data/cheaseapeake_to_hr_labels.txt)",
        "counted": "per NLCD class, the mean (nlcd_mu.txt) and standard deviation "
        "(nlcd_sigma.txt) of the 1 m class fractions, rounded to 0.01, as the code's "
        "super-resolution loss uses them (landcover/models.py sr_loss); the file does not "
        "record the tiles they were computed on",
        "paper": "Robinson et al.: Large Scale High-Resolution Land Cover Mapping with "
        "Multi-Resolution Data (CVPR 2019); Malkin et al.: Label super-resolution networks "
        "(ICLR 2019)",
        "lcip_changes": [
            "rows taken in lcip's NLCD column order through nlcd_to_lr_labels.txt (the "
            "Alaska-only codes 51, 72, 73, 74 and the 128 / 255 rows dropped)",
            "each NLCD column normalized to sum to 1 (the published fractions are rounded)",
            "NLCD 12 (perennial ice/snow): the published row (all low vegetation, standard "
            "deviation 0.1) is the placeholder the Alaska-only rows carry too, so it is made "
            "uniform (1/4) like any NLCD class without labelled pixels; nodata 0 uniform",
            "the code's do_nlcd_means_tuning (+0.25 impervious on developed classes) is not "
            "applied",
            "label super-resolution statistics: eta = the normalized means, rho2 = the "
            "squared standard deviations (0.25 on uniform columns)",
        ],
    }
    write_table(
        out,
        "chesapeake4",
        "chesapeake4",
        CHESAPEAKE4,
        matrix,
        {
            "title": "Chesapeake Land Cover, 4 classes (label super-resolution statistics)",
            "area": {"name": "the Chesapeake Bay watershed states", "polygon": STATES_FILE},
            "provenance": provenance,
        },
        lsr,
    )


def states_outline(path: Path, out: Path) -> None:
    """The union of the watershed states' outlines, as one GeoJSON feature."""
    import shapely
    from shapely.geometry import mapping, shape

    data = json.loads(path.read_text())
    names = STATES["names"]
    geoms = [
        shape(f["geometry"]).buffer(0)
        for f in data["features"]
        if f["properties"].get("name") in names
    ]
    if len(geoms) != len(names):
        raise SystemExit(f"{path}: found {len(geoms)} of the states {names}")
    union = shapely.set_precision(shapely.union_all(geoms), 1e-5)
    feature = {
        "type": "Feature",
        "properties": {
            "name": "Chesapeake Bay watershed states",
            "states": names,
            "repository": STATES["repository"],
            "path": STATES["path"],
            "commit": STATES["commit"],
            "sha256": sha256(path),
            "lcip_changes": "union of the seven outlines, coordinates rounded to 1e-5 degrees",
        },
        "geometry": mapping(union),
    }
    collection = {"type": "FeatureCollection", "features": [feature]}
    (out / STATES_FILE).write_text(json.dumps(collection) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and write every table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enviroatlas", type=Path, required=True)
    parser.add_argument("--land-cover", type=Path, required=True)
    parser.add_argument("--states", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    enviroatlas_tables(args.enviroatlas, args.out)
    chesapeake_table(args.land_cover, args.out)
    states_outline(args.states, args.out)
    print(f"wrote {len(list(args.out.glob('*.csv')))} tables to {args.out}")


if __name__ == "__main__":
    main()

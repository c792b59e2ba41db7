"""Console scripts: one Hydra app per pipeline stage (see :mod:`lcip.stages`)."""

import sys

from lcip.cli.app import hydra_app

acquire = hydra_app(
    "acquire",
    "lcip.stages.acquire:acquire",
    "fetch a real region's files (region=chesapeake_ny, enviroatlas_austin_tx, ...) and write "
    "its verified manifest; acquire.dry_run=true lists what it would fetch.",
)
region = hydra_app(
    "region",
    "lcip.stages.region:region",
    "make the region's manifest available (generate a generated region such as region=demo).",
)
cooccurrence = hydra_app(
    "cooccurrence",
    "lcip.stages.cooccurrence:cooccurrence",
    "count P(target class | NLCD class) on the region's training tiles.",
)
prior = hydra_app(
    "prior",
    "lcip.stages.prior:prior",
    "build the configured prior (prior=nlcd|fused|learned) for every tile of the region.",
)
train = hydra_app(
    "train",
    "lcip.stages.train:train",
    "train the network on the prior with the configured loss (resumes an interrupted run).",
)
predict = hydra_app(
    "predict",
    "lcip.stages.predict:predict",
    "write q and r probability and class maps (COG) of the evaluation tiles.",
)
epitome = hydra_app(
    "epitome",
    "lcip.stages.epitome:epitome",
    "self-epitomic label super-resolution: q probability and class maps (COG) of the "
    "evaluation tiles from the imagery, NLCD and cooccurrence alone (no training).",
)
evaluate = hydra_app(
    "evaluate",
    "lcip.stages.evaluate:evaluate",
    "score the prior's argmax, q and r against the 1 m labels (markdown + CSV).",
)
compare_priors = hydra_app(
    "compare-priors",
    "lcip.stages.compare_priors:compare_priors",
    "score priors side by side (compare.priors=[nlcd,published]) against the 1 m labels, "
    "with their mean absolute difference.",
)
demo = hydra_app(
    "demo",
    "lcip.stages.demo:demo",
    "run every stage on the generated demo region and write a results table and quicklook.",
)
report = hydra_app(
    "report",
    "lcip.stages.report:report",
    "gather evaluated runs (report.runs globs) into one comparison beside the published "
    "numbers: markdown, CSV and a self-contained HTML page with quicklooks and training curves.",
)
_map = hydra_app(
    "map",
    "lcip.stages.map:map_area",
    "map a place in one command: acquire (region.source.place='Ithaca, NY' "
    "region.source.year=2022, or .bbox) -> prior -> QR trained on the area itself -> predict "
    "-> products (seamless class, probability and confidence maps, class areas, index.html) "
    "in outputs/maps/<map.name>/; every step skips what is up to date; map.dry_run=true "
    "prints the steps, bytes, disk and time expected. region=place unless a region is given.",
)


def map_area() -> None:
    """``lcip-map``: the ``map`` stage on ``region=place`` unless another region is given."""
    if not any(a.split("=", 1)[0].lstrip("+~") == "region" for a in sys.argv[1:]):
        sys.argv.insert(1, "region=place")
    _map()


__all__ = [
    "acquire",
    "compare_priors",
    "cooccurrence",
    "demo",
    "epitome",
    "evaluate",
    "map_area",
    "predict",
    "prior",
    "region",
    "report",
    "train",
]

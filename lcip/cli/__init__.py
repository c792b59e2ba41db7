"""Console scripts: one Hydra app per pipeline stage (see :mod:`lcip.stages`)."""

from lcip.cli.app import hydra_app

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
evaluate = hydra_app(
    "evaluate",
    "lcip.stages.evaluate:evaluate",
    "score the prior's argmax, q and r against the 1 m labels (markdown + CSV).",
)
demo = hydra_app(
    "demo",
    "lcip.stages.demo:demo",
    "run every stage on the generated demo region and write a results table and quicklook.",
)

__all__ = ["cooccurrence", "demo", "evaluate", "predict", "prior", "region", "train"]

"""Console scripts: one Hydra app per pipeline stage (see :mod:`lcip.pipeline`)."""

from lcip import pipeline
from lcip.cli.app import hydra_app

region = hydra_app(pipeline.region)
cooccurrence = hydra_app(pipeline.cooccurrence)
prior = hydra_app(pipeline.prior)
train = hydra_app(pipeline.train)
predict = hydra_app(pipeline.predict)
evaluate = hydra_app(pipeline.evaluate)
demo = hydra_app(pipeline.demo)

__all__ = ["cooccurrence", "demo", "evaluate", "predict", "prior", "region", "train"]

"""Paper experiments: what each experiment config reproduces and the stages it runs.

An experiment config (``lcip/conf/experiment/<name>.yaml``) records under ``paper``:
``published`` (ids of the rows of ``lcip/resources/published_results.csv`` it reproduces,
``table/region/method[/output][/init][/prior]``), ``stages`` (the console scripts it runs, in
order; default :data:`DEFAULT_STAGES`), ``multirun`` (run each stage as a Hydra multirun, e.g.
NY and PA for the NY + PA rows) and ``pooled`` (regions whose evaluations the row pools).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from lcip.config import CONFIG_DIR
from lcip.errors import ConfigError

#: The experiment configs.
EXPERIMENTS = CONFIG_DIR / "experiment"
#: Stages run when an experiment lists none.
DEFAULT_STAGES = ["cooccurrence", "prior", "train", "predict", "evaluate"]


def paper_settings(name: str) -> dict[str, Any]:
    """The ``paper`` node of an experiment, merged over the experiments it builds on.

    Read from the YAML files directly (no composition, so it is instant): a ``defaults``
    entry that names another experiment file contributes its ``paper`` node first.

    Raises:
        ConfigError: if there is no such experiment.
    """
    path = EXPERIMENTS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
        raise ConfigError(f"experiment={name}: no {path}; one of {known}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(raw, dict)
    merged: dict[str, Any] = {}
    for entry in raw.get("defaults", []):
        if (
            isinstance(entry, str)
            and entry != "_self_"
            and (EXPERIMENTS / f"{entry}.yaml").is_file()
        ):
            merged.update(paper_settings(entry))
    merged.update(raw.get("paper") or {})
    return merged


def commands(name: str, overrides: list[str]) -> list[list[str]]:
    """The console-script command lines the experiment runs, in order."""
    paper = paper_settings(name)
    multirun = ["-m"] if paper.get("multirun") else []
    stages = paper.get("stages") or DEFAULT_STAGES
    return [[f"lcip-{stage}", *multirun, f"experiment={name}", *overrides] for stage in stages]


__all__ = ["DEFAULT_STAGES", "EXPERIMENTS", "commands", "paper_settings"]

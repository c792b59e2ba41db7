"""Stage ``predict``: q and r maps of the evaluation tiles, tied to the checkpoint used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lcip.config import instantiate
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.shards import merge_shards, parse_shard, select_shard
from lcip.stages.checks import check_device, check_predict_settings, cuda_available
from lcip.stages.paths import (
    checkpoint_file,
    predictions_manifest_path,
    prior_layer,
    prior_manifest_path,
    scheme_of,
)


def prediction_params(cfg: DictConfig, checkpoint: Path) -> dict[str, Any]:
    """What a prediction map records about how it was made (its provenance ``params``).

    Args:
        cfg: composed config.
        checkpoint: the checkpoint file ``predict.checkpoint`` names.

    Returns:
        the checkpoint setting, file and sha256, the loss, its smoothing and denominator, the
        prior's name, and what the network saw beyond the tiles' edges.
    """
    from lcip.io.provenance import sha256_file

    return {
        "checkpoint": str(cfg.predict.checkpoint),
        "checkpoint_path": str(checkpoint.resolve()),
        "checkpoint_sha256": sha256_file(checkpoint),
        "loss": str(cfg.loss.name),
        "smoothing": float(cfg.loss.smoothing),
        "denominator": str(cfg.loss.get("denominator", "none")),
        "prior": str(cfg.prior.name),
        "zero_is_nodata": bool(cfg.data.get("zero_is_nodata", True)),
        "edge": str(cfg.predict.get("edge", "reflect")),
    }


def prediction_device(cfg: DictConfig) -> str:
    """``predict.device``, with ``auto`` = CUDA when the trainer uses a GPU and one is present."""
    device = str(cfg.predict.device)
    if device == "auto":
        gpu = str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
        return "cuda" if gpu and cuda_available() else "cpu"
    check_device("predict.device", device)
    return device


def selected_tiles(manifest: Manifest, splits: list[str]) -> Manifest:
    """The tiles of ``predict.splits``.

    Raises:
        ConfigError: one line naming the splits looked for, those the manifest has and the
            setting, when no tile is of those splits.
    """
    selected = manifest.select([str(s) for s in splits])
    if len(selected) == 0:
        present = sorted({t.split for t in manifest})
        has = f"has splits {present}; set predict.splits=[{','.join(present)}] or a subset"
        raise ConfigError(
            f"{manifest.path or 'manifest'}: no tiles selected: predict.splits={list(splits)} "
            f"(default region.eval_splits) but the manifest "
            f"{has if present else 'lists no tiles'}"
        )
    return selected


def predict(cfg: DictConfig, force: bool = False) -> Path:
    """Predict q and r maps for the evaluation tiles; returns the predictions manifest.

    Every map records the checkpoint's sha256, the loss settings and the prior; a tile is
    skipped only when its maps record exactly what this run would, otherwise rewritten.
    With ``shard=i/n`` only that shard's tiles are predicted (see :mod:`lcip.io.shards`): its
    manifest goes to ``<predict.out_dir>/shards/<i>_of_<n>/`` and the last shard to finish
    merges them into ``<predict.out_dir>/manifest.csv``.

    Args:
        cfg: composed config (``predict``, ``region``, ``prior``, ``model``, ``loss``).
        force: rewrite every map.

    Returns:
        manifest listing the tiles with their prediction layers (for a shard: its own, until
        the merged one exists).
    """
    force = force or bool(cfg.get("force", False))
    shard = parse_shard(cfg.get("shard"))
    p = cfg.predict
    check_predict_settings(cfg)
    device = prediction_device(cfg)
    manifest = selected_tiles(Manifest.read(prior_manifest_path(cfg)), list(p.splits))
    checkpoint = checkpoint_file(cfg)
    from lcip.inference.predict import predict_manifest
    from lcip.inference.windows import WindowConfig
    from lcip.training.models import load_state_from_checkpoint

    scheme = scheme_of(cfg)
    model = instantiate(cfg, "model", classes=scheme.num_classes)
    load_state_from_checkpoint(model, str(checkpoint))
    out_dir = Path(p.out_dir)
    result = predict_manifest(
        model,
        select_shard(manifest, shard),
        instantiate(  # the layers the network was trained on, without labels or NLCD
            cfg, "data.layers", _convert_="all", prior=prior_layer(cfg.prior.name), label=None
        ),
        scheme,
        out_dir,
        WindowConfig(
            window=int(p.window),  # a multiple of 256 (checked by WindowConfig)
            margin=p.margin,
            batch_size=int(p.batch_size),
            smoothing=float(cfg.loss.smoothing),
            device=device,
            num_workers=int(p.num_workers),
            prefetch_factor=int(p.prefetch_factor),
            edge=str(p.get("edge", "reflect")),
        ),
        params=(params := prediction_params(cfg, checkpoint)),
        force=force,
        zero_is_nodata=bool(params["zero_is_nodata"]),
    )
    if shard is None:
        return result.write(predictions_manifest_path(cfg))
    own = result.write(shard.folder(out_dir) / "manifest.csv")
    return merge_shards(out_dir, shard.count, manifest) or own

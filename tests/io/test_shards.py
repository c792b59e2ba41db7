"""``shard=i/n`` for lcip-prior and lcip-predict: the split, idempotent re-runs, the merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lcip.config import compose_config
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.shards import Shard, merge_reports, parse_shard, select_shard, shard_tile_ids
from lcip.stages.cooccurrence import cooccurrence
from lcip.stages.paths import prior_dir, scheme_of
from lcip.stages.predict import predict
from lcip.stages.prior import prior
from lcip.stages.region import region
from tests.stages.test_train_stage import tiny_overrides, write_prior_region


def test_shards_partition_the_tiles_deterministically() -> None:
    ids = [f"tile{i:02d}" for i in range(11)]
    shards = [shard_tile_ids(ids, Shard(i, 4)) for i in range(4)]
    assert sorted(i for s in shards for i in s) == sorted(ids)  # every tile in exactly one shard
    assert sorted(len(s) for s in shards) == [2, 3, 3, 3]
    assert [shard_tile_ids(ids[::-1], Shard(i, 4)) for i in range(4)] == shards  # order-free
    assert shard_tile_ids(ids, Shard(0, 1)) == sorted(ids)


@pytest.mark.parametrize("value", ["2/2", "a/3", "1", "-1/2", "0/0"])
def test_bad_shard_is_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^shard=.*expected i/n"):
        parse_shard(value)


def test_parse_shard() -> None:
    assert parse_shard(None) is None and parse_shard("null") is None
    assert parse_shard("1/3") == Shard(1, 3) and str(Shard(1, 3)) == "1/3"


def test_merge_reports_sums_counts_and_joins_lists() -> None:
    a = {"recipe": "nlcd", "shard": "0/2", "counts": {"written": 2, "skipped": 0}, "tiles": [1]}
    b = {"recipe": "nlcd", "shard": "1/2", "counts": {"written": 1, "skipped": 3}, "tiles": [2]}
    merged = merge_reports([a, b])
    assert merged["counts"] == {"written": 3, "skipped": 3} and merged["tiles"] == [1, 2]
    assert merged["shards"] == 2 and "shard" not in merged and merged["recipe"] == "nlcd"


def _report(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_prior_shards_resume_and_merge_into_the_unsharded_result(tmp_path: Path) -> None:
    base = ["region=tiny", "prior=nlcd", f"paths.root={tmp_path}"]
    cfg = compose_config(base)
    region(cfg)
    cooccurrence(cfg)
    out = prior_dir(cfg)
    first = prior(compose_config([*base, "shard=0/2"]))
    assert first == Shard(0, 2).folder(out) / "manifest.csv"
    assert not (out / "manifest.csv").exists()  # shard 1 has not run yet
    done = Manifest.read(first)
    assert [t.tile_id for t in done] == sorted(t.tile_id for t in done) == ["r0c0", "r1c0"]
    stamp = {t.tile_id: t.layer("prior_nlcd").stat().st_mtime_ns for t in done}
    merged = prior(compose_config([*base, "shard=1/2"]))
    assert merged == out / "manifest.csv"
    assert [t.tile_id for t in Manifest.read(merged)] == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert _report(out / "report.json")["counts"]["written"] == 4
    # a requeued shard skips its finished tiles and the merge is redone
    prior(compose_config([*base, "shard=0/2"]))
    assert _report(Shard(0, 2).folder(out) / "report.json")["counts"] == {
        "written": 0,
        "skipped": 2,
        "no_valid": 0,
    }
    assert {t.tile_id: t.layer("prior_nlcd").stat().st_mtime_ns for t in done} == stamp
    report = _report(out / "report.json")
    assert report["counts"]["skipped"] == 2 and report["shards"] == 2
    sharded = Manifest.read(merged)
    unsharded = Manifest.read(prior(cfg))  # the same files, all up to date
    assert [(t.tile_id, t.layers) for t in sharded] == [(t.tile_id, t.layers) for t in unsharded]
    with pytest.raises(ConfigError, match=r"^shard=0/2: prior\.recipe=learned"):
        prior(compose_config([*base, "prior=learned", "shard=0/2"]))


def test_prediction_shards_resume_and_merge(tmp_path: Path) -> None:
    write_prior_region(tmp_path)
    over = [*tiny_overrides(tmp_path), "predict.splits=[train,val,test]"]
    cfg = compose_config(over)
    model = instantiate(cfg.model, classes=scheme_of(cfg).num_classes)
    ckpt = tmp_path / "weights.pt"
    torch.save(model.state_dict(), ckpt)
    over.append(f"predict.checkpoint={ckpt}")
    out = Path(compose_config(over).predict.out_dir)
    own = predict(compose_config([*over, "shard=1/2"]))
    assert [t.tile_id for t in Manifest.read(own)] == ["t1", "t3"]
    assert not (out / "manifest.csv").exists()
    q = Manifest.read(own).tile("t1").layer("q_prob")
    stamp = q.stat().st_mtime_ns
    merged = predict(compose_config([*over, "shard=0/2"]))
    assert merged == out / "manifest.csv"
    assert [t.tile_id for t in Manifest.read(merged)] == ["t0", "t1", "t2", "t3"]
    predict(compose_config([*over, "shard=1/2"]))  # requeued: its maps are up to date
    assert q.stat().st_mtime_ns == stamp
    whole = select_shard(Manifest.read(merged), None)
    assert len(whole) == 4 and all("r_class" in t.layers for t in whole)

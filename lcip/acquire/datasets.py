"""The paper's datasets as TorchGeo publishes them: archives, member layout and lcip layers.

Two datasets, each described by its TorchGeo class (URLs, MD5 checksums, archive names,
layers, states / cities and splits are read from the class, so lcip follows TorchGeo):

- ``chesapeake_cvpr``: :class:`torchgeo.datasets.ChesapeakeCVPR`. Two zips: ``base``
  (all layers but the prior, one archive of every state) and ``prior_extension`` (the paper's
  published prior). Members are
  ``<state>_1m_<year>_extended-debuffered-<split>_tiles/<tile>_<layer>.tif`` plus
  ``spatial_index.geojson`` at the root.
- ``enviroatlas``: :class:`torchgeo.datasets.EnviroAtlas`. One zip; members are
  ``enviroatlas_lotp/<city>-<year>_1m-<split>_tiles-debuffered/<tile>_<suffix>.tif`` plus
  ``enviroatlas_lotp/spatial_index.geojson``.

A region (``region.source``) names the dataset, the subset (a state or a city) and the
splits; :meth:`Dataset.select` picks the members of those tiles and layers from an archive's
member names, so one state can be fetched without the rest of the archive.
:meth:`Dataset.torchgeo_files` lists what the TorchGeo class's ``_verify`` checks for (every
split folder and one tile), so that an acquired state or city opens in that class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from lcip.errors import ConfigError


@dataclass(frozen=True)
class Archive:
    """One published archive.

    Args:
        key: the archive's name within its dataset (``base``, ``prior_extension``, ...).
        url: where it is served.
        filename: its file name when downloaded whole.
        md5: MD5 of the whole archive (checked when it is downloaded whole).
    """

    key: str
    url: str
    filename: str
    md5: str | None


@dataclass(frozen=True)
class LayerMember:
    """One archive member holding one layer of one tile.

    Args:
        archive: key of the archive that holds it.
        member: the member's path inside the archive (also its path under the data folder).
        tile_id: the tile.
        split: the tile's split (``train``, ``val``, ``test``, ``val5``).
        layer: the lcip layer name (``naip``, ``nlcd``, ``lc``, ...).
    """

    archive: str
    member: str
    tile_id: str
    split: str
    layer: str


class Dataset:
    """A published dataset: its archives and how member names map to tiles and layers."""

    #: Name used in ``region.source.dataset``.
    name: ClassVar[str] = ""
    #: Regex over member names with groups ``subset``, ``split``, ``tile`` and ``layer``.
    pattern: ClassVar[re.Pattern[str]]
    #: Dataset layer name (as in the member name) -> lcip layer name.
    layers: ClassVar[Mapping[str, str]] = {}
    #: Members every download also fetches (TorchGeo's spatial index) -> their archive.
    extras: ClassVar[Mapping[str, str]] = {}
    #: The archive holding a layer, when not :attr:`default_archive`.
    layer_archives: ClassVar[Mapping[str, str]] = {}
    default_archive: ClassVar[str] = ""

    def torchgeo_files(self) -> tuple[str, ...]:
        """What the TorchGeo class's ``_verify`` checks for, as paths under the data folder.

        Split folders (no suffix) and a few member files (one tile of one split, every layer,
        and the spatial index). A folder holding them all opens in the TorchGeo class without
        an archive being looked for or extracted.
        """
        raise NotImplementedError

    def archive_of(self, layer: str) -> str:
        """The key of the archive that holds an lcip layer."""
        return self.layer_archives.get(layer, self.default_archive)

    def archives(self) -> dict[str, Archive]:
        """The dataset's archives, from its TorchGeo class."""
        raise NotImplementedError

    def subsets(self) -> tuple[str, ...]:
        """The states or cities of the dataset."""
        raise NotImplementedError

    def splits(self, subset: str) -> tuple[str, ...]:
        """The splits TorchGeo knows for one subset."""
        raise NotImplementedError

    def check(self, subset: str, splits: Sequence[str], layers: Sequence[str]) -> None:
        """Check a region's source settings against the dataset, one line per problem.

        Raises:
            ConfigError: for an unknown subset, split or layer.
        """
        if subset not in self.subsets():
            raise ConfigError(
                f"region.source.subset={subset!r}: not in {self.name} (one of {self.subsets()})"
            )
        known = self.splits(subset)
        bad = [s for s in splits if s not in known]
        if bad:
            raise ConfigError(
                f"region.source.splits: {bad} not in {self.name} {subset} (has {list(known)})"
            )
        lcip_layers = set(self.layers.values())
        bad = [layer for layer in layers if layer not in lcip_layers]
        if bad:
            raise ConfigError(
                f"region.source.layers: {bad} unknown for {self.name} "
                f"(one of {sorted(lcip_layers)})"
            )

    def select(
        self,
        archive: str,
        members: Iterable[str],
        subset: str,
        splits: Sequence[str],
        layers: Sequence[str],
    ) -> list[LayerMember]:
        """The members of one archive holding the given layers of a subset's splits.

        Args:
            archive: the archive's key.
            members: the archive's member names.
            subset: state or city.
            splits: splits to keep.
            layers: lcip layers to keep.

        Returns:
            the matching members, sorted by member name.
        """
        out = []
        for name in members:
            m = self.pattern.match(name)
            if m is None or m["subset"] != subset or m["split"] not in splits:
                continue
            layer = self.layers.get(m["layer"])
            if layer is not None and layer in layers:
                out.append(LayerMember(archive, name, m["tile"], m["split"], layer))
        return sorted(out, key=lambda x: x.member)


class ChesapeakeCVPR(Dataset):
    """The Chesapeake Land Cover CVPR 2019 release (:class:`torchgeo.datasets.ChesapeakeCVPR`)."""

    name = "chesapeake_cvpr"
    pattern = re.compile(
        r"^(?P<subset>[a-z]{2})_1m_\d{4}_extended-debuffered-(?P<split>[a-z0-9]+)_tiles/"
        r"(?P<tile>.+?)_(?P<layer>naip-new|naip-old|landsat-leaf-on|landsat-leaf-off|nlcd|lc|"
        r"buildings|prior_from_cooccurrences_101_31_no_osm_no_buildings)\.tif$"
    )
    layers: ClassVar[Mapping[str, str]] = {
        "naip-new": "naip",
        "nlcd": "nlcd",
        "lc": "lc",
        "buildings": "buildings",
        "prior_from_cooccurrences_101_31_no_osm_no_buildings": "paper_prior",
        "naip-old": "naip_old",
        "landsat-leaf-on": "landsat_leaf_on",
        "landsat-leaf-off": "landsat_leaf_off",
    }
    extras: ClassVar[Mapping[str, str]] = {"spatial_index.geojson": "base"}
    layer_archives: ClassVar[Mapping[str, str]] = {"paper_prior": "prior_extension"}
    default_archive = "base"

    def archives(self) -> dict[str, Archive]:
        """``base`` and ``prior_extension``."""
        from torchgeo.datasets import ChesapeakeCVPR as TG

        _check_layers(TG.valid_layers, self.layers)
        return {k: Archive(k, TG.urls[k], TG.filenames[k], TG.md5s[k]) for k in TG.subdatasets}

    def torchgeo_files(self) -> tuple[str, ...]:
        """``ChesapeakeCVPR._files``: 18 split folders and West Virginia's val tile."""
        from torchgeo.datasets import ChesapeakeCVPR as TG

        return tuple(TG._files)

    def subsets(self) -> tuple[str, ...]:
        """The six states."""
        from torchgeo.datasets import ChesapeakeCVPR as TG

        return tuple(TG.states)

    def splits(self, subset: str) -> tuple[str, ...]:
        """``train``, ``val`` and ``test``."""
        from torchgeo.datasets import ChesapeakeCVPR as TG

        return tuple(s.split("-", 1)[1] for s in TG.splits if s.startswith(f"{subset}-"))


class EnviroAtlas(Dataset):
    """The EnviroAtlas cities of the paper (:class:`torchgeo.datasets.EnviroAtlas`)."""

    name = "enviroatlas"
    pattern = re.compile(
        r"^enviroatlas_lotp/(?P<subset>[a-z_]+)-\d{4}_1m-(?P<split>[a-z0-9]+)_tiles-debuffered/"
        r"(?P<tile>\d{7}_[ns][ew])_(?P<layer>a_naip|b_nlcd|c_roads|d_water|d1_waterways|"
        r"d2_waterbodies|e_buildings|h_highres_labels|prior_from_cooccurrences_101_31"
        r"(?:_no_osm_no_buildings)?)\.tif$"
    )
    #: Member suffix -> (lcip layer, TorchGeo layer, checked against ``valid_layers``).
    suffixes: ClassVar[Mapping[str, tuple[str, str]]] = {
        "a_naip": ("naip", "naip"),
        "b_nlcd": ("nlcd", "nlcd"),
        "c_roads": ("roads", "roads"),
        "d_water": ("water", "water"),
        "d1_waterways": ("waterways", "waterways"),
        "d2_waterbodies": ("waterbodies", "waterbodies"),
        "e_buildings": ("buildings", "buildings"),
        "h_highres_labels": ("lc", "lc"),
        "prior_from_cooccurrences_101_31": ("paper_prior", "prior"),
        "prior_from_cooccurrences_101_31_no_osm_no_buildings": (
            "paper_prior_no_osm_no_buildings",
            "prior_no_osm_no_buildings",
        ),
    }
    layers: ClassVar[Mapping[str, str]] = {k: v[0] for k, v in suffixes.items()}
    torchgeo_layers: ClassVar[Mapping[str, str]] = {k: v[1] for k, v in suffixes.items()}
    extras: ClassVar[Mapping[str, str]] = {"enviroatlas_lotp/spatial_index.geojson": "lotp"}
    default_archive = "lotp"

    def archives(self) -> dict[str, Archive]:
        """``lotp``: the one archive of the four cities."""
        from torchgeo.datasets import EnviroAtlas as TG

        missing = set(self.torchgeo_layers.values()) - set(TG.valid_layers)
        if missing:
            raise ConfigError(f"torchgeo.datasets.EnviroAtlas lacks layers {sorted(missing)}")
        return {"lotp": Archive("lotp", TG.url, TG.filename, TG.md5)}

    def torchgeo_files(self) -> tuple[str, ...]:
        """``EnviroAtlas._files`` (under ``enviroatlas_lotp/``): 10 split folders, Austin's tile."""
        from torchgeo.datasets import EnviroAtlas as TG

        return tuple(f"enviroatlas_lotp/{f}" for f in TG._files)

    def subsets(self) -> tuple[str, ...]:
        """The four cities (``pittsburgh_pa``, ``durham_nc``, ``austin_tx``, ``phoenix_az``)."""
        from torchgeo.datasets import EnviroAtlas as TG

        return tuple(c.split("-")[0] for c in TG.cities)

    def splits(self, subset: str) -> tuple[str, ...]:
        """``test`` and ``val5`` for every city; ``train`` and ``val`` for Pittsburgh too."""
        from torchgeo.datasets import EnviroAtlas as TG

        return tuple(s.rsplit("-", 1)[1] for s in TG.splits if s.split("-")[0] == subset)


def _check_layers(valid: Sequence[str], layers: Mapping[str, str]) -> None:
    missing = set(layers) - set(valid)
    if missing:
        raise ConfigError(f"torchgeo.datasets.ChesapeakeCVPR lacks layers {sorted(missing)}")


#: Datasets by ``region.source.dataset``.
DATASETS: dict[str, Dataset] = {d.name: d for d in (ChesapeakeCVPR(), EnviroAtlas())}


def get_dataset(name: str) -> Dataset:
    """A dataset by name, or a one-line error listing the known ones."""
    if name not in DATASETS:
        raise ConfigError(f"region.source.dataset={name!r}: unknown; one of {sorted(DATASETS)}")
    return DATASETS[name]


__all__ = ["DATASETS", "Archive", "ChesapeakeCVPR", "Dataset", "EnviroAtlas", "LayerMember"]

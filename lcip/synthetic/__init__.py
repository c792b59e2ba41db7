"""A seeded generator of synthetic regions: 1 m truth, NAIP-like imagery, NLCD and vectors.

The generated region stands in for a real NAIP/NLCD/OSM region in tests, demos and
benchmarks, with no download needed. It is laid out like the real data lcip consumes:

- ``naip/<tile>.tif``: 4-band uint8 imagery (R, G, B, NIR) at 1 m, rendered from the truth;
- ``lc/<tile>.tif``: 1 m truth in Chesapeake ``lc`` codes (1 water, 2 tree canopy, 3 low
  vegetation, 4 barren, 5 impervious other, 6 impervious road);
- ``nlcd/<tile>.tif``: NLCD codes on the tile grid (the 30 m raster upsampled, nearest);
- ``nlcd_30m.tif``: region-wide NLCD at 30 m, covering the region plus a margin, on a 30 m
  grid that is *not* aligned with the tile edges (30 m blocks are cut by tile edges);
- ``nlcd_30m_clean.tif``: the same before the simulated NLCD errors (for tests and studies;
  not listed in the manifest);
- ``osm.xml``: OSM XML in EPSG:4326 with roads (``highway=*``), the river (``waterway=river``
  line and a ``natural=water`` + ``water=river`` area) and ponds (``natural=water``);
- ``buildings.geojson``: building footprints in EPSG:4326, with ~10 % dropped and the rest
  shifted by ~1-2 m, like real footprint data;
- ``manifest.csv``: one row per tile with the layers ``naip``, ``lc``, ``nlcd``, ``nlcd_30m``,
  ``osm``, ``buildings``;
- ``region.json``: the configuration and summary statistics.

The truth is generated once over the whole region plus margin (so structure is continuous
across tile edges): a town with an urban-to-rural gradient (paved core, street grid, houses
along streets, parking lots, street and yard trees), main roads, a meandering river with sand
bars, riparian trees and a marsh, ponds, forest patches (deciduous, evergreen or mixed per
patch), a patchwork of fields (pasture, crops, grassland, shrub) with hedgerows, construction
sites and bare patches. The imagery gives every object its own colour, adds texture (crowns,
crop rows, gable roofs), cast shadows, haze and sensor noise, so that colour alone does not
identify the class: spatial context is needed.

NLCD codes follow the NLCD definitions, applied to each 30 m block's composition:

1. water >= 75 % -> 11 (open water);
2. impervious (codes 5 + 6) >= 80 / 50 / 20 % -> 24 / 23 / 22 (developed high / medium / low);
3. near the river or a marsh (within 2 blocks of a block holding river or marsh water),
   10 % <= water < 75 % and vegetation >= 20 % -> 90 (woody wetlands) if tree canopy >= low
   vegetation, else 95 (emergent herbaceous wetlands);
4. impervious >= 5 %, or low vegetation dominating in town (urban intensity >= 0.4)
   -> 21 (developed, open space);
5. barren is the largest cover and vegetation < 15 % -> 31 (barren land);
6. tree canopy >= low vegetation -> the majority forest type of the block's trees
   (41 deciduous, 42 evergreen, 43 mixed; street and yard trees count as 41);
7. otherwise the majority type of the block's low vegetation: 81 pasture/hay, 82 cultivated
   crops, 71 grassland/herbaceous or 52 shrub/scrub (chosen per field).

Then ``nlcd_error_rate`` of the blocks get a plausible wrong code (a neighbouring class, see
:data:`NLCD_CONFUSIONS`), as real NLCD has classification errors.

Everything is deterministic given the seed. Example::

    from lcip.synthetic import RegionConfig, generate_region
    manifest_path = generate_region(RegionConfig(seed=1), Path("data/synthetic"))

The package's modules follow the generation:

- :mod:`~lcip.synthetic.config`: settings, tile splits and grids;
- :mod:`~lcip.synthetic.classes`: the ``lc`` codes and colour tables;
- :mod:`~lcip.synthetic.noise`, :mod:`~lcip.synthetic.geometry`: random fields, shapes,
  the painter;
- :mod:`~lcip.synthetic.town`, :mod:`~lcip.synthetic.scene`: the town, the canvas and the
  registry of painted objects;
- the stages :mod:`~lcip.synthetic.roads`, :mod:`~lcip.synthetic.water`,
  :mod:`~lcip.synthetic.land`, :mod:`~lcip.synthetic.buildings`,
  :mod:`~lcip.synthetic.trees`, and the derived layers :mod:`~lcip.synthetic.nlcd` and
  :mod:`~lcip.synthetic.imagery`;
- :mod:`~lcip.synthetic.region`: :func:`synthesize`, running the stages;
- :mod:`~lcip.synthetic.vectors`, :mod:`~lcip.synthetic.write`: the files.
"""

from __future__ import annotations

from lcip.synthetic.classes import LC_CODES, LC_COLORS, LC_NAMES, lc_colormap, nlcd_colormap
from lcip.synthetic.config import RegionConfig, RegionLayout, default_splits, region_layout
from lcip.synthetic.nlcd import NLCD_CONFUSIONS, block_fractions, nlcd_rules
from lcip.synthetic.region import SyntheticRegion, synthesize
from lcip.synthetic.roads import Way
from lcip.synthetic.write import generate_region, write_region

__all__ = [
    "LC_CODES",
    "LC_COLORS",
    "LC_NAMES",
    "NLCD_CONFUSIONS",
    "RegionConfig",
    "RegionLayout",
    "SyntheticRegion",
    "Way",
    "block_fractions",
    "default_splits",
    "generate_region",
    "lc_colormap",
    "nlcd_colormap",
    "nlcd_rules",
    "region_layout",
    "synthesize",
    "write_region",
]

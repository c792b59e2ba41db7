"""Sliding-window inference and streaming prediction of tiles to COGs."""

from lcip.inference.predict import (
    OUTPUT_LAYERS,
    map_tags,
    map_writers,
    maps_up_to_date,
    output_paths,
    predict_manifest,
    predict_tile,
    write_maps,
)
from lcip.inference.windows import (
    EDGES,
    WindowConfig,
    check_window,
    receptive_field,
    reflect_outside,
    sliding_window_log_probs,
    tile_windows,
)

__all__ = [
    "EDGES",
    "OUTPUT_LAYERS",
    "WindowConfig",
    "check_window",
    "map_tags",
    "map_writers",
    "maps_up_to_date",
    "output_paths",
    "predict_manifest",
    "predict_tile",
    "receptive_field",
    "reflect_outside",
    "sliding_window_log_probs",
    "tile_windows",
    "write_maps",
]

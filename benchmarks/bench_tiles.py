"""sentinel2:tiles engine timings: Germany and a 1,000 km² area, minimal cover, against a brute-force baseline.

The baseline builds the footprint of every tile of the candidate UTM zones and intersects each with the area
(what a script that loads the whole tiling grid does), in the same process. Prints seconds, the ratio
ours/baseline, and peak memory.
"""

import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "pluginpath"))

from osgeo import ogr  # noqa: E402

from sentinel2_pipeline.plugin.engine import geometry as geom  # noqa: E402
from sentinel2_pipeline.plugin.engine import grid  # noqa: E402

WORLD_MAP = "/usr/share/qgis/resources/data/world_map.gpkg"


def germany():
    dataset = ogr.Open(WORLD_MAP)
    layer = dataset.GetLayerByName("countries")
    layer.SetAttributeFilter("NAME = 'Germany'")
    feature = layer.GetNextFeature()
    return feature.GetGeometryRef().Clone()


def area_1000_km2():
    # 31.6 km x 31.6 km around Toulouse (43.6°N): 0.2855° of latitude by 0.3943° of longitude.
    lon0, lat0 = 1.25, 43.45
    return ogr.CreateGeometryFromWkt(
        f"POLYGON(({lon0} {lat0},{lon0 + 0.3943} {lat0},{lon0 + 0.3943} {lat0 + 0.2855},"
        f"{lon0} {lat0 + 0.2855},{lon0} {lat0}))")


def brute_force(area):
    """Every tile of the zones the area touches, each footprint intersected with the area."""
    found = []
    for zone in grid._candidate_zones(area):
        for col in range(1, 9):
            for row in range(-91, 95):
                tile = grid._square_tile(zone, col, row)
                if tile is None:
                    continue
                lons, lats = grid.tile_outline(tile)
                if area.Intersects(geom.polygon(zip(lons, lats))):
                    found.append(tile)
    return found


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main():
    grid._square_tile.cache_clear()
    for name, area in (("1,000 km² area", area_1000_km2()), ("Germany", germany())):
        grid._square_tile.cache_clear()
        grid._transformer.cache_clear()
        cold, selection = timed(grid.tiles_for_area, area, minimal=True)
        warm, _ = timed(grid.tiles_for_area, area, minimal=True)
        grid._square_tile.cache_clear()
        baseline, every = timed(brute_force, area)
        print(f"tiles MINIMAL=true, {name}: {cold:.3f} s cold, {warm:.3f} s warm; "
              f"{len(selection.tiles)} tiles of {len(every)} meeting it (optimal={selection.optimal}); "
              f"brute-force scan of the zones {baseline:.3f} s; ratio ours/baseline {cold / baseline:.3f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tiles peak memory (max RSS of this process): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()

"""sentinel2:tiles engine timings: the grid's first and later look-ups, a 1,000 km² area, Germany, Africa and the
whole world, against a brute-force baseline.

The baseline builds the footprint of every ESA tile and intersects each with the area (what a script that loads
the whole tiling grid does), in the same process. Prints seconds, the ratio ours/baseline, and peak memory.
"""

import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "pluginpath"))

from osgeo import ogr  # noqa: E402

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


def africa():
    dataset = ogr.Open(WORLD_MAP)
    layer = dataset.GetLayerByName("countries")
    union = ogr.Geometry(ogr.wkbMultiPolygon)
    for feature in layer:
        lon_min, lon_max, lat_min, lat_max = feature.GetGeometryRef().GetEnvelope()
        if -18 <= lon_min and lon_max <= 52 and -35 <= lat_min and lat_max <= 37.5:
            union = union.Union(feature.GetGeometryRef())
    return union


def world():
    boxes = ",".join(f"(({w} -90,{w + 90} -90,{w + 90} 90,{w} 90,{w} -90))" for w in (-180, -90, 0, 90))
    return ogr.CreateGeometryFromWkt(f"MULTIPOLYGON({boxes})")


def brute_force(area):
    """Every ESA tile whose footprint meets the area (footprints split at 180°, so no shifting needed)."""
    found = []
    for tile in grid.all_tiles():
        if area.Intersects(ogr.CreateGeometryFromWkt(grid.tile_geometry_wkt(tile))):
            found.append(tile)
    return found


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main():
    first, _ = timed(grid.parse_tile_id, "31TCJ")  # loads the table
    later, _ = timed(grid.parse_tile_id, "33XVP")
    print(f"tiles grid look-up: first {first:.3f} s (reads the table of {len(grid.all_tiles())} tiles), "
          f"later {later * 1e6:.1f} µs")
    baselines = {}
    for name, area in (("1,000 km² area", area_1000_km2()), ("Germany", germany())):
        cold, selection = timed(grid.tiles_for_area, area, minimal=True)
        warm, _ = timed(grid.tiles_for_area, area, minimal=True)
        baseline, every = timed(brute_force, area)
        baselines[name] = baseline
        print(f"tiles MINIMAL=true, {name}: {cold:.3f} s first call, {warm:.3f} s again; "
              f"{len(selection.tiles)} tiles of {len(every)} meeting it (optimal={selection.optimal}); "
              f"brute-force scan of ESA's tiles {baseline:.3f} s; ratio ours/baseline {warm / baseline:.3f}")
    for name, area in (("Africa", africa()), ("the world", world())):
        every_time, every = timed(grid.tiles_for_area, area)
        minimal_time, minimal = timed(grid.tiles_for_area, area, minimal=True)
        print(f"tiles {name}: all {len(every.tiles)} tiles in {every_time:.2f} s; minimal cover "
              f"{len(minimal.tiles)} tiles in {minimal_time:.2f} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tiles peak memory (max RSS of this process): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()

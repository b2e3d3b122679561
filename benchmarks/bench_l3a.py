"""sentinel2:l3amosaic's engine (plugin.engine.l3a) on data shaped like the seed's, against two baselines.

Data (generated once, cached under build/bench/l3a/): two horizontally adjacent tiles, 32UNB and 32UPB, each
one real-size 10980 x 10980 int16 reflectance file (COG-like: 512 x 512 tiles, DEFLATE, predictor 2; smooth
fields plus noise, so it compresses like real data rather than like zeros) and a 5490 x 5490 FLG mask. The
replica tree serves them (symbolic links) as BANDS x MONTHS files per tile, in DLR's layout. The area is
10.8 km x 9 km across the tiles' shared edge, near Erfurt (the minimal cover needs both tiles;
further east, zone 33's tiles reach over 12°E and a single 33U tile would cover such an area).

Measured, each method in its own process (time and peak RSS of that process):
- ours, Range: discovery + report + window reads over HTTP (the replica server runs in a child process and
  counts the bytes it sends);
- ours, whole files: the same server ignoring Range (the fallback: whole files into the cache, then reads);
- GDAL user's method: gdalbuildvrt + gdalwarp -cutline -crop_to_cutline -tr 10 10 -tap per month and band,
  on local files (the issue measured 1.9 s, 69 MB) and through /vsicurl/ from the same server as ours;
- the seed's method on local files: rasterio merge of whole tiles, write, rasterio.mask with crop (the issue
  measured 31.7 s, 2.9 GB).
Checks: our mosaics equal the GDAL method's inside the area; bytes over HTTP against the area's share of the
files read (target <= 3x); time against the GDAL method (target <= 1.0x); peak memory (target <= 150 MB).

    python benchmarks/bench_l3a.py [--bands 4] [--months 2] [--no-seed]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conftest  # noqa: E402,F401  (links the repository as the `sentinel2_pipeline` package)
from replicas import dlr  # noqa: E402

from sentinel2_pipeline.plugin.engine import grid  # noqa: E402

WORK = os.path.join(ROOT, "build", "bench", "l3a")
TILES = ("32UNB", "32UPB")
SIZE = 10980
AREA_UTM = (599500.0, 5650000.0, 610300.0, 5659000.0)  # EPSG:32632, on the 10 m grid
BAND_NAMES = ("B2", "B3", "B4", "B8")
MONTHS = ("2021-05", "2021-06", "2021-07", "2021-08")
MB = 1e6


# ---- data -----------------------------------------------------------------------------------------------------


def prepare(bands, months):
    """The served tree (symbolic links to one generated file per tile and kind) and the area file."""
    sources = os.path.join(WORK, "source")
    os.makedirs(sources, exist_ok=True)
    for tile_id in TILES:
        tile = grid.parse_tile_id(tile_id)
        _generate(os.path.join(sources, f"{tile_id}_FRC.tif"), tile, 10.0, SIZE, "int16")
        _generate(os.path.join(sources, f"{tile_id}_FLG_R2.tif"), tile, 20.0, SIZE // 2, "uint8")
    tree = os.path.join(WORK, f"tree-{bands}x{months}")
    if not os.path.isdir(tree):
        for tile_id in TILES:
            for month in MONTHS[:months]:
                name = dlr.product_name(tile_id, month)
                folder = os.path.join(tree, dlr.product_folder(tile_id, month), name)
                os.makedirs(folder, exist_ok=True)
                for band in BAND_NAMES[:bands]:
                    _link(os.path.join(sources, f"{tile_id}_FRC.tif"), folder, f"{name}_FRC_{band}.tif")
                _link(os.path.join(sources, f"{tile_id}_FLG_R2.tif"), folder, f"{name}_FLG_R2.tif")
    return tree, _area_file()


def _link(source, folder, name):
    os.symlink(source, os.path.join(folder, name))


def _generate(path, tile, pixel, size, dtype):
    if os.path.exists(path):
        return
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    print(f"generating {os.path.basename(path)} ({size} x {size} {dtype}, once)", file=sys.stderr, flush=True)
    rng = np.random.default_rng(abs(hash(os.path.basename(path))) % 2**32)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": dtype,
               "crs": f"EPSG:{tile.epsg}", "transform": from_origin(tile.ulx, tile.uly, pixel, pixel),
               "nodata": -10000 if dtype == "int16" else None, "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate", "predictor": 2}
    cols = np.arange(size)
    with rasterio.open(path + ".part", "w", **profile) as out:
        for top in range(0, size, 512):
            rows = np.arange(top, min(top + 512, size))[:, None]
            if dtype == "int16":
                field = 900 + 400 * np.sin(cols / 700.0) * np.cos(rows / 500.0) + 150 * np.sin((cols + rows) / 37.0)
                block = (field + rng.normal(0, 25, (len(rows), size))).astype("int16")
                block[:, :3] = -10000
            else:
                block = np.where(np.sin(cols / 300.0) * np.cos(rows / 200.0) > 0.95, 2, 16).astype("uint8")
                block = np.broadcast_to(block, (len(rows), size))
            out.write(block, 1, window=Window(0, top, size, len(rows)))
    os.replace(path + ".part", path)


def _area_file():
    from osgeo import ogr, osr

    xmin, ymin, xmax, ymax = AREA_UTM
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax), (xmin, ymin)):
        ring.AddPoint_2D(x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    polygon.Segmentize(50.0)  # dense edges: the lon/lat polygon follows the UTM lines within millimetres
    utm, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32632)
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    polygon.Transform(osr.CoordinateTransformation(utm, wgs84))
    path = os.path.join(WORK, "area.geojson")
    with open(path, "w", encoding="utf-8") as stream:
        json.dump({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": json.loads(polygon.ExportToJson())}]}, stream)
    return path


# ---- methods (each runs in a child process: `--child METHOD`) -------------------------------------------------


def _area_wkb(area):
    from osgeo import ogr

    source = ogr.Open(area)  # kept referenced while its geometry is used (OGR would free it under us)
    feature = source.GetLayer(0).GetNextFeature()
    return bytes(feature.GetGeometryRef().ExportToWkb())


def ours(args):
    from sentinel2_pipeline.plugin.engine import http, l3a

    with http.new_session() as session:
        plan = l3a.discover(_area_wkb(args.area), MONTHS[0], MONTHS[args.months - 1],
                            list(BAND_NAMES[:args.bands]), url=args.url, session=session)
        result = l3a.build_mosaics(plan, args.out, session)
    return {"files": len(result.files), "read_mode": result.report["read_mode"]}


def gdal_method(args):
    """gdalbuildvrt + gdalwarp per month and band, on local files or (with --url) through /vsicurl/."""
    from osgeo import gdal

    gdal.UseExceptions()
    if args.url:
        gdal.SetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    base = "/vsicurl/" + args.url if args.url else args.tree + "/"
    for month in MONTHS[:args.months]:
        for band in BAND_NAMES[:args.bands]:
            files = [f"{base}{dlr.product_folder(t, month)}/{dlr.product_name(t, month)}/"
                     f"{dlr.product_name(t, month)}_FRC_{band}.tif" for t in TILES]
            vrt = os.path.join(args.out, f"{month}_{band}.vrt")
            gdal.BuildVRT(vrt, files)
            output = os.path.join(args.out, f"s2_l3a_{month.replace('-', '')}_{band}.tif")
            gdal.Warp(output, vrt, options=gdal.WarpOptions(
                cutlineDSName=args.area, cropToCutline=True, xRes=10, yRes=10, targetAlignedPixels=True,
                dstNodata=-10000, creationOptions=["TILED=YES", "COMPRESS=DEFLATE"]))
    return {}


def seed_method(args):
    import rasterio
    from rasterio.mask import mask
    from rasterio.merge import merge
    from rasterio.warp import transform_geom

    with open(args.area, encoding="utf-8") as stream:
        area = json.load(stream)["features"][0]["geometry"]
    for month in MONTHS[:args.months]:
        for band in BAND_NAMES[:args.bands]:
            files = [rasterio.open(os.path.join(args.tree, dlr.product_folder(t, month), dlr.product_name(t, month),
                                                f"{dlr.product_name(t, month)}_FRC_{band}.tif")) for t in TILES]
            mosaic, transform = merge(files)
            profile = dict(files[0].profile, width=mosaic.shape[2], height=mosaic.shape[1], transform=transform)
            merged = os.path.join(args.out, f"merged_{month}_{band}.tif")
            with rasterio.open(merged, "w", **profile) as out:
                out.write(mosaic)
            del mosaic
            with rasterio.open(merged) as src:
                clipped, clip_transform = mask(src, [transform_geom("EPSG:4326", src.crs, area)], crop=True)
                profile.update(width=clipped.shape[2], height=clipped.shape[1], transform=clip_transform)
            with rasterio.open(os.path.join(args.out, f"s2_l3a_{month.replace('-', '')}_{band}.tif"), "w",
                               **profile) as out:
                out.write(clipped)
            os.remove(merged)
            for f in files:
                f.close()
    return {}


METHODS = {"ours": ours, "gdal": gdal_method, "seed": seed_method}


def child(args):
    started = time.perf_counter()
    extra = METHODS[args.child](args)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss": _peak_rss(), **extra}))


def _peak_rss():
    """This process's peak resident memory in bytes: VmHWM, which starts afresh at exec (ru_maxrss would carry
    the parent's peak over, e.g. the data generation's)."""
    with open("/proc/self/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(method, out, **kwargs):
    os.makedirs(out, exist_ok=True)
    command = [sys.executable, os.path.abspath(__file__), "--child", method, "--out", out]
    for key, value in kwargs.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"{method} failed")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---- server ----------------------------------------------------------------------------------------------------


class Server:
    """The replica CLI in a child process (so it does not share our interpreter lock)."""

    def __init__(self, tree, ranges):
        self.url_file = tempfile.NamedTemporaryFile(delete=False, suffix=".url").name
        os.remove(self.url_file)
        command = [sys.executable, os.path.join(ROOT, "tests", "replicas", "dlr.py"), "--folder", tree,
                   "--no-build", "--url-file", self.url_file] + ([] if ranges else ["--no-ranges"])
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(self.url_file) and open(self.url_file).read().strip():
                break
            time.sleep(0.05)
        with open(self.url_file, encoding="utf-8") as stream:
            self.url = stream.read().strip()

    def sent(self):
        stats_url = self.url.split("/S2_L3A_WASP")[0] + "/_stats"
        with urllib.request.urlopen(stats_url) as response:
            return json.load(response)["bytes"]

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        os.remove(self.url_file)


# ---- checks ------------------------------------------------------------------------------------------------------


def area_share_bytes(bands, months):
    """The area's share of the files the mosaics need: per file, its bytes x (area in the tile / tile area)."""
    from osgeo import ogr

    xmin, ymin, xmax, ymax = AREA_UTM
    area = ogr.CreateGeometryFromWkt(
        f"POLYGON(({xmin} {ymin},{xmax} {ymin},{xmax} {ymax},{xmin} {ymax},{xmin} {ymin}))")
    total = 0.0
    for tile_id in TILES:
        x0, y0, x1, y1 = grid.tile_rectangle(grid.parse_tile_id(tile_id))
        tile = ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))")
        share = area.Intersection(tile).GetArea() / tile.GetArea()
        frc = os.path.getsize(os.path.join(WORK, "source", f"{tile_id}_FRC.tif"))
        flg = os.path.getsize(os.path.join(WORK, "source", f"{tile_id}_FLG_R2.tif"))
        total += share * (frc * bands + flg) * months
    return total


def compare(ours_folder, gdal_folder, bands, months):
    """(identical files, files): our mosaic against the same pixels of the GDAL method's output. The area is a
    rectangle on the pixel grid, so every pixel of ours is inside it; gdalwarp's -tap extent may carry an extra
    ring of nodata pixels (float noise in the cutline's bounds), which is not compared."""
    import numpy as np
    import rasterio
    from rasterio.windows import from_bounds

    same = 0
    for month in MONTHS[:months]:
        for band in BAND_NAMES[:bands]:
            name = f"s2_l3a_{month.replace('-', '')}_{band}.tif"
            with rasterio.open(os.path.join(ours_folder, name)) as a, \
                    rasterio.open(os.path.join(gdal_folder, name)) as b:
                window = from_bounds(*a.bounds, transform=b.transform).round_offsets().round_lengths()
                same += bool(a.res == b.res and np.array_equal(a.read(1), b.read(1, window=window, boundless=True,
                                                                                  fill_value=-10000)))
    return same, bands * months


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=4, choices=range(1, 5))
    parser.add_argument("--months", type=int, default=2, choices=range(1, 5))
    parser.add_argument("--no-seed", action="store_true", help="skip the seed's method (slow, GBs of memory)")
    for name in ("child", "out", "url", "tree", "area"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    tree, area = prepare(args.bands, args.months)
    runs = os.path.join(WORK, "runs")
    shutil.rmtree(runs, ignore_errors=True)
    common = {"bands": args.bands, "months": args.months, "tree": tree, "area": area}
    results = {}
    for label, ranges in (("ours, Range", True), ("ours, whole files", False)):
        server = Server(tree, ranges)
        try:
            folder = os.path.join(runs, "range" if ranges else "whole")
            results[label] = run_child("ours", folder, url=server.url, **common)
            results[label]["bytes"] = server.sent()
        finally:
            server.stop()
    results["GDAL method (local files)"] = run_child("gdal", os.path.join(runs, "gdal"), **common)
    server = Server(tree, True)
    try:
        results["GDAL method (/vsicurl/)"] = run_child("gdal", os.path.join(runs, "gdal-http"), url=server.url,
                                                        **common)
        results["GDAL method (/vsicurl/)"]["bytes"] = server.sent()
    finally:
        server.stop()
    if not args.no_seed:
        results["seed method (local files)"] = run_child("seed", os.path.join(runs, "seed"), **common)
    share = area_share_bytes(args.bands, args.months)
    same, files = compare(os.path.join(runs, "range"), os.path.join(runs, "gdal"), args.bands, args.months)
    report(results, share, same, files, args)


def report(results, share, same, files, args):
    print(f"L3A mosaics: {len(TILES)} tiles x {args.bands} band(s) x {args.months} month(s), area 10.8 km x 9 km "
          f"across the tiles' edge")
    print(f"{'method':28} {'time (s)':>9} {'peak RSS (MB)':>14} {'HTTP bytes (MB)':>16}")
    for label, result in results.items():
        sent = f"{result['bytes'] / MB:16.1f}" if "bytes" in result else f"{'-':>16}"
        print(f"{label:28} {result['seconds']:9.2f} {result['peak_rss'] / MB:14.0f} {sent}")
    print("(time and memory of each method's own process, imports included: rasterio alone is about 60 MB)")
    ranged, gdal = results["ours, Range"], results["GDAL method (local files)"]
    print(f"bytes with Range: {ranged['bytes'] / share:.2f}x the area's share of the files ({share / MB:.2f} MB) "
          f"[target <= 3x]; whole files: {results['ours, whole files']['bytes'] / MB:.0f} MB")
    print(f"time: {ranged['seconds'] / gdal['seconds']:.2f}x the GDAL method [target <= 1.0x]; peak memory "
          f"{ranged['peak_rss'] / MB:.0f} MB [target <= 150 MB]")
    print(f"pixels inside the area identical to the GDAL method's: {same} of {files} files")
    with open(os.path.join(WORK, "results.json"), "w", encoding="utf-8") as stream:
        json.dump({"results": results, "area_share_bytes": share, "identical_files": same, "files": files}, stream,
                  indent=2)


if __name__ == "__main__":
    sys.exit(main())

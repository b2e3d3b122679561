"""sentinel2:mergedem engine against the tools the seeds used, on two sets of SRTM tiles:
- two tiles as CGIAR publishes them (6001×6001, uncompressed strips, neighbours share one row): srtm_38_03 and
  srtm_38_04, what 31TGK needs;
- four 6000×6000 tiled DEFLATE tiles (srtm_37_03, srtm_38_03, srtm_37_04, srtm_38_04: what 31TFK needs).

Each method runs in its own process, three times; the parent keeps the fastest wall time and the child's peak
resident memory (``ru_maxrss``). Methods:
- ``gdal_merge.py`` as the seeds ran it (uncompressed output) and with our creation options (same output);
- ``gdalbuildvrt`` + ``gdal_translate`` on the command line with our creation options;
- ``dem.plan`` + ``dem.build`` (VRT streamed into a tiled DEFLATE/PREDICTOR=2 Int16 GeoTIFF).
Prints a table and ratios against gdal_merge.py, and writes build/bench/dem.json.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "pluginpath"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conftest  # noqa: E402, F401  (links build/pluginpath/sentinel2_pipeline)
import numpy as np  # noqa: E402
from demdata import write_tile  # noqa: E402

from sentinel2_pipeline.plugin.engine import dem  # noqa: E402

PIXELS = 6000
REPEAT = 3  # the fastest of three runs: timings on a shared machine are noisy
CREATION = ["-co", "TILED=YES", "-co", "COMPRESS=DEFLATE", "-co", "PREDICTOR=2", "-co", "BIGTIFF=IF_SAFER",
            "-co", "NUM_THREADS=ALL_CPUS"]
OURS = """
import sys
sys.path.insert(0, {pluginpath!r})
from sentinel2_pipeline.plugin.engine import dem
work = dem.plan("srtm-cgiar", sys.argv[2], tiles=sys.argv[1], input_rasters=sys.argv[3:])
dem.build(work)
"""


def terrain(lons, lats):
    """Smooth hills with some roughness: compresses like a real DEM, unlike noise."""
    hills = 800 + 600 * np.sin(np.radians(lons) * 90) * np.cos(np.radians(lats) * 70)
    rough = 40 * np.sin(lons * 2000.0) * np.sin(lats * 1700.0)
    return hills + rough


CASES = {  # name: (Sentinel-2 tile, pixels per 5° side + overlap, creation options of the inputs)
    "two CGIAR tiles 6001x6001 (uncompressed strips)": ("31TGK", 6001, ()),
    "four 6000x6000 tiles (tiled DEFLATE)": ("31TFK", 6000, ("TILED=YES", "COMPRESS=DEFLATE")),
}


def make_tiles(folder, tile, pixels, options):
    paths = []
    res = 5.0 / PIXELS  # 3 arc-seconds; a 6001st pixel repeats the neighbour's first row or column
    for cell in dem.cells_for_tiles(dem.SRTM, [tile]):
        path = os.path.join(folder, cell.name + ".tif")
        write_tile(path, cell.west, cell.lat0 + 5, pixels, pixels, res, res, heights=terrain, options=options)
        paths.append(path)
    return paths


def measured(command, env=None):
    """(seconds, peak RSS in MB) of one command in a child process (ru_maxrss of that child alone)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], check=True, capture_output=True, text=True,
                         env=env).stdout.split()
    return float(out[0]), int(out[1]) / 1024.0


def methods(folder, tile, tiles):
    pluginpath = os.path.join(ROOT, "build", "pluginpath")
    out = os.path.join(folder, "out_{}.tif")
    vrt = os.path.join(folder, "cli.vrt")
    return {
        "gdal_merge.py (seeds: uncompressed)": ["gdal_merge.py", "-q", "-o", out.format("merge"), "-n", "-32768",
                                               "-a_nodata", "-32768", *tiles],
        "gdal_merge.py (same creation options)": ["gdal_merge.py", "-q", "-o", out.format("merge_co"), "-n",
                                                 "-32768", "-a_nodata", "-32768", *CREATION, *tiles],
        "gdalbuildvrt + gdal_translate": ["sh", "-c", f"gdalbuildvrt -q {vrt} {' '.join(tiles)} && gdal_translate "
                                                     f"-q -ot Int16 {' '.join(CREATION)} {vrt} {out.format('cli')}"],
        "sentinel2 dem engine": [sys.executable, "-c", OURS.format(pluginpath=pluginpath), tile,
                                 out.format("ours"), *tiles],
    }


def bench_case(name, tile, pixels, options):
    folder = tempfile.mkdtemp(prefix="bench_dem_", dir=os.path.join(ROOT, "build"))
    started = time.perf_counter()
    tiles = make_tiles(folder, tile, pixels, options)
    print(f"\n{name}: {len(tiles)} tiles for {tile} written in {time.perf_counter() - started:.1f} s")
    rows = {}
    for method, command in methods(folder, tile, tiles).items():
        runs = [measured(command) for _ in range(REPEAT)]
        rows[method] = {"seconds": round(min(r[0] for r in runs), 2),
                        "peak_rss_mb": round(max(r[1] for r in runs), 1)}
    sizes = {method: os.path.getsize(os.path.join(folder, f"out_{key}.tif")) / 1e6
             for method, key in zip(rows, ("merge", "merge_co", "cli", "ours"))}
    baseline = rows["gdal_merge.py (seeds: uncompressed)"]
    print(f"{'method':40} {'seconds':>8} {'peak MB':>8} {'file MB':>8} {'x faster':>9} {'memory':>7}")
    for method, row in rows.items():
        row["file_mb"] = round(sizes[method], 1)
        row["speedup_vs_gdal_merge"] = round(baseline["seconds"] / row["seconds"], 2)
        row["memory_vs_gdal_merge"] = round(row["peak_rss_mb"] / baseline["peak_rss_mb"], 3)
        print(f"{method:40} {row['seconds']:8.2f} {row['peak_rss_mb']:8.1f} {row['file_mb']:8.1f} "
              f"{row['speedup_vs_gdal_merge']:9.2f} {row['memory_vs_gdal_merge']:7.3f}")
    ours = rows["sentinel2 dem engine"]
    print(f"targets: >= 2x faster than gdal_merge.py (here {ours['speedup_vs_gdal_merge']:.2f}x; "
          f"{rows['gdal_merge.py (same creation options)']['seconds'] / ours['seconds']:.2f}x against it writing "
          f"a compressed file too), <= 0.25 of its memory (here {ours['memory_vs_gdal_merge']:.3f})")
    for entry in os.listdir(folder):
        os.remove(os.path.join(folder, entry))
    os.rmdir(folder)
    return {"tile": tile, "tiles": len(tiles), "pixels": pixels, "methods": rows}


def main():
    results = {name: bench_case(name, *case) for name, case in CASES.items()}
    os.makedirs(os.path.join(ROOT, "build", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "build", "bench", "dem.json"), "w") as handle:
        json.dump({"cpus": os.cpu_count(), "cases": results}, handle, indent=2)


if __name__ == "__main__":
    main()

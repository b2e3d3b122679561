"""sentinel2:composite's engine against a GDAL expert's route, on real-size COGs served with HTTP range requests.

Data (cached under build/cogs): one 10980 x 10980 UInt16 COG per band (tests/replicas/cogs.py: 512 px tiles,
DEFLATE, overviews) and a 5490 x 5490 SCL COG with cloud patches; each scene's files are links with the scene's
name, so every scene is read over HTTP on its own (no cache shared between scenes). The area: 10 km x 10 km of tile
31TCJ (1000 x 1000 pixels at 10 m). Bands B02, B03, B04, B08; one monthly median.

Each method runs in its own process (wall time, peak RSS of that process); the file server runs here and counts
the body bytes each method makes it send:
- ours: ``composite.run`` (windows by a pool of 4 readers, strips, COG outputs, report);
- ours at 60 m: the same at 60 m, where the COGs' overviews are read (fewer bytes);
- GDAL expert: ``gdal.Warp`` of each scene's window of each band and SCL from /vsicurl/ one after the other (the
  route of a script), masks with numpy, ``np.nanmedian`` over the stacked scenes, one GeoTIFF per band.
With 6 scenes and with 12: targets <= 1.0x the expert's time, <= 1.5x its bytes, and peak memory that does not
grow with the number of scenes.

    python benchmarks/bench_composite.py [--scenes 6 12]
"""

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conftest  # noqa: E402,F401  (links the repository as the `sentinel2_pipeline` package)
from replicas import cogs  # noqa: E402

BANDS = ("B02", "B03", "B04", "B08")
AREA = (340000.0, 4840000.0, 350000.0, 4850000.0)  # 31TCJ, EPSG:32631
SERVED = os.path.join(ROOT, "build", "bench", "composite", "served")

OURS = """
import datetime as dt, json, sys, time
sys.path.insert(0, {pluginpath!r})
from sentinel2_pipeline.plugin.engine import composite, storage
scenes = [composite.Scene(name, dt.datetime(2023, 6, 1 + i), "31TCJ", 51, 10.0, assets,
                          {{b: (0.0001, -0.1) for b in assets}}) for i, (name, assets) in enumerate({scenes!r})]
request = composite.Request(area_wkb=bytes.fromhex({area!r}), start=dt.date(2023, 6, 1), end=dt.date(2023, 6, 30),
                            period="month", bands={bands!r}, method="median", resolution={resolution}, parallel=4)
start = time.perf_counter()
composite.run(request, scenes, storage.output_for({out!r}))
print(time.perf_counter() - start, peak())
"""

# Linux keeps ru_maxrss across fork and exec (a child starts at its parent's high-water mark): VmHWM is the
# process's own.
PEAK = """
def peak():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
"""

EXPERT = """
import os, sys, time, warnings
import numpy as np
from osgeo import gdal
gdal.UseExceptions()
for key, value in (("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR"), ("GDAL_HTTP_MERGE_CONSECUTIVE_RANGES", "YES")):
    gdal.SetConfigOption(key, value)
bounds, bands, scenes, out = {bounds!r}, {bands!r}, {scenes!r}, {out!r}
start = time.perf_counter()
def window(url, alg):
    data = gdal.Warp("", "/vsicurl/" + url, format="MEM", outputBounds=bounds, xRes=10, yRes=10,
                     dstSRS="EPSG:32631", resampleAlg=alg)
    return data.GetRasterBand(1).ReadAsArray()
stacks = {{b: [] for b in bands}}
for name, assets in scenes:
    scl = window(assets["SCL"], "near")
    valid = ~np.isin(scl, (0, 1, 3, 8, 9, 10, 11))
    for b in bands:
        dn = window(assets[b], "near").astype(np.float32)  # 10 m bands onto a 10 m grid
        stacks[b].append(np.where(valid & (dn > 0), dn * 0.0001 - 0.1, np.nan))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    for b in bands:
        median = np.nanmedian(np.stack(stacks[b]), axis=0).astype(np.float32)
        target = gdal.GetDriverByName("GTiff").Create(os.path.join(out, b + ".tif"), median.shape[1],
                                                      median.shape[0], 1, gdal.GDT_Float32, ["COMPRESS=DEFLATE"])
        target.GetRasterBand(1).WriteArray(median)
        target = None
print(time.perf_counter() - start, peak())
"""


def scl_cog(folder=cogs.CACHE):
    """A 5490 x 5490 SCL COG (20 m) with vegetation, soil and some cloud patches, made once."""
    import numpy as np
    from osgeo import gdal, osr

    path = os.path.join(folder, "SCL_5490px.tif")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    memory = gdal.GetDriverByName("MEM").Create("", 5490, 5490, 1, gdal.GDT_Byte)
    memory.SetGeoTransform((cogs.ORIGIN[0], 20.0, 0.0, cogs.ORIGIN[1], 0.0, -20.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(cogs.EPSG)
    memory.SetProjection(srs.ExportToWkt())
    rows, cols = np.indices((5490, 5490))
    classes = np.where((rows // 400 + cols // 300) % 5 == 0, 9, np.where((rows + cols) % 7 == 0, 5, 4))
    memory.GetRasterBand(1).WriteArray(classes.astype(np.uint8))
    gdal.GetDriverByName("COG").CreateCopy(path + ".part", memory, options=["COMPRESS=DEFLATE", "BLOCKSIZE=512"])
    os.replace(path + ".part", path)
    return path


def area_wkb():
    return cogs.utm_rectangle(*AREA)


def serve_scenes(count):
    """Links named per scene to the cached COGs; [(scene name, {band: file name})]."""
    shutil.rmtree(SERVED, ignore_errors=True)
    os.makedirs(SERVED)
    sources = {band: cogs.band_cog(band) for band in BANDS}
    sources["SCL"] = scl_cog()
    scenes = []
    for index in range(count):
        name = f"S2A_MSIL2A_202306{index + 1:02d}T105031_N0509_R051_T31TCJ_202306{index + 1:02d}T140000"
        files = {}
        for band, source in sources.items():
            files[band] = f"{name}_{band}.tif"
            os.symlink(source, os.path.join(SERVED, files[band]))
        scenes.append((name, files))
    return scenes


def measured(code):
    out = subprocess.run([sys.executable, "-c", PEAK + code], check=True, capture_output=True, text=True).stdout.split()
    return float(out[-2]), int(out[-1]) / 1024.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, nargs="+", default=[6, 12])
    args = parser.parse_args()
    pluginpath = os.path.join(ROOT, "build", "pluginpath")
    wkb = area_wkb()
    rows = {}
    for count in args.scenes:
        scenes = serve_scenes(count)
        with cogs.RangeFileServer(SERVED) as files:
            named = [(name, {b: files.url(f) for b, f in assets.items()}) for name, assets in scenes]
            from sentinel2_pipeline.plugin.engine import composite

            grid = composite.target_grid(wkb, 10)
            for method, code in (
                    ("GDAL expert", EXPERT.format(bounds=grid.bounds, bands=BANDS, scenes=named,
                                                  out="{out}")),
                    ("ours", OURS.format(pluginpath=pluginpath, scenes=named, area=wkb.hex(), bands=BANDS,
                                         out="{out}", resolution=10)),
                    ("ours at 60 m", OURS.format(pluginpath=pluginpath, scenes=named, area=wkb.hex(), bands=BANDS,
                                                 out="{out}", resolution=60))):
                out = os.path.join(ROOT, "build", "bench", "composite", f"out_{method.replace(' ', '_')}_{count}")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                sent = files.sent
                seconds, rss = measured(code.replace("'{out}'", repr(out)))
                rows[(method, count)] = {"seconds": round(seconds, 2), "peak_rss_mb": round(rss, 1),
                                         "mb_read": round((files.sent - sent) / 1e6, 1)}
    print(f"{'method':14} {'scenes':>6} {'seconds':>8} {'MB read':>8} {'peak MB':>8} {'x time':>7} {'x bytes':>8}")
    summary = {}
    for (method, count), row in rows.items():
        base = rows[("GDAL expert", count)]
        row["time_vs_expert"] = round(row["seconds"] / base["seconds"], 2)
        row["bytes_vs_expert"] = round(row["mb_read"] / max(base["mb_read"], 1e-6), 2)
        summary[f"{method} {count}"] = row
        print(f"{method:14} {count:6d} {row['seconds']:8.2f} {row['mb_read']:8.1f} {row['peak_rss_mb']:8.1f} "
              f"{row['time_vs_expert']:7.2f} {row['bytes_vs_expert']:8.2f}")
    ours = [rows[("ours", c)] for c in args.scenes]
    print(f"targets: <= 1.0x the expert's time (here {', '.join(str(r['time_vs_expert']) for r in ours)}), "
          f"<= 1.5x its bytes (here {', '.join(str(r['bytes_vs_expert']) for r in ours)}), memory independent of "
          f"the scenes (here {', '.join(str(r['peak_rss_mb']) for r in ours)} MB for {args.scenes} scenes)")
    os.makedirs(os.path.join(ROOT, "build", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "build", "bench", "composite.json"), "w") as handle:
        json.dump({"cpus": os.cpu_count(), "date": dt.date.today().isoformat(), "methods": summary}, handle,
                  indent=2)


if __name__ == "__main__":
    main()

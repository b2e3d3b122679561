"""sentinel2:biophysical's engine on a real-size product, against a plain numpy implementation of the same networks.

Data (generated once, cached under build/bench/biophysical/): a Sen2Cor L2A product of tile T23LLF at 20 m,
5490 x 5490 pixels, with the real metadata of tests/l2adata.py (baseline 05.09 offsets, real angle grids): the
eight 20 m bands as uint16 GeoTIFFs (a smooth soil-to-vegetation field, so the networks see varied inputs) and an
SCL with some clouds and water.

Each method runs in its own process, with all five variables (LAI, FAPAR, FCOVER, CCC, CWC); the parent keeps the
wall time and the child's peak resident memory:
- ours: ``biophysical.process_product`` (strips, angles per pixel, masks, domain check, COG outputs and the quality
  band);
- plain numpy: the bands read whole with GDAL, the same angle arrays (``angles.AngleGrids.at`` over the whole
  grid), each network written out as the ATBD states it (normalise every input, five tanh neurons, denormalise)
  on whole float64 arrays, masked by SCL, each variable written as a float32 GeoTIFF.
Targets: ours <= 1.2x the plain implementation's time, and <= 500 MB peak memory.

    python benchmarks/bench_biophysical.py [--size 5490]
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conftest  # noqa: E402,F401  (links the repository as the `sentinel2_pipeline` package)
import l2adata  # noqa: E402

FOLDER = os.path.join(ROOT, "build", "bench", "biophysical")
VARIABLES = ["LAI", "FAPAR", "FCOVER", "CCC", "CWC"]
BANDS = ("B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12")

OURS = """
import sys, resource, time
sys.path.insert(0, {pluginpath!r})
from sentinel2_pipeline.plugin.engine import biophysical, storage
start = time.perf_counter()
biophysical.process_product({product!r}, storage.output_for({out!r}), {variables!r}, 20, threads={threads})
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

PLAIN = """
import sys, resource, time, os
sys.path.insert(0, {pluginpath!r})
import numpy as np
from osgeo import gdal
from sentinel2_pipeline.plugin.engine import angles
start = time.perf_counter()
folder = {granule!r}
files = sorted(os.listdir(folder))
def band(name):
    path = os.path.join(folder, next(f for f in files if f"_{{name}}_20m" in f))
    return gdal.Open(path).ReadAsArray().astype(np.float64)
reference = gdal.Open(os.path.join(folder, next(f for f in files if "_B05_20m" in f)))
x0, res, _, y0, _, _ = reference.GetGeoTransform()
width, height = reference.RasterXSize, reference.RasterYSize
inputs = [(band(b) - 1000.0) / 10000.0 for b in {bands!r}]
grids = angles.read({mtd_tl!r})
xs = x0 + (np.arange(width) + 0.5) * res
ys = y0 - (np.arange(height) + 0.5) * res
sz, sa, vz, va = (a.astype(np.float64) for a in grids.at(xs, ys))
inputs += [np.cos(np.radians(vz)), np.cos(np.radians(sz)), np.cos(np.radians(sa - va))]
scl = band("SCL")
masked = np.isin(scl, (0, 1, 3, 6, 8, 9, 10, 11))
root = {networks!r}
for variable in {names!r}:
    def table(part):
        return np.loadtxt(os.path.join(root, variable, f"{{variable}}_{{part}}"), delimiter=",", ndmin=2)
    norm, w1 = table("Normalisation"), table("Weights_Layer1_Neurons")
    b1, w2 = table("Weights_Layer1_Bias").ravel(), table("Weights_Layer2_Neurons").ravel()
    b2, (low, high) = table("Weights_Layer2_Bias").item(), table("Denormalisation").ravel()
    x = [2 * (value - lo) / (hi - lo) - 1 for value, (lo, hi) in zip(inputs, norm)]
    out = np.full((height, width), b2)
    for neuron in range(len(b1)):
        hidden = np.full((height, width), b1[neuron])
        for j, value in enumerate(x):
            hidden += w1[neuron, j] * value
        out += w2[neuron] * np.tanh(hidden)
    out = 0.5 * (out + 1) * (high - low) + low
    out[masked] = np.nan
    target = gdal.GetDriverByName("GTiff").Create(os.path.join({out!r}, variable + ".tif"), width, height, 1,
                                                  gdal.GDT_Float32)
    target.SetGeoTransform(reference.GetGeoTransform())
    target.GetRasterBand(1).WriteArray(out.astype(np.float32))
    target = None
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_product(size):
    """The real-size product (cached): bands written in strips, so making it needs little memory."""
    import numpy as np
    from osgeo import gdal, osr

    name = l2adata.sen2cor_name("05.09")
    product = os.path.join(FOLDER, f"{size}", name)
    granule = os.path.join(product, "GRANULE", "L2A_T23LLF_A032566_20230601T094549")
    folder = os.path.join(granule, "IMG_DATA", "R20m")
    done = os.path.join(FOLDER, f"{size}", "complete")
    if os.path.exists(done):
        return product, granule, folder
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(product, "MTD_MSIL2A.xml"), "w", encoding="utf-8") as handle:
        handle.write(l2adata.sen2cor_metadata("05.09"))
    with open(l2adata.MTD_TL, encoding="utf-8") as source, open(os.path.join(granule, "MTD_TL.xml"), "w") as target:
        target.write(source.read())
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(l2adata.EPSG)
    datasets = {}
    for band in BANDS + ("SCL",):
        kind = gdal.GDT_Byte if band == "SCL" else gdal.GDT_UInt16
        path = os.path.join(folder, f"T23LLF_20230601T094549_{band}_20m.tif")
        dataset = gdal.GetDriverByName("GTiff").Create(path, size, size, 1, kind, ["TILED=YES"])
        dataset.SetGeoTransform((l2adata.TILE_ULX, 20.0, 0.0, l2adata.TILE_ULY, 0.0, -20.0))
        dataset.SetProjection(srs.ExportToWkt())
        datasets[band] = dataset
    cols = np.arange(size)
    for row in range(0, size, 512):
        rows = np.arange(row, min(row + 512, size))[:, None]
        mix = np.clip(0.5 + 0.45 * np.sin(cols / 173.0) * np.cos(rows / 131.0), 0, 1)
        for band in BANDS:
            values = l2adata.SOIL[band] * (1 - mix) + l2adata.LEAF[band] * mix
            datasets[band].GetRasterBand(1).WriteArray(np.round(values * 10000 + 1000).astype(np.uint16), 0, row)
        scl = np.full(mix.shape, 4, np.uint8)
        scl[(np.sin(cols / 400.0) * np.sin(rows / 300.0)) > 0.8] = 9
        scl[mix < 0.08] = 6
        datasets["SCL"].GetRasterBand(1).WriteArray(scl, 0, row)
    datasets.clear()
    open(done, "w").close()
    return product, granule, folder


def measured(code):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    inner, rss = out.stdout.split()[-2:]
    return time.perf_counter() - start, float(inner), int(rss) / 1024.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=5490)
    args = parser.parse_args()
    started = time.perf_counter()
    product, granule, folder = make_product(args.size)
    print(f"product {args.size} x {args.size} at 20 m ready in {time.perf_counter() - started:.1f} s")
    pluginpath = os.path.join(ROOT, "build", "pluginpath")
    rows = {}
    for method, code_of in (
            ("ours (strips, COG outputs)", lambda out: OURS.format(pluginpath=pluginpath, product=product, out=out,
                                                                  variables=VARIABLES, threads=os.cpu_count() or 1)),
            ("ours, one thread", lambda out: OURS.format(pluginpath=pluginpath, product=product, out=out,
                                                         variables=VARIABLES, threads=1)),
            ("plain numpy (whole arrays)", lambda out: PLAIN.format(
                pluginpath=pluginpath, granule=folder, bands=BANDS, mtd_tl=os.path.join(granule, "MTD_TL.xml"),
                networks=os.path.join(l2adata.NETWORKS, "S2B"), names=["LAI", "FAPAR", "FCOVER", "LAI_Cab", "LAI_Cw"],
                out=out))):
        out = os.path.join(FOLDER, "out", method.split()[0] + method.split()[-1].strip("()"))
        os.makedirs(out, exist_ok=True)
        wall, inner, rss = measured(code_of(out))
        rows[method] = {"seconds": round(wall, 2), "compute_seconds": round(inner, 2), "peak_rss_mb": round(rss, 1)}
        for entry in os.listdir(out):
            os.remove(os.path.join(out, entry))
    base = rows["plain numpy (whole arrays)"]
    print(f"{'method':32} {'seconds':>8} {'peak MB':>8} {'x time':>7}")
    for method, row in rows.items():
        row["time_vs_plain"] = round(row["seconds"] / base["seconds"], 2)
        print(f"{method:32} {row['seconds']:8.2f} {row['peak_rss_mb']:8.1f} {row['time_vs_plain']:7.2f}")
    ours = rows["ours (strips, COG outputs)"]
    print(f"targets: <= 1.2x the plain implementation's time (here {ours['time_vs_plain']:.2f}x), <= 500 MB "
          f"(here {ours['peak_rss_mb']:.0f} MB; plain numpy {base['peak_rss_mb']:.0f} MB)")
    with open(os.path.join(ROOT, "build", "bench", "biophysical.json"), "w") as handle:
        json.dump({"size": args.size, "cpus": os.cpu_count(), "methods": rows}, handle, indent=2)


if __name__ == "__main__":
    main()

"""``sentinel2:download`` with ``SOURCE=stac`` and an AOI: bytes read from the band COGs against their whole size.

A 10 km x 10 km area inside one 10980 px tile (10 m bands, 512 px COG tiles, DEFLATE, overviews: the shape of
Earth Search's COGs, made with GDAL and cached in build/cogs). Three bands are read through the production code
(``plugin.engine.download`` -> ``sources.stac``: GDAL /vsicurl/ range requests), then downloaded whole for
comparison. The file server runs in a child process (so it does not share our interpreter lock) and counts the
body bytes it sends. Printed: bytes of the AOI reads as a share of the whole assets (target <= 5 %), times, and
the peak RSS of the client process.

    python benchmarks/bench_download_stac.py
"""

import datetime as dt
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
from replicas import cogs  # noqa: E402

MB = 1_000_000
BANDS = {"B02": "blue", "B04": "red", "B08": "nir"}
AOI_SIDE = 10_000  # metres
# The tile centre: 300000 + 54900 m east, 4900020 - 54900 m north (UTM 31N).
AOI_ORIGIN = (355_000 - AOI_SIDE // 2, 4_845_120 - AOI_SIDE // 2)


def serve(folder):
    """Child process: serve ``folder`` and print the port."""
    server = cogs.RangeFileServer(folder).start()
    print(server.httpd.server_address[1], flush=True)
    server.thread.join()


def stats(base):
    with urllib.request.urlopen(base + "/__stats") as response:
        return json.load(response)["sent"]


def aoi_wkb():
    from osgeo import ogr, osr

    utm, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(cogs.EPSG)
    wgs84.ImportFromEPSG(4326)
    for srs in (utm, wgs84):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x, y = AOI_ORIGIN
    ring = f"{x} {y},{x + AOI_SIDE} {y},{x + AOI_SIDE} {y + AOI_SIDE},{x} {y + AOI_SIDE},{x} {y}"
    geometry = ogr.CreateGeometryFromWkt(f"POLYGON(({ring}))")
    geometry.AssignSpatialReference(utm)
    geometry.TransformTo(wgs84)
    return bytes(geometry.ExportToIsoWkb())


def footprint(base):
    from sentinel2_pipeline.plugin.engine.footprints import Footprint

    name = "S2B_MSIL2A_20230601T103629_N0509_R008_T31TCJ_20230601T134110.SAFE"
    assets = {key: f"{base}/{band}.tif" for band, key in BANDS.items()}
    return Footprint(id=name, name=name, provider="earth-search", geometry=None,
                     sensing_start=dt.datetime(2023, 6, 1, tzinfo=dt.timezone.utc), extra={"assets": assets})


def timed_download(base, aoi, out):
    from sentinel2_pipeline.plugin.engine import download, http
    from sentinel2_pipeline.plugin.engine.sources import Options

    before, started = stats(base), time.perf_counter()
    with http.new_session() as session:
        summary = download.download([footprint(base)], "stac", out, Options(bands=tuple(BANDS), aoi_wkb=aoi),
                                    session)
    elapsed = time.perf_counter() - started
    assert len(summary.downloaded) == 1, summary.lines()
    return stats(base) - before, elapsed


def main():
    source = cogs.band_cog("B04")
    files = tempfile.mkdtemp(prefix="bench-stac-src-")
    out = tempfile.mkdtemp(prefix="bench-stac-out-")
    for band in BANDS:
        os.symlink(source, os.path.join(files, f"{band}.tif"))
    server = subprocess.Popen([sys.executable, __file__, "--serve", files], stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        whole_size = len(BANDS) * os.path.getsize(source)
        clipped, clip_s = timed_download(base, aoi_wkb(), os.path.join(out, "aoi"))
        whole, whole_s = timed_download(base, None, os.path.join(out, "whole"))
        print(f"stac, {len(BANDS)} bands of a 10980 px tile, AOI {AOI_SIDE // 1000} km x {AOI_SIDE // 1000} km: "
              f"{clipped / MB:.2f} MB read of {whole_size / MB:.0f} MB = {clipped / whole_size:.2%} of the whole "
              f"assets (target <= 5 %), {clip_s:.2f} s")
        print(f"stac, the same bands without AOI: {whole / MB:.0f} MB in {whole_s:.2f} s")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the benchmark process (client side): {rss:.0f} MB")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(files)
        shutil.rmtree(out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main()

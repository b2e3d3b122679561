"""sentinel2:search with CATALOG=cdse: 5,000 results over 5 pages from the local OData replica.

Times the engine's search (requests through the plugin's session, JSON decoding, parsing into footprints,
client-side filtering with the exact area) plus writing the footprints to a GeoPackage, against fetching the
same 5 pages with plain ``requests.get`` (transfer only), both from this process against the same server (the
replica runs in its own process, as a real service would).
The algorithm writes through QGIS; here OGR's GPKG driver writes the same fields, a fair stand-in.
Prints the best of 3 runs of each, the ratio (target: at most 2x) and the peak RSS of the process (which also
holds the generated product list for the final count check).
"""

import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conftest  # noqa: E402,F401  (links the repository as the `sentinel2_pipeline` package)
import requests  # noqa: E402
from osgeo import ogr, osr  # noqa: E402
from replicas import odata  # noqa: E402

from sentinel2_pipeline.plugin.engine import grid, http  # noqa: E402
from sentinel2_pipeline.plugin.engine.catalogs import cdse  # noqa: E402
from sentinel2_pipeline.plugin.engine.footprints import FIELDS  # noqa: E402
from sentinel2_pipeline.plugin.engine.query import Query  # noqa: E402

AREA = "POLYGON((0 43,4 43,4 47,0 47,0 43))"  # south-west France, 30 tiles
START = dt.date(2022, 1, 1)
DAYS = 200
TILE_COUNT = 25  # x 200 days = 5,000 products
RUNS = 3
OGR_TYPES = {"relative_orbit": ogr.OFTInteger, "sensing_start": ogr.OFTDateTime, "cloud_cover": ogr.OFTReal,
             "size_bytes": ogr.OFTInteger64, "online": ogr.OFTInteger}


def replica():
    area = ogr.CreateGeometryFromWkt(AREA)
    tiles = [t.tile_id for t in grid.tiles_for_area(area).tiles][:TILE_COUNT]
    products = odata.generate_products(tiles, START, START + dt.timedelta(days=DAYS - 1), every_days=1)
    assert len(products) == TILE_COUNT * DAYS
    return products, area


def write_gpkg(footprints, path):
    """The footprints layer as the algorithm writes it (same fields), through a temporary name."""
    partial = path + ".part.gpkg"
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(partial)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    layer = dataset.CreateLayer("footprints", srs, ogr.wkbMultiPolygon)
    for name in FIELDS:
        field = ogr.FieldDefn(name, OGR_TYPES.get(name, ogr.OFTString))
        if name == "online":
            field.SetSubType(ogr.OFSTBoolean)
        layer.CreateField(field)
    layer.StartTransaction()
    definition = layer.GetLayerDefn()
    for footprint in footprints:
        feature = ogr.Feature(definition)
        # By index: GDAL's Python SetField(name, ...) looks the name up field by field, in Python.
        for index, value in enumerate(footprint.attributes()):
            if value is None:
                continue
            if isinstance(value, dt.datetime):
                feature.SetField(index, value.year, value.month, value.day, value.hour, value.minute,
                                 value.second + value.microsecond / 1e6, 100)
            else:
                feature.SetField(index, int(value) if isinstance(value, bool) else value)
        geometry = ogr.CreateGeometryFromJson(json.dumps(footprint.geometry))
        feature.SetGeometry(ogr.ForceToMultiPolygon(geometry))
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    layer = dataset = None  # closes the file
    os.replace(partial, path)


def engine_run(url, query, path):
    """Returns (products written, seconds spent writing)."""
    session = http.new_session()
    try:
        footprints = cdse.search(query, url, None, session, lambda *a: None, lambda: False, lambda m: None)
    finally:
        session.close()
    start = time.perf_counter()
    write_gpkg(footprints, path)
    return len(footprints), time.perf_counter() - start


def plain_run(url, query):
    """The same 5 pages with plain requests.get (the URLs built with $skip): bytes only, nothing decoded."""
    params = cdse.request_parameters(cdse.build_filter(query), cdse.PAGE_SIZE)
    total = 0
    for page in range(5):
        response = requests.get(url + "/Products", params=params + [("$skip", str(page * cdse.PAGE_SIZE))],
                                timeout=60)
        response.raise_for_status()
        total += len(response.content)
    return total


def plain_json_run(url, query):
    """What a plain script does to page through: requests.get + .json(), following @odata.nextLink."""
    params = cdse.request_parameters(cdse.build_filter(query), cdse.PAGE_SIZE)
    next_url, products = url + "/Products", 0
    while next_url:
        response = requests.get(next_url, params=params, timeout=60)
        response.raise_for_status()
        page = response.json()
        products += len(page["value"])
        next_url, params = page.get("@odata.nextLink"), None
    return products


def best_of(function, *args):
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def start_replica(tiles):
    """The replica in its own process (scripts/replica.py), as a real service would be: its JSON encoding
    does not compete with the client for this process's interpreter lock."""
    import subprocess

    end = START + dt.timedelta(days=DAYS - 1)
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "replica.py"), "--tiles", ",".join(tiles), "--start",
         START.isoformat(), "--end", end.isoformat(), "--every-days", "1", "--levels", "L1C"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return process, process.stdout.readline().strip()


def main():
    products, area = replica()
    tiles = sorted({p["Name"].split("_")[5][1:] for p in products})
    process, url = start_replica(tiles)
    query = Query(dt.datetime(2022, 1, 1), dt.datetime(2022, 12, 31, 23, 59, 59), aoi_wkb=area.ExportToWkb())
    try:
        plain_run(url, query)  # warm-up: the replica filters once per distinct $filter, then serves from memory
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "footprints.gpkg")
            engine_time, (found, write_time) = best_of(engine_run, url, query, path)
            size = os.path.getsize(path)
            written = ogr.Open(path)  # kept in a name: a layer outliving its dataset crashes GDAL < 3.8
            features = written.GetLayer(0).GetFeatureCount()
            written = None
        plain_time, transferred = best_of(plain_run, url, query)
        json_time, decoded = best_of(plain_json_run, url, query)
    finally:
        process.terminate()
        process.wait()
    assert found == features == decoded == len(products), (found, features, decoded)
    report(found, transferred, engine_time, write_time, size, plain_time, json_time)


def report(found, transferred, engine_time, write_time, size, plain_time, json_time):
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio, json_ratio = engine_time / plain_time, engine_time / json_time
    print(f"cdse search: {found} products over 5 pages of {cdse.PAGE_SIZE} ({transferred / 1e6:.1f} MB of JSON) "
          f"from the local OData replica (its own process), best of {RUNS}")
    print(f"  engine search + GeoPackage:                    {engine_time:.3f} s "
          f"(of which writing {write_time:.3f} s, {size / 1e6:.1f} MB; OGR's GPKG driver stands in for the "
          f"algorithm's QGIS writer, same fields)")
    print(f"  plain requests.get of the 5 pages, bytes only: {plain_time:.3f} s")
    print(f"  plain requests.get + .json() via nextLink:     {json_time:.3f} s")
    print(f"  ratio vs bytes only: {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'NOT met'}); "
          f"vs requests + .json(): {json_ratio:.2f}x")
    print(f"  peak RSS: {peak_mb:.0f} MB (the client process)")


if __name__ == "__main__":
    main()

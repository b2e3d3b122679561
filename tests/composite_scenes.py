"""Overlapping Level-2A scenes for sentinel2:composite, served like Earth Search: a STAC API replica (replicas/stac.py
serving items with the keys of Earth Search's L2A items) and COGs behind a range-serving file server. The tests
and `make demo` use them.

The area: 1.2 km x 0.9 km in the overlap of tiles 31TCJ and 31TDJ (UTM 31N, Toulouse). Every scene's COGs cover
2.4 km x 2.4 km around it on the tiles' 10 m grid (B02, B03, B04, B08 at 10 m, SCL at 20 m), as a window of the
real tiles would. :data:`SCENES`: dates over June and early July 2023, two tiles and two orbits, one scene of
processing baseline 03.01 (no offset: DN = reflectance x 10000) among baseline 05.09 ones (DN = reflectance x
10000 + 1000), clouds, a shadow, cirrus and snow placed on purpose (SCL classes of the L2A specification).
:func:`reflectance` and :func:`scl` are the truth the tests compute their expectations from.
"""

import datetime as dt
import os

import numpy as np

EPSG = 32631
X0, Y0 = 399600.0, 4851600.0  # the scenes' upper-left corner: multiples of 60 m, on every Sentinel-2 grid
SIZE = 240  # 10 m pixels a side
AREA = (400200.0, 4850000.0, 401400.0, 4850900.0)  # xmin, ymin, xmax, ymax in EPSG:32631
BANDS = ("B02", "B03", "B04", "B08")
KEYS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "SCL": "scl"}
BASE = {"B02": 0.04, "B03": 0.07, "B04": 0.06, "B08": 0.30}
# date, tile, relative orbit, baseline, {patch: SCL class}; patches are (row0, row1, col0, col1) at 20 m
SCENES = [
    (dt.datetime(2023, 6, 3, 10, 56), "31TCJ", 51, "05.09", {(40, 70, 40, 80): 9}),
    (dt.datetime(2023, 6, 5, 10, 46), "31TDJ", 8, "05.09", {(50, 60, 50, 60): 3}),
    (dt.datetime(2023, 6, 8, 10, 56), "31TDJ", 51, "05.09", {}),
    (dt.datetime(2023, 6, 13, 10, 56), "31TCJ", 51, "03.01", {(60, 90, 30, 60): 8}),
    (dt.datetime(2023, 6, 18, 10, 46), "31TCJ", 8, "05.09", {(0, 120, 0, 120): 10}),
    (dt.datetime(2023, 6, 25, 10, 46), "31TDJ", 8, "05.09", {(45, 75, 45, 75): 11}),
    (dt.datetime(2023, 7, 3, 10, 56), "31TDJ", 51, "05.09", {(40, 80, 40, 80): 9}),
    (dt.datetime(2023, 7, 10, 10, 46), "31TCJ", 8, "05.09", {}),
]


def name(index):
    when, tile, orbit, baseline, _ = SCENES[index]
    return (f"S2{'AB'[index % 2]}_MSIL2A_{when:%Y%m%dT%H%M%S}_N{baseline.replace('.', '')}_R{orbit:03d}_T{tile}_"
            f"{when:%Y%m%d}T140000")


def reflectance(index, band):
    """Scene ``index``'s reflectance of ``band`` on its 10 m grid (SIZE x SIZE); clouds are bright."""
    rows, cols = np.indices((SIZE, SIZE))
    values = BASE[band] + 0.004 * index + 0.0007 * ((rows * 3 + cols * 5 + index * 11) % 13)
    classes = np.repeat(np.repeat(scl(index), 2, axis=0), 2, axis=1)
    values = np.where(np.isin(classes, (8, 9, 10, 11)), 0.55 + 0.01 * index, values)
    return np.where(np.isin(classes, (3,)), values * 0.3, values)


def scl(index):
    classes = np.full((SIZE // 2, SIZE // 2), 4, np.uint8)
    classes[:, :6] = 5  # bare soil at the west edge: still valid
    for (r0, r1, c0, c1), value in SCENES[index][4].items():
        classes[r0:r1, c0:c1] = value
    return classes


def dn(index, band):
    offset = 1000 if SCENES[index][3] >= "04.00" else 0
    return np.round(reflectance(index, band) * 10000 + offset).astype(np.uint16)


def write_cogs(folder):
    """The COGs of every scene in ``folder`` (``<name>_<band>.tif``), once."""
    from osgeo import gdal, osr

    os.makedirs(folder, exist_ok=True)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    for index in range(len(SCENES)):
        for band in BANDS + ("SCL",):
            path = os.path.join(folder, f"{name(index)}_{band}.tif")
            if os.path.exists(path):
                continue
            array, pixel = (scl(index), 20.0) if band == "SCL" else (dn(index, band), 10.0)
            kind = gdal.GDT_Byte if band == "SCL" else gdal.GDT_UInt16
            memory = gdal.GetDriverByName("MEM").Create("", array.shape[1], array.shape[0], 1, kind)
            memory.SetGeoTransform((X0, pixel, 0.0, Y0, 0.0, -pixel))
            memory.SetProjection(srs.ExportToWkt())
            memory.GetRasterBand(1).WriteArray(array)
            memory.GetRasterBand(1).SetNoDataValue(0)
            gdal.GetDriverByName("COG").CreateCopy(path + ".part", memory, options=[
                "COMPRESS=DEFLATE", "BLOCKSIZE=64", "OVERVIEWS=AUTO" if band != "SCL" else "OVERVIEWS=NONE"])
            os.replace(path + ".part", path)
    return folder


def items(url_of):
    """Earth Search ``sentinel-2-c1-l2a`` items for the scenes (the keys of Earth Search's real L2A item:
    ``shared/fixtures/earthsearch_v1_sentinel-2-l2a_item_*``, written here so that the demo needs no fixture);
    ``url_of(file name)`` gives each asset's URL."""
    made = []
    for index, (when, tile, orbit, baseline, _) in enumerate(SCENES):
        identifier = f"S2{'AB'[index % 2]}_T{tile}_{when:%Y%m%dT%H%M%S}_L2A"
        offset = -0.1 if baseline >= "04.00" else 0.0
        lon0, lat0, lon1, lat1 = 0.9, 43.2, 2.4, 44.3  # around both tiles
        made.append({
            "type": "Feature", "stac_version": "1.0.0", "id": identifier, "collection": "sentinel-2-c1-l2a",
            "bbox": [lon0, lat0, lon1, lat1],
            "geometry": {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1],
                                                             [lon0, lat0]]]},
            "properties": {
                "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), "platform": f"sentinel-2{'ab'[index % 2]}",
                "constellation": "sentinel-2", "instruments": ["msi"], "eo:cloud_cover": 10.0 + index,
                "proj:epsg": EPSG, "mgrs:utm_zone": 31, "mgrs:latitude_band": "T", "mgrs:grid_square": tile[3:],
                "grid:code": f"MGRS-{tile}", "sat:relative_orbit": orbit, "s2:processing_baseline": baseline,
                "s2:product_type": "S2MSI2A", "s2:product_uri": name(index) + ".SAFE",
                "earthsearch:boa_offset_applied": baseline >= "04.00"},
            "links": [{"rel": "self", "href": url_of(f"items/{identifier}.json")}],
            "assets": {KEYS[band]: {"href": url_of(f"{name(index)}_{band}.tif"),
                                    "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                                    "roles": ["data"],
                                    "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": offset}]
                                    if band != "SCL" else [{"nodata": 0}]}
                       for band in BANDS + ("SCL",)},
        })
    return made


def area_wkb():
    from replicas import cogs

    return cogs.utm_rectangle(*AREA, epsg=EPSG)

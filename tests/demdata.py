"""Synthetic DEM tiles on the real CGIAR SRTM and Copernicus DEM grids, for tests and benchmarks.

Tiles follow the published layout: pixel centres on whole multiples of the spacing, so the raster starts half a
pixel west and north of the cell's corner. SRTM-like tiles are Int16 with nodata -32768 written pixel-is-area;
Copernicus-like tiles are Float32 without nodata written pixel-is-point (GDAL reads both as the same
area-based geotransform, as it does for the real files). Tiles are coarser than the real ones (tests stay fast)
unless ``pixels`` asks for the real size.

Heights are a function of the pixel centre, so a pixel copied to the wrong place shows:
``pattern`` changes by hundreds of metres from one pixel to the next (seams), ``plane`` is a plane that
bilinear resampling reproduces exactly (reprojection).
"""

import io
import math
import os
import zipfile

import numpy as np
from osgeo import gdal, osr

NODATA = -32768


def pattern(lons, lats):
    """Heights that differ between neighbouring pixels: 7 m per arc-second east, 13 m per arc-second north."""
    seconds_east = np.round((np.asarray(lons) + 180.0) * 3600.0).astype(np.int64)
    seconds_north = np.round((np.asarray(lats) + 90.0) * 3600.0).astype(np.int64)
    return ((seconds_east * 7 + seconds_north * 13) % 4001 - 100).astype(np.float64)


def plane(lon0, lat0, slope=1500.0):
    """Heights on a plane through (lon0, lat0) at 1000 m, rising ``slope`` metres per degree east and north, with
    longitudes taken next to lon0 (continuous across 180°). Bilinear resampling reproduces it exactly, and a pixel
    misplaced by 90 m is off by more than a metre."""

    def heights(lons, lats):
        east = (np.asarray(lons) - lon0 + 180.0) % 360.0 - 180.0
        return 1000.0 + slope * east + slope * (np.asarray(lats) - lat0)

    return heights


def write_tile(path, west, north, width, height, xres, yres, *, kind="srtm", heights=pattern, sea=False,
               options=("TILED=YES", "COMPRESS=DEFLATE")):
    """A GeoTIFF whose pixel centres start at (west, north); ``kind`` 'srtm' (Int16, nodata, area) or
    'copernicus' (Float32 + 0.25 m, pixel-is-point). ``sea`` writes -32768 in the west half (ocean voids)."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    dtype = gdal.GDT_Int16 if kind == "srtm" else gdal.GDT_Float32
    dataset = gdal.GetDriverByName("GTiff").Create(os.fspath(path), width, height, 1, dtype, list(options))
    if kind == "copernicus":
        dataset.SetMetadataItem("AREA_OR_POINT", "Point")
    dataset.SetGeoTransform((west - xres / 2, xres, 0.0, north + yres / 2, 0.0, -yres))
    dataset.SetProjection(srs.ExportToWkt())
    lons = west + np.arange(width) * xres
    lats = north - np.arange(height) * yres
    values = heights(lons[None, :], lats[:, None])
    if kind == "srtm":
        values = np.round(values).astype(np.int16)
        if sea:
            values[:, : width // 2] = NODATA
        dataset.GetRasterBand(1).SetNoDataValue(NODATA)
    else:
        values = (values + 0.25).astype(np.float32)
    dataset.GetRasterBand(1).WriteArray(values)
    dataset = None
    return os.fspath(path)


def srtm_tile(folder, cell, pixels=100, **kwargs):
    """The tile of an SRTM cell (a ``dem.Cell``), ``pixels`` per 5° side (the real tiles have 6000)."""
    res = 5.0 / pixels
    path = os.path.join(folder, kwargs.pop("name", cell.name) + ".tif")
    return write_tile(path, cell.west, cell.lat0 + 5, pixels, pixels, res, res, kind="srtm", **kwargs)


def copernicus_tile(folder, cell, pixels=60, **kwargs):
    """The tile of a Copernicus cell, ``pixels`` rows per 1°, and fewer columns beyond 50° as published."""
    yres = 1.0 / pixels
    nearest = min(abs(cell.lat0), abs(cell.lat0 + 1))
    factor = next(f for limit, f in ((50, 1.0), (60, 1.5), (70, 2.0), (80, 3.0), (85, 5.0), (90, 10.0))
                  if nearest < limit)
    columns = int(round(pixels / factor))
    path = os.path.join(folder, kwargs.pop("name", cell.name) + ".tif")
    return write_tile(path, cell.west, cell.lat0 + 1, columns, pixels, 1.0 / columns, yres, kind="copernicus",
                      **kwargs)


def zipped(tif_path, member=None):
    """The bytes of a CGIAR-style zip: the tif plus a readme, as the published archives hold."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(tif_path, member or os.path.basename(tif_path))
        archive.writestr("readme.txt", "CGIAR-CSI SRTM 90m Digital Elevation Data (synthetic test tile)\n")
    return buffer.getvalue()


def read(path):
    """(array, geotransform, nodata) of band 1."""
    dataset = gdal.Open(os.fspath(path))
    band = dataset.GetRasterBand(1)
    return band.ReadAsArray(), dataset.GetGeoTransform(), band.GetNoDataValue()


def expected_mosaic(mosaic_path, sources, fill=NODATA):
    """What the mosaic must hold, worked out independently: for every mosaic pixel centre, the value of the
    source pixel containing it (later sources win; source nodata is transparent; floats rounded to the nearest
    metre). ``sources``: paths, or (path, longitude shift) pairs for tiles used across 180°."""
    _, transform, _ = read(mosaic_path)
    dataset = gdal.Open(os.fspath(mosaic_path))
    xs = transform[0] + (np.arange(dataset.RasterXSize) + 0.5) * transform[1]
    ys = transform[3] + (np.arange(dataset.RasterYSize) + 0.5) * transform[5]
    result = np.full((len(ys), len(xs)), fill, dtype=np.int32)
    for source in sources:
        path, shift = source if isinstance(source, tuple) else (source, 0.0)
        values, gt, nodata = read(path)
        cols = np.floor((xs - gt[0] - shift) / gt[1]).astype(int)
        rows = np.floor((ys - gt[3]) / gt[5]).astype(int)
        inside_c = (cols >= 0) & (cols < values.shape[1])
        inside_r = (rows >= 0) & (rows < values.shape[0])
        window = values[np.ix_(rows[inside_r], cols[inside_c])]
        valid = window != nodata if nodata is not None else np.ones(window.shape, bool)
        target = result[np.ix_(inside_r, inside_c)]
        target[valid] = np.floor(window[valid].astype(np.float64) + 0.5).astype(np.int32)
        result[np.ix_(inside_r, inside_c)] = target
    return result


def lonlat_of_pixel_centres(path):
    """Lon/lat of every pixel centre of a projected raster (for checking reprojection)."""
    from pyproj import Transformer

    dataset = gdal.Open(os.fspath(path))
    gt = dataset.GetGeoTransform()
    xs = gt[0] + (np.arange(dataset.RasterXSize) + 0.5) * gt[1]
    ys = gt[3] + (np.arange(dataset.RasterYSize) + 0.5) * gt[5]
    grid_x, grid_y = np.meshgrid(xs, ys)
    crs = osr.SpatialReference(wkt=dataset.GetProjection())
    to_lonlat = Transformer.from_crs(f"EPSG:{crs.GetAuthorityCode(None)}", "EPSG:4326", always_xy=True)
    return to_lonlat.transform(grid_x, grid_y)


def megabytes(count):
    return f"{count / 1e6:.1f}"


def seam_indices(length, period):
    """Indices on both sides of every seam between tiles of ``period`` pixels."""
    return sorted({i for k in range(1, math.ceil(length / period)) for i in (k * period - 1, k * period)
                   if 0 <= i < length})

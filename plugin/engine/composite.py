"""sentinel2:composite: cloud-free composites of any area per period, from Level-2A COGs, reading AOI windows only.

1. Search a STAC catalogue (Earth Search, the Data Space's STAC, any STAC API) for L2A items over the area and
   dates, under ``max_cloud`` (the scene filter).
2. The target grid: the AOI's bounds in ``crs`` (default: the UTM zone of its centre) at ``resolution``, snapped to
   multiples of the resolution (Sentinel-2 grids are, so scenes of every tile and orbit fall on it unresampled).
3. Each scene's window of every band and of SCL is read once through GDAL's ``/vsicurl/`` (HTTP range requests
   on the COG; an overview when the resolution is coarser), warped onto the target grid, and kept in a hidden
   local file: a bounded pool of ``parallel`` readers, at most one file per scene and band in memory at a time.
4. Reflectance = DN x scale + offset from the item's ``raster:bands`` (or, without them, offset -0.1 for
   processing baseline 04.00 and later): old and new scenes combine. SCL decides the valid pixels: no data (0),
   saturated (1), cloud shadows (3), clouds (8, 9), cirrus (10) and, unless ``keep_snow``, snow (11) are left out.
5. Per period and in strips of rows (memory bounded whatever the number of scenes: the strip height shrinks as
   scenes grow), per pixel: ``median`` (per band, of the valid observations), ``medoid`` (the observation whose
   bands are nearest, in the Euclidean sense, to the per-band median: every band from the same date) or
   ``best-pixel`` (the highest score of distance to the nearest cloud or shadow, up to 50 pixels, and closeness
   to the middle of the period). Outputs per period: one COG per band ``composite_<period>_<band>.tif``
   (float32 reflectance, NaN no data), ``composite_<period>_count.tif`` (valid observations), for best-pixel
   ``composite_<period>_date.tif`` (YYYYMMDD of the chosen observation), and a true-colour VRT when B04, B03 and
   B02 are there. A period whose files are there for the same area and method is skipped.
6. ``composite_report.json`` and ``composite_report.html`` (with an SVG chart): per period the scenes used, their
   cloud share over the area, and the share of the area with at least one valid observation.
"""

import calendar
import concurrent.futures
import dataclasses
import datetime as dt
import hashlib
import html
import json
import math
import os

import numpy as np

from . import cog, gdalcache, gdalmode
from .callbacks import check_cancelled, never_cancelled, no_progress, scaled
from .errors import Cancelled, ParameterError, S2Error
from .files import product_stem
from .sources.stac import ASSET_KEYS, gdal_options

METHODS = ("median", "medoid", "best-pixel")
PERIODS = ("month", "10days", "all")
RESOLUTIONS = (10, 20, 60)
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
NATIVE = {"B01": 60, "B09": 60, "B02": 10, "B03": 10, "B04": 10, "B08": 10, "SCL": 20}  # others: 20 m
LEFT_OUT = (0, 1, 3, 8, 9, 10)  # SCL classes that are never a valid observation
SNOW = 11
CLOUDY = (3, 8, 9, 10)  # what best-pixel keeps its distance from
CLOUD_DISTANCE = 50  # pixels: farther counts as far
MEMORY_BUDGET = 96 << 20  # bytes of scene strips in memory at once
KEY = "COMPOSITE_KEY"
# The Data Space's STAC gives s3://eodata/... assets: its S3 service, with the account's S3 keys
CDSE_S3_ENDPOINT = "https://eodata.dataspace.copernicus.eu"
CDSE_S3_VARIABLE = "SENTINEL2_CDSE_S3_ENDPOINT"


@dataclasses.dataclass(frozen=True)
class Period:
    label: str
    first: dt.date
    last: dt.date

    @property
    def middle(self):
        return self.first + (self.last - self.first) / 2


@dataclasses.dataclass
class Grid:
    epsg: int
    transform: tuple
    width: int
    height: int

    @property
    def bounds(self):
        x0, res, _, y0, _, _ = self.transform
        return x0, y0 - self.height * res, x0 + self.width * res, y0

    def wkt(self):
        from osgeo import osr

        srs = osr.SpatialReference()
        srs.ImportFromEPSG(self.epsg)
        return srs.ExportToWkt()


@dataclasses.dataclass
class Scene:
    name: str
    when: dt.datetime
    tile: str
    orbit: int
    cloud: float
    assets: dict  # band -> href
    scaling: dict  # band -> (scale, offset)

    @property
    def date(self):
        return self.when.date()


@dataclasses.dataclass
class Request:
    area_wkb: bytes
    start: dt.date
    end: dt.date
    period: object = "month"  # "month", "10days", "all" or a number of days
    bands: tuple = ("B02", "B03", "B04", "B08")
    method: str = "median"
    resolution: int = 10
    epsg: int = None
    keep_snow: bool = False
    parallel: int = 4
    max_cloud: float = None
    s3: object = None  # storage.Credentials for s3:// assets (the Data Space's eodata bucket)

    def key(self):
        """What a period's files were made for: a re-run with another area, method or bands makes them again."""
        text = json.dumps([self.area_wkb.hex(), self.method, list(self.bands), self.resolution, self.epsg,
                           self.keep_snow])
        return hashlib.sha1(text.encode()).hexdigest()[:16]


# ---- parameters -------------------------------------------------------------------------------------------------

def periods(start, end, period):
    """The periods between ``start`` and ``end`` (dates, both included)."""
    if end < start:
        raise ParameterError("END", f"the end ({end}) is before the start ({start}).")
    if period == "all":
        return [Period(f"{start:%Y%m%d}-{end:%Y%m%d}", start, end)]
    if period == "month":
        found, day = [], start.replace(day=1)
        while day <= end:
            last = day.replace(day=calendar.monthrange(day.year, day.month)[1])
            found.append(Period(f"{day:%Y-%m}", max(day, start), min(last, end)))
            day = last + dt.timedelta(days=1)
        return found
    if period == "10days":
        found, day = [], start.replace(day=1)
        while day <= end:
            last_of_month = calendar.monthrange(day.year, day.month)[1]
            for first, last in ((1, 10), (11, 20), (21, last_of_month)):
                a, b = day.replace(day=first), day.replace(day=last)
                if b >= start and a <= end:
                    found.append(Period(f"{a:%Y%m%d}", max(a, start), min(b, end)))
            day = day.replace(day=last_of_month) + dt.timedelta(days=1)
        return found
    try:
        days = int(period)
    except (TypeError, ValueError):
        raise ParameterError("PERIOD", f"'{period}' is not month, 10days, all or a number of days.") from None
    if days < 1:
        raise ParameterError("PERIOD", "a number of days must be 1 or more.")
    found, day = [], start
    while day <= end:
        last = min(day + dt.timedelta(days=days - 1), end)
        found.append(Period(f"{day:%Y%m%d}", day, last))
        day = last + dt.timedelta(days=1)
    return found


@gdalmode.return_codes()
def check(request):
    """ParameterError naming the parameter for anything unusable; nothing is read or written."""
    if request.method not in METHODS:
        raise ParameterError("METHOD", f"'{request.method}' is not one of {', '.join(METHODS)}.")
    if request.resolution not in RESOLUTIONS:
        raise ParameterError("RESOLUTION", f"{request.resolution} is not one of 10, 20, 60.")
    unknown = [b for b in request.bands if b not in BANDS]
    if unknown or not request.bands:
        raise ParameterError("BANDS", f"choose among {', '.join(BANDS)} (got {', '.join(unknown) or 'none'}).")
    periods(request.start, request.end, request.period)
    grid = target_grid(request.area_wkb, request.resolution, request.epsg)
    if grid.width * grid.height > 400_000_000:
        raise ParameterError("AOI", f"the area is {grid.width} x {grid.height} pixels at {request.resolution} m; "
                                    f"choose a coarser RESOLUTION or a smaller area.")
    return grid


def target_grid(area_wkb, resolution, epsg=None):
    """The :class:`Grid` over the AOI's bounds (EPSG:4326 WKB) in ``epsg`` (default: the UTM zone of its centre)."""
    from osgeo import ogr, osr

    geometry = ogr.CreateGeometryFromWkb(bytes(area_wkb)) if area_wkb else None
    if geometry is None or geometry.IsEmpty():
        raise ParameterError("AOI", "the area of interest is empty.")
    if epsg is None:
        lon, lat = geometry.Centroid().GetX(), geometry.Centroid().GetY()
        zone = min(int((lon + 180) // 6) + 1, 60)
        epsg = (32600 if lat >= 0 else 32700) + zone
    wgs, target = osr.SpatialReference(), osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if target.ImportFromEPSG(int(epsg)) != 0:
        raise ParameterError("CRS", f"EPSG:{epsg} is not a coordinate reference system GDAL knows.")
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    projected = geometry.Clone()
    projected.Transform(osr.CoordinateTransformation(wgs, target))
    minx, maxx, miny, maxy = projected.GetEnvelope()
    x0, y1 = math.floor(minx / resolution) * resolution, math.ceil(maxy / resolution) * resolution
    x1, y0 = math.ceil(maxx / resolution) * resolution, math.floor(miny / resolution) * resolution
    return Grid(int(epsg), (float(x0), float(resolution), 0.0, float(y1), 0.0, -float(resolution)),
                max(1, int(round((x1 - x0) / resolution))), max(1, int(round((y1 - y0) / resolution))))


# ---- scenes -----------------------------------------------------------------------------------------------------

def scene_of(footprint, bands):
    """A :class:`Scene` from a STAC footprint, or None when it lacks a band or SCL."""
    links = (footprint.extra or {}).get("assets") or {}
    scaling = (footprint.extra or {}).get("scaling") or {}
    assets, factors = {}, {}
    for band in tuple(bands) + ("SCL",):
        # Earth Search's asset key, then the band's own name, then the Data Space's (B04_10m...)
        key = next((k for k in (ASSET_KEYS[band], band, f"{band}_10m", f"{band}_20m", f"{band}_60m")
                    if links.get(k)), None)
        if key is None:
            return None
        assets[band] = links[key]
        baseline = (footprint.extra or {}).get("baseline")
        factors[band] = scaling.get(key) or _baseline_scaling(baseline, footprint.name)
    return Scene(product_stem(footprint.name), footprint.sensing_start, footprint.tile_id,
                 footprint.relative_orbit or 0, footprint.cloud_cover, assets, factors)


def _baseline_scaling(baseline, name):
    """Without raster:bands: processing baseline 04.00 and later store reflectance x 10000 + 1000."""
    from .safe import name_baseline

    baseline = baseline or name_baseline(name)
    return (0.0001, -0.1) if baseline and baseline >= "04.00" else (0.0001, 0.0)


def search(request, catalog, url, session, progress, is_cancelled, log, credentials=None):
    """The usable scenes over the area and dates, by date; items without the bands or SCL are said and left out."""
    from . import catalogs
    from .query import Query

    query = Query(start=dt.datetime.combine(request.start, dt.time.min, dt.timezone.utc),
                  end=dt.datetime.combine(request.end, dt.time.max, dt.timezone.utc), level="L2A",
                  aoi_wkb=request.area_wkb, max_cloud=request.max_cloud)
    found = catalogs.search(catalog, query, url, credentials, session, progress, is_cancelled, log)
    scenes, lacking = [], []
    for footprint in found:
        scene = scene_of(footprint, request.bands)
        (scenes if scene else lacking).append(scene or footprint.name)
    if lacking:
        log(f"{len(lacking)} item(s) without one of {', '.join(request.bands)} or SCL are left out: "
            f"{', '.join(lacking[:3])}{'...' if len(lacking) > 3 else ''}")
    return sorted(scenes, key=lambda s: (s.when, s.name))


# ---- reading windows -----------------------------------------------------------------------------------------

class Reader:
    """Scene windows on the target grid in hidden local files, read by a bounded pool."""

    def __init__(self, grid, folder, session=None, parallel=4, s3=None, environ=None):
        self.grid, self.folder, self.session = grid, folder, session
        self.parallel = max(1, int(parallel))
        self.s3, self.environ = s3, os.environ if environ is None else environ
        self.buckets = set()
        self.opened = {}  # (scene, band) -> dataset, for the strips of the period being made

    def path(self, scene, band):
        digest = hashlib.sha1(f"{scene.assets[band]}|{self.grid}".encode()).hexdigest()[:12]
        return os.path.join(self.folder, f".{scene.name}_{band}_{digest}.tif")

    def fetch(self, scenes, bands, progress, is_cancelled, log):
        """Read every window not read yet; returns {scene name: reason} for scenes that could not be read."""
        jobs = [(scene, band) for scene in scenes for band in tuple(bands) + ("SCL",)
                if not os.path.exists(self.path(scene, band))]
        self._configure_buckets(scene.assets[band] for scene, band in jobs)
        failed = {}
        if not jobs:
            return failed
        with concurrent.futures.ThreadPoolExecutor(min(self.parallel, len(jobs)), "composite-read") as pool:
            futures = {pool.submit(self._window, scene, band, is_cancelled): (scene, band) for scene, band in jobs}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                scene, band = futures[future]
                try:
                    future.result()
                except Cancelled:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                except S2Error as error:
                    if scene.name not in failed:
                        failed[scene.name] = str(error)
                        log(f"{scene.name}: left out, {error}")
                progress(done / len(jobs), f"{done} of {len(jobs)} windows read")
        return failed

    def _configure_buckets(self, hrefs):
        """s3:// assets: the bucket's endpoint (the Data Space's unless SENTINEL2_CDSE_S3_ENDPOINT says otherwise)
        and keys, set once per bucket for GDAL's /vsis3/ only."""
        from .storage import configure_bucket

        for href in hrefs:
            if href.startswith("s3://"):
                bucket = href[5:].split("/", 1)[0]
                if bucket not in self.buckets:
                    configure_bucket(bucket, self.s3, self.environ.get(CDSE_S3_VARIABLE) or CDSE_S3_ENDPOINT)
                    self.buckets.add(bucket)

    @gdalmode.return_codes()  # a worker thread: its own exception state
    def _window(self, scene, band, is_cancelled):
        from osgeo import gdal

        check_cancelled(is_cancelled)
        href = scene.assets[band]
        source = href if href.startswith("/vsi") else ("/vsis3/" + href[5:] if href.startswith("s3://")
                                                      else "/vsicurl/" + href)
        target = self.path(scene, band)
        part = target + ".part"
        # COG-friendly reads with the session's proxy and User-Agent, for this thread only
        options = gdal_options(self.session, href) if self.session is not None and href.startswith("http") else {}
        saved = {key: gdal.GetThreadLocalConfigOption(key, None) for key in options}
        for key, value in options.items():
            gdal.SetThreadLocalConfigOption(key, value)
        try:
            gdal.ErrorReset()
            # averaging only where pixels merge: at the band's own resolution (or finer) each target pixel is one
            # source pixel, and GDAL's average costs several times nearest for the same values
            coarser = self.grid.transform[1] > NATIVE.get(band, 20)
            made = gdal.Warp(part, source, format="GTiff", outputBounds=self.grid.bounds,
                             xRes=self.grid.transform[1], yRes=self.grid.transform[1], dstSRS=f"EPSG:{self.grid.epsg}",
                             resampleAlg="average" if coarser and band != "SCL" else "near", dstNodata=0,
                             outputType=gdal.GDT_UInt16 if band != "SCL" else gdal.GDT_Byte,
                             creationOptions=["TILED=YES"], multithread=False)
            if made is None:
                raise S2Error(f"its {band} window could not be read ({gdal.GetLastErrorMsg().strip() or 'no reason'})")
            made = None
            os.replace(part, target)
        finally:
            for key, value in saved.items():
                gdal.SetThreadLocalConfigOption(key, value)
            if os.path.exists(part):
                os.remove(part)

    def strip(self, scene, band, row, rows):
        """Rows of a window already read; the file stays open for the period's next strips (one thread)."""
        from osgeo import gdal

        key = (scene.name, band)
        if key not in self.opened:
            self.opened[key] = gdal.Open(self.path(scene, band))
        return self.opened[key].GetRasterBand(1).ReadAsArray(0, row, self.grid.width, rows)

    def remove(self, scenes, bands):
        for scene in scenes:
            for band in tuple(bands) + ("SCL",):
                self.opened.pop((scene.name, band), None)  # closes it
                if os.path.exists(self.path(scene, band)):
                    os.remove(self.path(scene, band))


# ---- compositing ----------------------------------------------------------------------------------------------

def valid_mask(scl, keep_snow=False):
    left_out = LEFT_OUT if keep_snow else LEFT_OUT + (SNOW,)
    return ~np.isin(scl, left_out)


def cloud_distance(scl, limit=CLOUD_DISTANCE):
    """Chessboard distance (pixels, capped at ``limit``) to the nearest cloud, cirrus or shadow pixel of a window;
    ``limit`` everywhere when there is none."""
    cloudy = np.isin(scl, CLOUDY)
    distance = np.full(scl.shape, limit, np.uint8)
    reached = cloudy.copy()
    distance[reached] = 0
    for step in range(1, limit):
        if reached.all() or not reached.any():
            break
        tall = reached.copy()  # a 3 x 3 dilation, as two 3-pixel passes
        tall[1:] |= reached[:-1]
        tall[:-1] |= reached[1:]
        grown = tall.copy()
        grown[:, 1:] |= tall[:, :-1]
        grown[:, :-1] |= tall[:, 1:]
        distance[grown & ~reached] = step
        reached = grown
    return distance


def combine(method, values, valid, dates=None, middle=None, distance=None, half_days=1.0):
    """One strip: ``values`` (scenes, bands, rows, cols) reflectance, ``valid`` (scenes, rows, cols); for
    best-pixel the scenes' ``dates``, the period's ``middle`` (dates) and ``distance`` to clouds (scenes, rows,
    cols). Returns (composite (bands, rows, cols) float32 with NaN, count (rows, cols), chosen date YYYYMMDD
    (rows, cols) for best-pixel, else None)."""
    count = valid.sum(axis=0).astype(np.uint16)
    masked = np.where(valid[:, None], values, np.nan)
    if method == "median":
        return nan_median(masked), count, None
    if method == "medoid":
        median = nan_median(masked)
        with np.errstate(all="ignore"):
            distance2 = np.nansum((masked - median[None]) ** 2, axis=1)
        score = np.where(valid, -distance2, -np.inf)
    else:  # best-pixel
        days = np.asarray([d.toordinal() for d in dates], float)
        closeness = 1.0 - np.abs(days - middle.toordinal()) / max(half_days, 1.0)
        score = 0.6 * distance.astype(np.float32) / CLOUD_DISTANCE + 0.4 * np.clip(closeness, 0, 1)[:, None, None]
        score = np.where(valid, score, -np.inf)
    chosen = np.argmax(score, axis=0)
    picked = np.take_along_axis(values, chosen[None, None], axis=0)[0].astype(np.float32)
    empty = count == 0
    picked[:, empty] = np.nan
    when = None
    if method == "best-pixel":
        stamps = np.asarray([int(d.strftime("%Y%m%d")) for d in dates], np.int32)
        when = np.where(empty, 0, stamps[chosen]).astype(np.int32)
    return picked, count, when


def nan_median(stack):
    """The median along the first axis ignoring NaN (NaN where all are): one sort of the few observations per
    pixel (NaN sort last), then the middle one or two of the valid ones. numpy's nanmedian goes through masked
    arrays for short axes and is several times slower on stacks of scenes."""
    ordered = np.sort(stack, axis=0)
    count = (~np.isnan(stack)).sum(axis=0)
    last = stack.shape[0] - 1
    low = np.take_along_axis(ordered, np.clip((count - 1) // 2, 0, last)[None], axis=0)[0]
    high = np.take_along_axis(ordered, np.clip(count // 2, 0, last)[None], axis=0)[0]
    median = (low + high) * np.float32(0.5)
    median[count == 0] = np.nan
    return median.astype(np.float32)


# ---- the whole job ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PeriodResult:
    period: Period
    status: str  # "written", "skipped" (already there), "empty" (no usable scene)
    scenes: list = dataclasses.field(default_factory=list)
    files: list = dataclasses.field(default_factory=list)
    cloud_share: float = None
    valid_share: float = None
    reason: str = ""


def output_names(period, bands, method):
    names = [f"composite_{period.label}_{band}.tif" for band in bands] + [f"composite_{period.label}_count.tif"]
    return names + ([f"composite_{period.label}_date.tif"] if method == "best-pixel" else [])


@gdalmode.return_codes()
def run(request, scenes, output, progress=None, is_cancelled=None, log=None, session=None):
    """Composite every period of ``request`` from ``scenes`` into ``output`` (a storage output); returns the
    :class:`PeriodResult` list, the report's paths and the scenes left out {name: reason}."""
    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    log = log or (lambda message: None)
    grid = check(request)
    output.prepare()
    staging = output.staging_folder()
    reader = Reader(grid, staging, session, request.parallel, request.s3)
    key = request.key()
    results, left_out = [], {}
    spans = periods(request.start, request.end, request.period)
    with gdalcache.bounded(64 << 20):
        for index, period in enumerate(spans):
            check_cancelled(is_cancelled)
            step = scaled(progress, index / len(spans), (index + 1) / len(spans))
            names = output_names(period, request.bands, request.method)
            inside = [s for s in scenes if period.first <= s.date <= period.last]
            if all(output.has(n, {KEY: key}) for n in names):
                log(f"{period.label}: skipped, its composite is already in the output folder")
                results.append(PeriodResult(period, "skipped", [s.name for s in inside],
                                            [output.location(n) for n in names]))
                continue
            failed = reader.fetch(inside, request.bands, scaled(step, 0, 0.7), is_cancelled, log)
            left_out.update(failed)
            usable = [s for s in inside if s.name not in failed]
            if not usable:
                results.append(PeriodResult(period, "empty", reason="no usable scene"))
                log(f"{period.label}: no usable scene")
                continue
            results.append(_period(request, grid, period, usable, reader, output, names, key, staging,
                                   scaled(step, 0.7, 1.0), is_cancelled))
            reader.remove(usable, request.bands)
            log(f"{period.label}: {len(usable)} scene(s), {100 * results[-1].valid_share:.0f} % of the area "
                f"with a valid observation")
    report = write_report(request, grid, results, left_out, output, staging)
    output.cleanup()
    progress(1.0, "composites done")
    return results, report, left_out


def _period(request, grid, period, scenes, reader, output, names, key, staging, progress, is_cancelled):
    from osgeo import gdal

    bands, count_scenes = list(request.bands), len(scenes)
    per_row = grid.width * 4 * count_scenes * (len(bands) + 2)
    rows_per_strip = max(1, min(grid.height, MEMORY_BUDGET // max(per_row, 1)))
    temps = [os.path.join(staging, f".{n}.part") for n in names]
    metadata = {KEY: key, "METHOD": request.method, "PERIOD": f"{period.first}/{period.last}",
                "SCENES": str(count_scenes)}
    datasets = []
    for temp, name in zip(temps, names):
        kind = (gdal.GDT_UInt16 if name.endswith("_count.tif") else gdal.GDT_Int32 if name.endswith("_date.tif")
                else gdal.GDT_Float32)
        dataset = gdal.GetDriverByName("GTiff").Create(temp, grid.width, grid.height, 1, kind,
                                                        [f"BLOCKYSIZE={min(rows_per_strip, grid.height)}"])
        dataset.SetGeoTransform(grid.transform)
        dataset.SetProjection(grid.wkt())
        dataset.SetMetadata(metadata)
        band_name = name[len(f"composite_{period.label}_"):-4]
        dataset.GetRasterBand(1).SetDescription(band_name)
        if kind == gdal.GDT_Float32:
            dataset.GetRasterBand(1).SetNoDataValue(float("nan"))
            dataset.GetRasterBand(1).SetMetadata({"BAND": band_name, "UNITS": "reflectance", "SCALE": "1"})
        datasets.append(dataset)
    dataset = None  # only the list holds them: clearing it closes the files
    distances = None
    if request.method == "best-pixel":
        distances = [cloud_distance(reader.strip(s, "SCL", 0, grid.height)) for s in scenes]
    dates = [s.date for s in scenes]
    half = max((period.last - period.first).days / 2, 1.0)
    valid_pixels, cloudy, data_pixels = 0, np.zeros(count_scenes), np.zeros(count_scenes)
    try:
        for row in range(0, grid.height, rows_per_strip):
            check_cancelled(is_cancelled)
            rows = min(rows_per_strip, grid.height - row)
            scl = np.stack([reader.strip(s, "SCL", row, rows) for s in scenes])
            valid = valid_mask(scl, request.keep_snow)
            seen = scl != 0
            data_pixels += seen.reshape(count_scenes, -1).sum(axis=1)
            cloudy += (seen & ~valid).reshape(count_scenes, -1).sum(axis=1)
            values = np.empty((count_scenes, len(bands), rows, grid.width), np.float32)
            for i, scene in enumerate(scenes):
                for j, band in enumerate(bands):
                    dn = reader.strip(scene, band, row, rows).astype(np.float32)
                    scale, offset = scene.scaling[band]
                    values[i, j] = np.where(dn == 0, np.nan, dn * scale + offset)
            valid &= ~np.isnan(values).any(axis=1)
            strip_distance = np.stack([d[row:row + rows] for d in distances]) if distances else None
            composite, count, when = combine(request.method, values, valid, dates, period.middle,
                                             strip_distance, half)
            valid_pixels += int((count > 0).sum())
            for j in range(len(bands)):
                datasets[j].GetRasterBand(1).WriteArray(composite[j], 0, row)
            datasets[len(bands)].GetRasterBand(1).WriteArray(count, 0, row)
            if when is not None:
                datasets[len(bands) + 1].GetRasterBand(1).WriteArray(when, 0, row)
            progress((row + rows) / grid.height, period.label)
        datasets.clear()
        cogs = []
        for temp, name in zip(temps, names):
            cogs.append(cog.translate(temp, os.path.join(staging, f".{name}.cog"),
                                      categorical=name.endswith(("_count.tif", "_date.tif"))))
        files = [output.publish(path, name) for path, name in zip(cogs, names)]
    finally:
        datasets.clear()
        for temp in temps:
            for leftover in (temp, os.path.join(staging, f".{os.path.basename(temp)[1:-5]}.cog")):
                if os.path.exists(leftover):
                    os.remove(leftover)
    files += _true_colour(period, request.bands, output, staging)
    share = float(cloudy.sum() / max(data_pixels.sum(), 1))
    return PeriodResult(period, "written", [s.name for s in scenes], files, share,
                        valid_pixels / (grid.width * grid.height))


def _true_colour(period, bands, output, staging):
    """A VRT of B04, B03, B02 next to the band files (relative paths, so it travels with them)."""
    if not {"B04", "B03", "B02"} <= set(bands):
        return []
    name = f"composite_{period.label}_truecolour.vrt"
    sources = "".join(
        f'<VRTRasterBand dataType="Float32" band="{i}"><ColorInterp>{colour}</ColorInterp><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">composite_{period.label}_{band}.tif</SourceFilename>'
        f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
        for i, (band, colour) in enumerate((("B04", "Red"), ("B03", "Green"), ("B02", "Blue")), 1))
    from osgeo import gdal

    first = gdal.Open(output.location(f"composite_{period.label}_B04.tif"))
    header = (f'<VRTDataset rasterXSize="{first.RasterXSize}" rasterYSize="{first.RasterYSize}"><SRS>'
              f'{html.escape(first.GetProjection())}</SRS><GeoTransform>'
              f'{", ".join(repr(v) for v in first.GetGeoTransform())}</GeoTransform>')
    first = None
    path = os.path.join(staging, f".{name}")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + sources + "</VRTDataset>\n")
    return [output.publish(path, name)]


# ---- the report -------------------------------------------------------------------------------------------------

def write_report(request, grid, results, left_out, output, staging):
    """composite_report.json and composite_report.html (an SVG chart of valid and cloud shares per period)."""
    periods_json = [{"period": r.period.label, "first": r.period.first.isoformat(), "last": r.period.last.isoformat(),
                     "status": r.status, "scenes": r.scenes, "scene_count": len(r.scenes),
                     "cloud_share": _rounded(r.cloud_share), "valid_share": _rounded(r.valid_share),
                     "files": r.files, "reason": r.reason} for r in results]
    document = {"method": request.method, "bands": list(request.bands), "resolution": request.resolution,
                "crs": f"EPSG:{grid.epsg}", "grid": {"transform": list(grid.transform), "width": grid.width,
                                                      "height": grid.height},
                "periods": periods_json, "left_out": left_out}
    paths = []
    for name, text in (("composite_report.json", json.dumps(document, indent=2)),
                       ("composite_report.html", _html(document))):
        path = os.path.join(staging, f".{name}")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        paths.append(output.publish(path, name))
    return paths


def _rounded(value):
    return None if value is None else round(float(value), 4)


def _html(document):
    rows = document["periods"]
    width, bar = 60 * max(len(rows), 1) + 80, 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="260" role="img" '
             f'aria-label="valid and cloud shares per period">',
             '<line x1="50" y1="210" x2="%d" y2="210" stroke="#333"/>' % (width - 10),
             '<text x="5" y="15" font-size="11">share of the area</text>']
    for tick in (0, 50, 100):
        y = 210 - 2 * tick
        parts.append(f'<text x="20" y="{y + 4}" font-size="10">{tick}%</text>'
                     f'<line x1="48" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#ddd"/>')
    for i, row in enumerate(rows):
        x = 60 + 60 * i
        valid = 200 * (row["valid_share"] or 0)
        cloud = 200 * (row["cloud_share"] or 0)
        parts.append(f'<rect x="{x}" y="{210 - valid:.1f}" width="{bar}" height="{valid:.1f}" fill="#2b8a3e">'
                     f'<title>{html.escape(row["period"])}: valid {100 * (row["valid_share"] or 0):.1f} %</title>'
                     f'</rect>')
        parts.append(f'<rect x="{x + bar}" y="{210 - cloud:.1f}" width="{bar}" height="{cloud:.1f}" '
                     f'fill="#adb5bd"><title>{html.escape(row["period"])}: cloud '
                     f'{100 * (row["cloud_share"] or 0):.1f} %</title></rect>')
        parts.append(f'<text x="{x}" y="228" font-size="10">{html.escape(row["period"])}</text>'
                     f'<text x="{x}" y="242" font-size="10">{row["scene_count"]} scenes</text>')
    parts.append("</svg>")
    def percent(value):
        return "" if value is None else f"{100 * value:.1f} %"

    table = "".join(f"<tr><td>{html.escape(r['period'])}</td><td>{r['status']}</td><td>{r['scene_count']}</td>"
                    f"<td>{percent(r['cloud_share'])}</td><td>{percent(r['valid_share'])}</td></tr>" for r in rows)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sentinel-2 composites</title></head><body>"
            f"<h1>Sentinel-2 composites ({html.escape(document['method'])})</h1>"
            "<p>Green: share of the area with at least one valid observation. Grey: cloud, shadow, cirrus (and "
            "snow) share of the scenes over the area.</p>" + "".join(parts) +
            "<table border='1' cellpadding='4'><tr><th>period</th><th>status</th><th>scenes</th><th>cloud</th>"
            f"<th>valid</th></tr>{table}</table></body></html>\n")

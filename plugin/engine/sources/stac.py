"""Per-band downloads of STAC items (``SOURCE=stac``; Earth Search's Sentinel-2 COGs above all).

Each product becomes a folder ``<output folder>/<product name>/`` with one file per band, ``B04.tif``...
(BANDS, none: every band the item has). Band names map to Earth Search's asset keys (:data:`ASSET_KEYS`);
``B4`` and ``B04`` both work.

- Without AOI the whole band files are fetched through the download engine (resume, retries, size and, when
  the item states one, checksum verification).
- With AOI only the AOI's window of each band is read, through GDAL's ``/vsicurl/``: HTTP range requests on the
  Cloud-Optimised GeoTIFF fetch the header and the tiles under the window, a few percent of the file for a
  10 km area in a 110 km tile. The window is the AOI's bounds reprojected to the band's CRS and widened to whole
  pixels on the band's own grid; pixels outside the AOI polygon get the nodata value. Each clip is written to a
  temporary name and renamed, and remembers the area and asset it was cut for, so a re-run with the same area
  skips it and a different area replaces it.
- A server that ignores Range requests is detected with one tiny request per host before GDAL reads anything:
  the band is then downloaded whole (through the engine, resumable) to a hidden file, clipped and deleted, and
  the log says so once per host. It costs the whole file's bytes, but the result is the same.
- Requester-pays ``s3://`` assets (L1C JP2 on Earth Search) cannot be read over HTTP: those products fail with a
  sentence pointing at ``SOURCE=aws``.

GDAL settings for efficient COG reads are set in a ``rasterio.Env`` for the reading thread only, so nothing leaks
into QGIS's own GDAL configuration; the session's proxy and User-Agent are passed on to GDAL.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import queue
import re
import threading
import urllib.parse

from .. import files, http, transfer
from ..errors import Cancelled, MissingDependency, ParameterError, S2Error
from . import Result, common

# Earth Search asset keys per band (reference notes §4).
ASSET_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
              "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16",
              "B12": "swir22", "SCL": "scl", "TCI": "visual"}
STRIP_ROWS = 1024  # rows read and written at a time: memory stays small whatever the AOI
CANCEL_GRACE = 2.0
WGS84 = "EPSG:4326"


@dataclasses.dataclass
class Asset:
    href: str
    size: int = None
    checksum: str = ""


@dataclasses.dataclass
class Plan:
    """One product: where its bands go and which asset each comes from."""

    footprint: object
    folder: str
    bands: list  # [(band, Asset)]
    item: dict = None  # the STAC item, saved as item.json (band scale and offset, platform)
    granule_metadata: Asset = None  # Earth Search's granule_metadata.xml (the angle grids)


class _ProductFailure(Exception):
    """This product cannot be downloaded; the message completes '<product>: ...'."""


# ---- parameters -----------------------------------------------------------------------------------------------


def normalise_band(text):
    """'B4', 'b04', 'B8a', 'tci' -> 'B04', 'B04', 'B8A', 'TCI'; ParameterError (BANDS) for anything else."""
    value = str(text).strip().upper()
    match = re.fullmatch(r"B0?(\d)", value)
    value = f"B0{match.group(1)}" if match else value
    if value not in ASSET_KEYS:
        raise ParameterError("BANDS", f"'{text}' is not a Sentinel-2 band; use {', '.join(ASSET_KEYS)}.")
    return value


def validate(options):
    for band in options.bands or ():
        normalise_band(band)
    if options.aoi_wkb is not None:
        _Area(options.aoi_wkb)


# ---- the source -----------------------------------------------------------------------------------------------


def download(footprints, folder, options, session, progress, is_cancelled, log):
    """See ``sources/__init__.py``."""
    bands = list(dict.fromkeys(normalise_band(band) for band in options.bands or ()))
    area = _Area(options.aoi_wkb) if options.aoi_wkb is not None else None
    plans, results = [], []
    for footprint in footprints:
        try:
            plans.append(_plan(footprint, bands, folder, session))
        except _ProductFailure as failure:
            results.append(common.failed(footprint, str(failure)))
    if not plans:
        return results
    plans = [plan for plan in plans if _save_metadata(plan, session, results)]
    if not plans:
        return results
    if area is None:
        return results + _whole(plans, session, options.parallel, progress, is_cancelled, log)
    log(f"STAC: reading the AOI window of {sum(len(p.bands) for p in plans)} band file(s) with range requests.")
    return results + _Clipper(area, session, log).run(plans, options.parallel, progress, is_cancelled)


def _plan(footprint, bands, folder, session):
    assets, item = _assets(footprint, session)
    wanted = bands or [band for band in ASSET_KEYS if _asset_for(band, assets) is not None]
    if not wanted:
        raise _ProductFailure("its STAC item has no Sentinel-2 band assets.")
    chosen = []
    for band in wanted:
        asset = _asset_for(band, assets)
        if asset is None:
            raise _ProductFailure(f"its STAC item has no asset for {band} ({ASSET_KEYS[band]}).")
        if asset.href.startswith("s3://"):
            raise _ProductFailure(f"its band files are in a requester-pays bucket ({asset.href}), which cannot be "
                                  f"read over HTTP; download it with SOURCE=aws.")
        chosen.append((band, asset))
    return Plan(footprint, os.path.join(folder, common.stem(footprint.name)), chosen, item,
                assets.get("granule_metadata"))


def _save_metadata(plan, session, results):
    """Write item.json and fetch granule_metadata.xml into the product folder (what sentinel2:biophysical reads:
    band scale and offset, platform, angle grids); False, with a failed result, when that cannot be done."""
    try:
        os.makedirs(plan.folder, exist_ok=True)
        if plan.item is not None:
            temp = os.path.join(plan.folder, ".item.json.part")
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(plan.item, handle)
            os.replace(temp, os.path.join(plan.folder, "item.json"))
        target = os.path.join(plan.folder, "granule_metadata.xml")
        if plan.granule_metadata is not None and not os.path.isfile(target):
            asset = plan.granule_metadata
            transfer.fetch_to_file(asset.href, target, session, asset.size, asset.checksum,
                                   name=f"{common.stem(plan.footprint.name)} granule metadata")
        return True
    except S2Error as error:
        results.append(common.failed(plan.footprint, f"its granule metadata could not be fetched: "
                                                     f"{str(error).rstrip('.')}."))
    except OSError as error:
        results.append(common.failed(plan.footprint, f"could not write {error.filename} ({error.strerror})."))
    return False


def _asset_for(band, assets):
    # Earth Search keys first, then the band's own name and CDSE-style keys (B04_10m...), finest first.
    for key in (ASSET_KEYS[band], band, f"{band}_10m", f"{band}_20m", f"{band}_60m"):
        if key in assets:
            return assets[key]
    return None


def _assets(footprint, session):
    """({key: Asset}, item or None): from the STAC item when the footprint links one (its properties are saved
    too), else from the asset links the search left in the footprint."""
    hrefs = (footprint.extra or {}).get("assets")
    url = footprint.download_url or ""
    if not url.startswith(("http://", "https://")):
        if hrefs:
            return {key: Asset(href) for key, href in hrefs.items() if href}, None
        raise _ProductFailure("its footprint has neither band assets nor a STAC item link; search again.")
    try:
        response = http.fetch(session, "GET", url, "STAC", headers={"Accept": "application/geo+json"})
        item = response.json()
        assets = item["assets"]
    except S2Error as error:
        if hrefs:  # the bands are known; only the item's properties are missing
            return {key: Asset(href) for key, href in hrefs.items() if href}, None
        raise _ProductFailure(f"its STAC item could not be read: {str(error).rstrip('.')}.") from None
    except (ValueError, KeyError, TypeError):
        raise _ProductFailure(f"{http.host_of(url)} did not answer a STAC item at {http.redact_url(url)}.") from None
    found = {key: _asset(value) for key, value in assets.items() if isinstance(value, dict) and value.get("href")}
    return found, item


def _asset(value):
    size = value.get("file:size")
    return Asset(value["href"], size if isinstance(size, int) and size > 0 else None,
                 _multihash(value.get("file:checksum")))


def _multihash(text):
    """'SHA256:<hex>' / 'MD5:<hex>' from a STAC ``file:checksum`` multihash, '' for anything else."""
    text = str(text or "").lower()
    for prefix, algorithm, length in (("1220", "SHA256", 64), ("d50110", "MD5", 32)):
        if text.startswith(prefix) and len(text) == len(prefix) + length:
            return f"{algorithm}:{text[len(prefix):]}"
    return ""


def _band_file(plan, band, href):
    extension = os.path.splitext(urllib.parse.urlsplit(href).path)[1].lower() or ".tif"
    return os.path.join(plan.folder, band + extension)


def _grouped(plans, statuses):
    """One Result per plan from ``statuses``: {(plan index, band): (status, reason)}."""
    results = []
    for index, plan in enumerate(plans):
        outcomes = [statuses[(index, band)] for band, _ in plan.bands]
        failures = [reason for status, reason in outcomes if status == transfer.FAILED]
        if failures:
            results.append(Result(plan.footprint, transfer.FAILED, None, failures[0]))
            continue
        status = transfer.SKIPPED if all(s == transfer.SKIPPED for s, _ in outcomes) else transfer.DOWNLOADED
        results.append(Result(plan.footprint, status, plan.folder))
    return results


# ---- whole band files -----------------------------------------------------------------------------------------


def _whole(plans, session, parallel, progress, is_cancelled, log):
    jobs = {}
    for index, plan in enumerate(plans):
        name = common.stem(plan.footprint.name)
        for band, asset in plan.bands:
            jobs[(index, band)] = transfer.Transfer(asset.href, _band_file(plan, band, asset.href), asset.size,
                                                    asset.checksum, name=f"{name} {band}")
    report = transfer.download_all(list(jobs.values()), session, parallel, progress, is_cancelled, log)
    by_dest = {outcome.transfer.dest: outcome for outcome in report.outcomes}
    return _grouped(plans, {key: (by_dest[job.dest].status, by_dest[job.dest].reason) for key, job in jobs.items()})


# ---- AOI windows ----------------------------------------------------------------------------------------------


class _Area:
    """The AOI: EPSG:4326 bounds and GeoJSON, and a digest that tells whether a clip was cut for it."""

    def __init__(self, wkb):
        from osgeo import ogr

        geometry = ogr.CreateGeometryFromWkb(bytes(wkb)) if wkb else None
        if geometry is None or geometry.IsEmpty():
            raise ParameterError("AOI", "the area of interest is empty.")
        west, east, south, north = geometry.GetEnvelope()
        self.bounds = (west, south, east, north)
        self.geojson = json.loads(geometry.ExportToJson())
        self.digest = hashlib.md5(bytes(wkb)).hexdigest()


class _Clipper:
    """Clips every (product, band) in a pool of ``parallel`` threads; callbacks stay in the calling thread."""

    def __init__(self, area, session, log):
        self.area, self.session, self.log = area, session, log
        self.notes = queue.SimpleQueue()  # log lines from the workers, delivered by the calling thread
        self.ranges = {}  # origin -> True when the server honours Range
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, plans, parallel, progress, is_cancelled):
        tasks = [(index, band, asset) for index, plan in enumerate(plans) for band, asset in plan.bands]
        pool = concurrent.futures.ThreadPoolExecutor(min(int(parallel), len(tasks)), thread_name_prefix="s2-clip")
        futures = {pool.submit(self._task, plans[i], band, asset): (i, band) for i, band, asset in tasks}
        try:
            self._supervise(futures, progress, is_cancelled)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return _grouped(plans, {key: future.result() for future, key in futures.items()})

    def _supervise(self, futures, progress, is_cancelled):
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.1)
            self._deliver()
            if is_cancelled():
                self.stop.set()
                concurrent.futures.wait(pending, timeout=CANCEL_GRACE)
                raise Cancelled()
            finished = len(futures) - len(pending)
            progress(finished / len(futures), f"{finished} of {len(futures)} band windows")
        self._deliver()

    def _deliver(self):
        while not self.notes.empty():
            self.log(self.notes.get())

    def _task(self, plan, band, asset):
        """(status, reason) of one band of one product; runs in a worker thread."""
        dest = os.path.join(plan.folder, band + ".tif")
        name = f"{common.stem(plan.footprint.name)} {band}"
        try:
            if self.stop.is_set():
                raise Cancelled()
            if _clip_is_current(dest, self.area.digest, asset.href):
                return transfer.SKIPPED, ""
            os.makedirs(plan.folder, exist_ok=True)
            self._clip_asset(asset, dest, name)
            return transfer.DOWNLOADED, ""
        except _ProductFailure as failure:
            return transfer.FAILED, f"{name}: {failure}"
        except MissingDependency:
            raise
        except S2Error as error:
            if isinstance(error, Cancelled):
                raise
            return transfer.FAILED, f"{name}: {str(error).rstrip('.')}."
        except OSError as error:
            return transfer.FAILED, f"{name}: could not write {error.filename or dest} ({error.strerror})."

    def _clip_asset(self, asset, dest, name):
        if self._honours_ranges(asset.href):
            return clip("/vsicurl/" + asset.href, dest, self.area, gdal_options(self.session, asset.href),
                        self.stop, asset.href)
        whole = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + ".whole")
        transfer.fetch_to_file(asset.href, whole, self.session, asset.size, asset.checksum, name=name,
                               is_cancelled=self.stop.is_set)
        try:
            return clip(whole, dest, self.area, {}, self.stop, asset.href)
        finally:
            os.remove(whole)

    def _honours_ranges(self, url):
        """Whether the server of ``url`` answers Range requests with 206 (asked once per server)."""
        origin = urllib.parse.urlsplit(url)[:2]
        with self.lock:
            if origin in self.ranges:
                return self.ranges[origin]
        supported = _probe_ranges(self.session, url)
        with self.lock:
            if origin not in self.ranges and not supported:
                self.notes.put(f"STAC: {http.host_of(url)} ignores HTTP range requests, so whole band files are "
                               f"downloaded to cut the AOI window out of them.")
            self.ranges[origin] = supported
        return supported


def _probe_ranges(session, url):
    # A server that says "Accept-Ranges: none" is believed without a GET: the GET of a server that ignores Range
    # starts sending the whole file, and what fills the socket buffers before we hang up is wasted.
    with http.service_errors("STAC", url):
        head = session.head(url, allow_redirects=True)
    head.close()
    if head.status_code < 400 and head.headers.get("Accept-Ranges", "").strip().lower() == "none":
        return False
    with http.service_errors("STAC", url):
        response = session.get(url, headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"}, stream=True)
    try:
        if response.status_code >= 400:
            raise _ProductFailure(http.status_message(response).rstrip(".") + ".")
        return response.status_code == 206
    finally:
        response.close()


def gdal_options(session, url):
    """GDAL configuration for reading ``url`` through /vsicurl/ the way COGs are read best, with the session's
    proxy and User-Agent (rasterio.Env sets them for the calling thread only)."""
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the "folder": one request less per file
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # neighbouring tiles in one request
        "GDAL_HTTP_MULTIRANGE": "YES",  # the tiles of a window in parallel requests
        "VSI_CACHE": "TRUE",
        "VSI_CACHE_SIZE": str(32 << 20),
        "GDAL_HTTP_MAX_RETRY": "5",  # 429/502/503/504, as the session does
        "GDAL_HTTP_RETRY_DELAY": "1",
        "GDAL_HTTP_TIMEOUT": "60",
    }
    parts = urllib.parse.urlsplit(url)
    extension = os.path.splitext(parts.path)[1]
    if extension and not parts.query:  # GDAL compares the end of the whole URL, query string included
        options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = extension  # no probing of .aux.xml, .ovr and friends
    agent = (getattr(session, "headers", None) or {}).get("User-Agent")
    if agent:
        options["GDAL_HTTP_USERAGENT"] = agent
    options.update(_proxy_options(session, url))
    return options


def _proxy_options(session, url):
    scheme = urllib.parse.urlsplit(url).scheme
    proxies = session.proxies_for(url) if hasattr(session, "proxies_for") else dict(session.proxies or {})
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy:
        return {}
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    options = {"GDAL_HTTP_PROXY": f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")}
    if parts.username:
        user = urllib.parse.unquote(parts.username)
        options["GDAL_HTTP_PROXYUSERPWD"] = f"{user}:{urllib.parse.unquote(parts.password or '')}"
    return options


# ---- cutting the window ---------------------------------------------------------------------------------------


def _rasterio():
    try:
        import rasterio
    except ImportError:
        raise MissingDependency("rasterio", "rasterio",
                                "to read the AOI window of band files (SOURCE=stac with AOI)") from None
    return rasterio


def clip(source, dest, area, options, stop, href):
    """Write the ``area`` window of raster ``source`` to ``dest`` (GeoTIFF) through ``dest.part``."""
    rasterio = _rasterio()
    part = dest + ".part"
    try:
        with rasterio.Env(**options):
            with rasterio.open(source) as src:
                window = pixel_window(src, area)
                with rasterio.open(part, "w", **_profile(src, window)) as out:
                    _copy_window(src, out, window, area, stop)
                    out.update_tags(S2_AOI=area.digest, S2_ASSET=href)
    except rasterio.errors.RasterioError as error:
        files.remove(part)
        reason = _gdal_reason(error)
        raise _ProductFailure(f"GDAL could not read the band from {http.host_of(href)} ({reason}).") from None
    except BaseException:
        files.remove(part)
        raise
    os.replace(part, dest)


def pixel_window(src, area):
    """The AOI's bounds in the band's CRS, widened to whole pixels of its grid and kept inside the image."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    left, bottom, right, top = transform_bounds(WGS84, src.crs, *area.bounds, densify_pts=21)
    inverse = ~src.transform
    corners = [inverse * (x, y) for x in (left, right) for y in (bottom, top)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    # Rounding first: an AOI edge on a pixel edge must not gain a pixel from a floating-point crumb.
    col0, col1 = math.floor(round(min(cols), 6)), math.ceil(round(max(cols), 6))
    row0, row1 = math.floor(round(min(rows), 6)), math.ceil(round(max(rows), 6))
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, src.width), min(row1, src.height)
    if col1 <= col0 or row1 <= row0:
        raise _ProductFailure("the area of interest (AOI) does not overlap its image.")
    return Window(col0, row0, col1 - col0, row1 - row0)


def _profile(src, window):
    integer = src.dtypes[0].startswith(("uint", "int"))
    profile = {"driver": "GTiff", "width": int(window.width), "height": int(window.height), "count": src.count,
               "dtype": src.dtypes[0], "crs": src.crs, "transform": src.window_transform(window),
               "nodata": src.nodata if src.nodata is not None else 0, "compress": "deflate",
               "predictor": 2 if integer else 3, "BIGTIFF": "IF_SAFER"}
    if window.width >= 256 and window.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if src.count == 3 and src.dtypes[0] == "uint8":
        profile["photometric"] = "RGB"  # TCI
    return profile


def _copy_window(src, out, window, area, stop):
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom
    from rasterio.windows import Window

    shape = transform_geom(WGS84, src.crs, area.geojson)
    for offset in range(0, int(window.height), STRIP_ROWS):
        if stop.is_set():
            raise Cancelled()
        rows = min(STRIP_ROWS, int(window.height) - offset)
        strip = Window(window.col_off, window.row_off + offset, window.width, rows)
        data = src.read(window=strip)
        outside = geometry_mask([shape], out_shape=(rows, int(window.width)), transform=src.window_transform(strip),
                                all_touched=True)
        data[:, outside] = out.nodata
        out.write(data, window=Window(0, offset, window.width, rows))


def _clip_is_current(dest, digest, href):
    """True when ``dest`` is a clip of ``href`` cut for the same AOI (written complete, since through .part)."""
    if not os.path.exists(dest):
        return False
    rasterio = _rasterio()
    try:
        with rasterio.open(dest) as existing:
            tags = existing.tags()
    except rasterio.errors.RasterioError:
        return False
    return tags.get("S2_AOI") == digest and tags.get("S2_ASSET") == href


def _gdal_reason(error):
    text = " ".join(str(error).split())
    return http.redact(text)[:160].rstrip(".")

"""DLR's Sentinel-2 L3A WASP monthly composites for an area: discovery, report, window reads, mosaics.

The DLR server (``DEFAULT_URL``) is a tree of plain HTML listings::

    <zone>/<latitude band>/<square>/<YYYY>/<PRODUCT>/<PRODUCT>_FRC_<band>.tif
    PRODUCT = SENTINEL2X_<YYYYMM>15-000000-000_L3A_T<tile>_C_V<x>-<y>

What :func:`discover` and :func:`build_mosaics` do, in this order:

1. Discovery, without reading a pixel: the minimal tile cover of the area (``grid.tiles_for_area``), then one
   listing per tile and year (the product folders; the version is read from the names, never assumed) and one
   per product folder needed (its FRC and FLG files with their sizes; FLG files in a ``MASKS/`` subfolder cost
   one more listing). Only links matching the product and file patterns count; a 404 means "not on the
   server". Sizes missing from the listings are asked with HEAD.
2. The report (:data:`REPORT_NAME`, JSON, see :func:`summary_lines` for its text form) is written before any
   pixel is read: tiles, months and bands found or missing, and the bytes a whole-file download would need.
3. Reading: one ``Range: bytes=0-0`` request decides. A 206 means GDAL ``/vsicurl/`` reads only the blocks of
   each file that meet the area; anything else means whole files, fetched once by the transfer engine into a
   cache folder (kept for re-runs) and read locally.
4. Quality: per month, the FLG masks (20 m ones when there are) mosaicked over the area give the shares of no
   data, cloud and snow pixels (bits 0, 1, 2); pixels of the area no tile covers count as no data. Months whose
   share passes ``max_masked`` percent are excluded (listed in the report with their shares), and their bands
   are never read.
5. Per month and band: a mosaic on one grid, in the UTM zone of the tiles that hold most of the area, written
   as ``s2_l3a_<YYYYMM>_<band>.tif`` (or all bands in ``s2_l3a_<YYYYMM>_stack.tif``), clipped to the area: its
   extent is the area's bounds snapped outwards to the pixel grid of the tiles, pixels whose centre lies
   outside the area are nodata (``gdalbuildvrt`` + ``gdalwarp -cutline -crop_to_cutline -tap`` give the same
   pixels where the output grid is the tiles' grid; gdalwarp tests the cutline on source pixels, we on output
   pixels). Tiles of that zone are copied pixel for pixel (nearest neighbour when the grids differ); tiles of
   other zones are warped (nearest neighbour, so values stay original reflectances). Where tiles overlap, the
   later tile id wins wherever it has data (``gdalbuildvrt`` order); tiles are painted backwards into the pixels
   still missing, each read only over the box of those, so an overlap is read once and pixels outside the area
   not at all. The area is processed in strips of rows, so memory does not grow with its size.
6. One true-colour VRT per month (B4, B3, B2) when those bands were asked, with 2-98 % stretch limits in the
   report for styling.
"""

import concurrent.futures
import dataclasses
import datetime as dt
import html
import json
import math
import os
import re
import threading
import urllib.parse
from typing import Optional

from . import files, grid, http
from .callbacks import never_cancelled, no_progress, scaled
from .errors import Cancelled, MissingDependency, ParameterError, S2Error, ServiceError

DEFAULT_URL = "https://download.geoservice.dlr.de/S2_L3A_WASP/files/"
SERVICE = "the DLR L3A server"
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
R1_BANDS = frozenset({"B2", "B3", "B4", "B8"})  # 10 m; the others are 20 m
TRUE_COLOUR = ("B4", "B3", "B2")
FIRST_MONTH = (2017, 1)  # "goes back to 2017" (DLR, 2019); the first month actually served is not confirmed
GERMANY = (3.0, 45.5, 18.0, 56.5)  # lon/lat box around Germany and the tiles that reach into it
NODATA = -10000  # Theia's reflectance nodata, used when a file does not declare one
NO_DATA_BIT, CLOUD_BIT, SNOW_BIT = 1, 2, 4
REPORT_NAME = "s2_l3a_report.json"
CACHE_ENV = "SENTINEL2_L3A_CACHE"
PARALLEL = 4
STRIP_PIXELS = 2_000_000  # pixels per strip of the output: bounds memory to some MB per worker
READ_ATTEMPTS = 3

_PRODUCT = re.compile(r"^SENTINEL2X_(\d{4})(\d{2})\d{2}-\d{6}-\d{3}_L3A_T(\d{2}[C-X][A-Z]{2})_([A-Z])_V(\d+)-(\d+)$")
_ANCHOR = re.compile(r"<a\s[^>]*?href\s*=\s*([\"'])(.*?)\1[^>]*>.*?</a>(.*?)(?=<a\s|\Z)", re.I | re.S)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")


# ---- parameters --------------------------------------------------------------------------------------------


def parse_month(text, parameter):
    """``(year, month)`` from ``YYYY-MM``; ParameterError naming ``parameter`` otherwise."""
    match = re.fullmatch(r"\s*(\d{4})-(\d{2})\s*", text or "")
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ParameterError(parameter, f"'{text}' is not a month written YYYY-MM (e.g. 2021-05).")
    return int(match.group(1)), int(match.group(2))


def month_text(month):
    return f"{month[0]:04d}-{month[1]:02d}"


def check_period(start_text, end_text, today=None):
    """The months from START_MONTH to END_MONTH, both included, within what the service can have."""
    start, end = parse_month(start_text, "START_MONTH"), parse_month(end_text, "END_MONTH")
    today = today or dt.date.today()
    if start > end:
        raise ParameterError("END_MONTH", f"{month_text(end)} is before START_MONTH {month_text(start)}.")
    if start < FIRST_MONTH:
        raise ParameterError("START_MONTH", f"{month_text(start)} is before the DLR L3A composites start "
                                            f"({month_text(FIRST_MONTH)}).")
    if end > (today.year, today.month):
        raise ParameterError("END_MONTH", f"{month_text(end)} is in the future (composites exist up to "
                                          f"{month_text((today.year, today.month))} at most).")
    months, month = [], start
    while month <= end:
        months.append(month)
        month = (month[0] + month[1] // 12, month[1] % 12 + 1)
    return months


def check_bands(bands):
    """The bands in service order, without duplicates; ParameterError on BANDS for none or unknown names."""
    names = [str(band).strip().upper() for band in bands or () if str(band).strip()]
    if not names:
        raise ParameterError("BANDS", "choose at least one band (B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12).")
    unknown = [name for name in names if name not in BANDS]
    if unknown:
        verb = "is not an L3A band" if len(unknown) == 1 else "are not L3A bands"
        raise ParameterError("BANDS", f"{', '.join(unknown)} {verb}; the composites have {', '.join(BANDS)}.")
    return [band for band in BANDS if band in names]


def check_url(url):
    url = (url or "").strip() or DEFAULT_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ParameterError("URL", f"'{http.redact_url(url)}' is not an http(s) URL of the folder that holds "
                                    f"the UTM zone folders.")
    return url if url.endswith("/") else url + "/"


def _aoi_geometry(aoi):
    from osgeo import ogr

    geometry = ogr.CreateGeometryFromWkb(bytes(aoi)) if isinstance(aoi, (bytes, bytearray)) else (
        ogr.CreateGeometryFromWkt(str(aoi)) if not isinstance(aoi, ogr.Geometry) else aoi.Clone())
    if geometry is None or geometry.IsEmpty():
        raise ParameterError("AOI", "the area is empty.")
    geometry.FlattenTo2D()
    if geometry.GetDimension() < 2 or geometry.GetArea() <= 0:
        raise ParameterError("AOI", "the area has no surface; L3A mosaics need a polygon.")
    return geometry


def _check_coverage(geometry):
    lon_min, lon_max, lat_min, lat_max = geometry.GetEnvelope()
    west, south, east, north = GERMANY
    if lon_max < west or lon_min > east or lat_max < south or lat_min > north:
        raise ParameterError("AOI", "the area lies outside Germany, the only area the DLR L3A composites cover "
                                    f"(the area spans {lon_min:.2f}° to {lon_max:.2f}° E, {lat_min:.2f}° to "
                                    f"{lat_max:.2f}° N).")


# ---- listings ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Entry:
    """One link of a listing: ``name`` (decoded, no slash), ``folder``, ``size`` in bytes (None when not shown)
    and whether the size is ``exact`` (digits) or rounded (``240M``)."""

    name: str
    folder: bool
    size: Optional[int] = None
    exact: bool = False


def parse_listing(text, base_url):
    """The entries of the HTML listing of the folder at ``base_url`` (Apache, nginx, lighttpd styles), with the
    sizes shown after the links.

    Only hrefs count (Apache shortens long names in the link text), and only those that name something directly
    in the folder: sort links (``?C=N;O=D``), fragments, the parent folder and links elsewhere are skipped."""
    entries = []
    for match in _ANCHOR.finditer(text):
        href = html.unescape(match.group(2)).strip()
        target = urllib.parse.urlsplit(urllib.parse.urljoin(base_url, href))
        if target.query or target.fragment:
            continue
        full = urllib.parse.urlunsplit(target[:3] + ("", ""))
        rest = full[len(base_url):] if full.startswith(base_url) else ""
        if not rest.strip("/") or "/" in rest.rstrip("/"):
            continue
        folder = rest.endswith("/")
        size, exact = (None, False) if folder else _size_after(match.group(3))
        entries.append(Entry(urllib.parse.unquote(rest.rstrip("/")), folder, size, exact))
    return entries


def _size_after(tail):
    """The size in the text that follows a link: the last token that looks like one (``251658240``, ``240M``)."""
    text = html.unescape(re.sub(r"<[^>]*>", " ", tail))
    for token in reversed(text.split()):
        match = _SIZE.match(token)
        if match:
            unit = match.group(2)
            return int(float(match.group(1)) * 1024 ** " KMGT".index(unit or " ")), not unit
    return None, False


class _Lister:
    """Fetches listings with one session and counts the requests (the report says how many)."""

    def __init__(self, session):
        self.session = session
        self.requests = 0
        self.lock = threading.Lock()

    def _get(self, method, url):
        with self.lock:
            self.requests += 1
        with http.service_errors(SERVICE, url):
            return self.session.request(method, url, timeout=(10, 60), allow_redirects=True)

    def listing(self, url):
        """The entries of the folder at ``url``, None when the server has no such folder (404/410)."""
        response = self._get("GET", url)
        if response.status_code in (404, 410):
            response.close()
            return None
        http.raise_for_service(response, SERVICE)
        if "html" not in (response.headers.get("Content-Type") or "html").lower():
            raise ServiceError(f"{SERVICE} ({http.host_of(url)}) answered {http.redact_url(url)} with something "
                               f"other than a folder listing; check URL.")
        return parse_listing(response.text, url)

    def size(self, url):
        response = self._get("HEAD", url)
        response.close()
        length = response.headers.get("Content-Length")
        return int(length) if response.status_code == 200 and length and length.isdigit() else None


# ---- discovery ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RemoteFile:
    url: str
    size: Optional[int] = None
    exact: bool = False

    @property
    def name(self):
        return urllib.parse.unquote(self.url.rsplit("/", 1)[-1])


@dataclasses.dataclass
class Product:
    """One tile's composite of one month, as listed: FRC files by band, FLG files by resolution (1: 10 m, 2: 20 m)."""

    tile: object
    month: tuple
    name: str
    url: str
    frc: dict = dataclasses.field(default_factory=dict)
    flg: dict = dataclasses.field(default_factory=dict)
    other_versions: list = dataclasses.field(default_factory=list)

    @property
    def version(self):
        return self.name.rsplit("_", 1)[-1]

    def mask(self):
        """The FLG file used for the quality check: 20 m when there is one (a quarter of the bytes)."""
        return self.flg.get(2) or self.flg.get(1)


@dataclasses.dataclass
class Plan:
    """What the server has for an area, a period and bands (see :func:`discover`)."""

    url: str
    aoi: object  # OGR geometry, EPSG:4326 lon/lat
    tiles: list
    months: list
    bands: list
    products: dict  # (tile_id, month) -> Product
    tiles_on_server: set
    requests: int = 0
    notes: list = dataclasses.field(default_factory=list)

    def product(self, tile, month):
        return self.products.get((tile.tile_id, month))

    def needed_files(self, months=None, masks=True, bands=True):
        """The remote files the mosaics of ``months`` (all by default) read."""
        files = []
        for month in months if months is not None else self.months:
            for tile in self.tiles:
                product = self.product(tile, month)
                if product is None:
                    continue
                if masks and product.mask() is not None:
                    files.append(product.mask())
                if bands:
                    files.extend(product.frc[band] for band in self.bands if band in product.frc)
        return files

    def whole_file_bytes(self):
        """(bytes, exact) a whole-file download of every needed file would take."""
        files = self.needed_files()
        return sum(f.size or 0 for f in files), all(f.exact for f in files)

    def missing(self):
        """What was asked and is not on the server, as report entries."""
        found = []
        for tile in self.tiles:
            if tile.tile_id not in self.tiles_on_server:
                found.append(_missing(tile, None, None, "the server has no composites of this tile for these years"))
                continue
            for month in self.months:
                product = self.product(tile, month)
                if product is None:
                    found.append(_missing(tile, month, None, "no composite of this month"))
                    continue
                found.extend(_missing(tile, month, band, f"the product has no FRC_{band} file")
                             for band in self.bands if band not in product.frc)
                if product.mask() is None:
                    found.append(_missing(tile, month, "FLG", "the product has no FLG mask"))
        return found


def _missing(tile, month, band, reason):
    return {"tile_id": tile.tile_id, "month": month_text(month) if month else None, "band": band, "reason": reason}


def discover(aoi, start_month, end_month, bands, url=None, session=None, progress=None, is_cancelled=None,
             log=None, today=None):
    """Validate the inputs, then list the server: returns a :class:`Plan`. No pixel is read.

    ``aoi``: WKB/WKT/OGR geometry in EPSG:4326. Raises :class:`ParameterError` for bad inputs (before any
    request) and when none of the area's tiles is on the server; :class:`ServiceError` when listing fails."""
    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    months, bands, url = check_period(start_month, end_month, today), check_bands(bands), check_url(url)
    geometry = _aoi_geometry(aoi)
    if url == DEFAULT_URL:
        _check_coverage(geometry)
    # Ties between covers go to the lower tile id (zone 32 where zones 32 and 33 overlap), as before ESA's grid
    # was used, so the tiles asked of DLR stay the same; which of the overlapping tiles DLR holds is unconfirmed.
    tiles = grid.tiles_for_area(geometry.ExportToWkb(), minimal=True, is_cancelled=is_cancelled,
                                prefer_own_zone=False).tiles
    if not tiles:
        raise ParameterError("AOI", "no Sentinel-2 tile covers the area.")
    own = session is None
    session = session or http.new_session()
    try:
        lister = _Lister(session)
        plan = Plan(url, geometry, tiles, months, bands, {}, set())
        _list_products(plan, lister, scaled(progress, 0.0, 0.4), is_cancelled)
        _list_product_files(plan, lister, scaled(progress, 0.4, 0.9), is_cancelled)
        _complete_sizes(plan, lister, is_cancelled)
        plan.requests = lister.requests
    finally:
        if own:
            session.close()
    if not plan.tiles_on_server:
        ids = ", ".join(t.tile_id for t in tiles)
        years = f"{months[0][0]}" + (f" to {months[-1][0]}" if months[-1][0] != months[0][0] else "")
        raise ParameterError("AOI", f"the server has no composites of the tiles covering the area ({ids}) in "
                                    f"{years}; the DLR L3A composites cover Germany only.")
    progress(1.0, "")
    for line in summary_lines(plan_report(plan)):
        (log or no_progress)(line)
    return plan


def _parallel(function, items, progress, is_cancelled, message):
    """``function(item)`` for every item on a few threads; results in order; callbacks on this thread only."""
    items = list(items)
    if not items:
        return []
    progress(0.0, message)  # the message once: Processing prints each progress text as a line
    with concurrent.futures.ThreadPoolExecutor(min(PARALLEL, len(items)), thread_name_prefix="s2-l3a") as pool:
        futures = [pool.submit(function, item) for item in items]
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.1)
            if is_cancelled():
                for future in pending:
                    future.cancel()
                raise Cancelled()
            progress((len(futures) - len(pending)) / len(futures))
        return [future.result() for future in futures]


def _tile_year_url(plan, tile, year):
    return f"{plan.url}{tile.tile_id[:2]}/{tile.tile_id[2]}/{tile.tile_id[3:]}/{year:04d}/"


def _list_products(plan, lister, progress, is_cancelled):
    """One listing per tile and year: which months have a product, and its newest version."""
    years = sorted({month[0] for month in plan.months})
    folders = [(tile, year) for tile in plan.tiles for year in years]
    listings = _parallel(lambda item: lister.listing(_tile_year_url(plan, *item)), folders, progress,
                         is_cancelled, "Listing the tiles' product folders")
    for (tile, year), entries in zip(folders, listings):
        if entries is None:
            continue
        plan.tiles_on_server.add(tile.tile_id)
        for month, names in _products_by_month(entries, tile.tile_id, year).items():
            if month in plan.months:
                best = max(names, key=_version_key)
                others = sorted((n for n in names if n != best), key=_version_key)
                url = _tile_year_url(plan, tile, year) + urllib.parse.quote(best) + "/"
                plan.products[(tile.tile_id, month)] = Product(tile, month, best, url, other_versions=others)
                if others:
                    plan.notes.append(f"{tile.tile_id} {month_text(month)}: using {best.rsplit('_', 1)[-1]}, "
                                      f"the newest of {', '.join(n.rsplit('_', 1)[-1] for n in [*others, best])}.")


def _products_by_month(entries, tile_id, year):
    months = {}
    for entry in entries:
        match = _PRODUCT.match(entry.name)
        if match and match.group(3) == tile_id and int(match.group(1)) == year:
            months.setdefault((year, int(match.group(2))), []).append(entry.name)
    return months


def _version_key(name):
    match = _PRODUCT.match(name)
    # 'C' (the complete product) before other letters, then the highest version.
    return match.group(4) == "C", int(match.group(5)), int(match.group(6))


def _list_product_files(plan, lister, progress, is_cancelled):
    products = sorted(plan.products.values(), key=lambda p: (p.month, p.tile.tile_id))
    _parallel(lambda product: _fill_product(product, lister), products, progress, is_cancelled,
              "Listing the products' files")


def _fill_product(product, lister):
    """The FRC and FLG files of a product folder; FLG files may also sit in a MASKS/ subfolder."""
    entries = lister.listing(product.url) or []
    _match_files(product, product.url, entries)
    masks = next((e for e in entries if e.folder and e.name.upper() == "MASKS"), None)
    if not product.flg and masks is not None:
        folder = product.url + urllib.parse.quote(masks.name) + "/"
        _match_files(product, folder, lister.listing(folder) or [])


def _match_files(product, folder_url, entries):
    frc = re.compile(re.escape(product.name) + r"_FRC_(B\d{1,2}A?)\.tif", re.I)
    flg = re.compile(re.escape(product.name) + r"_FLG_R([12])\.tif", re.I)
    for entry in entries:
        if entry.folder:
            continue
        remote = RemoteFile(folder_url + urllib.parse.quote(entry.name), entry.size, entry.exact)
        band, mask = frc.fullmatch(entry.name), flg.fullmatch(entry.name)
        if band and band.group(1).upper() in BANDS:
            product.frc[band.group(1).upper()] = remote
        elif mask:
            product.flg[int(mask.group(1))] = remote


def _complete_sizes(plan, lister, is_cancelled):
    """HEAD the needed files whose listing showed no size (servers with sizes in listings need none)."""
    unknown = [f for f in plan.needed_files() if f.size is None]
    sizes = _parallel(lambda f: lister.size(f.url), unknown, no_progress, is_cancelled, "")
    for remote, size in zip(unknown, sizes):
        remote.size, remote.exact = size, size is not None


# ---- the report ----------------------------------------------------------------------------------------------


def plan_report(plan):
    """The report as it stands after discovery (stage ``discovered``)."""
    total, exact = plan.whole_file_bytes()
    lon_min, lon_max, lat_min, lat_max = plan.aoi.GetEnvelope()
    return {
        "stage": "discovered",
        "service": http.redact_url(plan.url),
        "area_bounds_lonlat": [round(v, 6) for v in (lon_min, lat_min, lon_max, lat_max)],
        "period": [month_text(plan.months[0]), month_text(plan.months[-1])],
        "bands": list(plan.bands),
        "tiles": [{"tile_id": t.tile_id, "epsg": t.epsg, "on_server": t.tile_id in plan.tiles_on_server}
                  for t in plan.tiles],
        "listing_requests": plan.requests,
        "whole_file_bytes": total,
        "whole_file_bytes_exact": exact,
        "months": [_month_entry(plan, month) for month in plan.months],
        "missing": plan.missing(),
        "notes": list(plan.notes),
    }


def _month_entry(plan, month):
    products = {t.tile_id: plan.product(t, month) for t in plan.tiles if plan.product(t, month) is not None}
    complete = len(products) == len(plan.tiles) and all(
        all(b in p.frc for b in plan.bands) for p in products.values())
    return {
        "month": month_text(month),
        "found": "complete" if complete else ("partial" if products else "missing"),
        "products": {tile_id: p.name for tile_id, p in sorted(products.items())},
        "bands": {band: sorted(t for t, p in products.items() if band in p.frc) for band in plan.bands},
        "whole_file_bytes": sum(f.size or 0 for f in plan.needed_files([month])),
    }


def summary_lines(report):
    """The report as a few sentences for the log."""
    tiles = report["tiles"]
    months = report["months"]
    lines = [f"DLR L3A: {len(tiles)} tile(s) ({', '.join(t['tile_id'] for t in tiles)}), {len(months)} month(s) "
             f"({report['period'][0]} to {report['period'][1]}), bands {', '.join(report['bands'])}; "
             f"{report['listing_requests']} listing request(s)."]
    absent = [t["tile_id"] for t in tiles if not t["on_server"]]
    if absent:
        lines.append(f"Not on the server: tile(s) {', '.join(absent)} (the DLR composites cover Germany only).")
    for entry in months:
        lines.append(_month_line(entry))
    gaps = [m for m in report["missing"] if m["band"] is not None]
    if gaps:
        lines.append("Missing files: " + "; ".join(f"{m['tile_id']} {m['month']} {m['band']}" for m in gaps) + ".")
    size = _size_text(report["whole_file_bytes"])
    lines.append(f"Whole files would be {size}{'' if report['whole_file_bytes_exact'] else ' (about)'}.")
    lines.extend(report["notes"])
    return lines


def _month_line(entry):
    text = f"{entry['month']}: " + {"complete": "all tiles and bands", "partial": "partial",
                                    "missing": "no composite"}[entry["found"]]
    if entry["found"] == "partial":
        text += f" ({', '.join(entry['products']) or 'no tile'})"
    masked = entry.get("masked")
    if masked is not None:
        text += (f"; masked {masked['share']:.1%} (cloud {masked['cloud']:.1%}, snow {masked['snow']:.1%}, "
                 f"no data {masked['no_data']:.1%})")
    status = entry.get("status")
    if status:
        text += {"written": "; written", "excluded": "; excluded (above MAX_MASKED)", "failed": "; failed",
                 "missing": ""}.get(status, f"; {status}")
    return text + "."


def _size_text(count):
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def write_report(path, report):
    """Write the JSON report through a temporary name."""
    part = path + ".part"
    with open(part, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2)
        stream.write("\n")
    os.replace(part, path)


# ---- reading remote files ------------------------------------------------------------------------------------


def _rasterio():
    try:
        import rasterio
    except ImportError:
        raise MissingDependency("rasterio", "rasterio", "to read the L3A composites (Debian/Ubuntu: "
                                                        "apt install python3-rasterio)") from None
    return rasterio


def gdal_options(session, url):
    """GDAL configuration for /vsicurl/ reads of ``url``: no folder listing on open, only .tif probed, the
    session's User-Agent and proxy, timeouts and retries (GDAL retries 429/5xx and resets itself)."""
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MAX_RETRY": "3",
        "GDAL_HTTP_RETRY_DELAY": "0.5",
        "GDAL_HTTP_TIMEOUT": "60",
        "GDAL_HTTP_CONNECTTIMEOUT": "10",
        "GDAL_HTTP_USERAGENT": session.headers.get("User-Agent", ""),
    }
    explicit = getattr(session, "explicit_proxies", None)
    if explicit:
        proxies = session.proxies_for(url)
        proxy = proxies.get(urllib.parse.urlsplit(url).scheme) if proxies else None
        # An empty proxy makes curl go direct: the host is in QGIS's no-proxy list.
        options["GDAL_HTTP_PROXY"] = _proxy_address(proxy) if proxy else ""
        credentials = _proxy_credentials(proxy) if proxy else None
        if credentials:
            options["GDAL_HTTP_PROXYUSERPWD"] = credentials
    return options


def _proxy_address(proxy):
    parts = urllib.parse.urlsplit(proxy)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _proxy_credentials(proxy):
    parts = urllib.parse.urlsplit(proxy)
    if not parts.username:
        return None
    return f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"


def supports_ranges(session, remote_files):
    """One ``Range: bytes=0-0`` request: True when the server answers 206 (partial content)."""
    error = None
    for remote in remote_files[:3]:
        try:
            with http.service_errors(SERVICE, remote.url):
                response = session.get(remote.url, headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"},
                                       stream=True, timeout=(10, 60))
            response.close()
            if response.status_code in (200, 206):
                return response.status_code == 206
            error = ServiceError(http.status_message(response, SERVICE))
        except ServiceError as failure:
            error = failure
    raise error or ServiceError(f"{SERVICE} lists no file to read.")


class _Sources:
    """Where GDAL reads each remote file from: ``/vsicurl/<url>`` or the file in the cache folder."""

    def __init__(self, plan, ranges, cache_folder):
        self.plan, self.ranges, self.cache_folder = plan, ranges, cache_folder
        self.failed = {}  # url -> reason

    def path(self, remote):
        if self.ranges:
            return "/vsicurl/" + remote.url
        return self.cached(remote)

    def cached(self, remote):
        relative = urllib.parse.unquote(remote.url[len(self.plan.url):]) if remote.url.startswith(
            self.plan.url) else remote.name
        return os.path.join(self.cache_folder, *[part for part in relative.split("/") if part not in ("", "..")])

    def fetch(self, remotes, session, progress, is_cancelled, log):
        """Whole files into the cache (done once: complete files are skipped on re-runs)."""
        from .transfer import Transfer, download_all

        transfers = [Transfer(r.url, self.cached(r), r.size if r.exact else None, name=r.name) for r in remotes
                     if r.url not in self.failed]
        report = download_all(transfers, session, PARALLEL, progress, is_cancelled, log)
        for outcome in report.failed:
            self.failed[outcome.transfer.url] = outcome.reason
        return report


def _open(rasterio, path):
    """Open a file, retrying network failures (GDAL does not retry a dropped connection by itself)."""
    return _retrying(lambda: rasterio.open(path), path)


def _retrying(function, path):
    import time

    from rasterio.errors import RasterioError

    for attempt in range(READ_ATTEMPTS):
        try:
            return function()
        except (RasterioError, OSError) as error:  # RasterioIOError is an OSError
            text = str(error)
            if attempt + 1 == READ_ATTEMPTS or "404" in text or "No such file" in text:
                name = path.rsplit("/", 1)[-1]
                raise ServiceError(f"Could not read {name} from {_where(path)}: {text.splitlines()[0][:200]}") \
                    from None
            if path.startswith("/vsicurl/"):
                from osgeo import gdal

                gdal.VSICurlPartialClearCache(path)  # GDAL remembers a failed request as "no such file"
            time.sleep(0.5 * 2 ** attempt)


def _where(path):
    return http.host_of(path[len("/vsicurl/"):]) if path.startswith("/vsicurl/") else "the cache folder"


# ---- grids and mosaics ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Grid:
    """An output pixel grid: ``x0``/``y1`` the upper-left corner, ``res`` the square pixel size."""

    epsg: int
    x0: float
    y1: float
    res: float
    width: int
    height: int

    @property
    def transform(self):
        from affine import Affine

        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y1)

    @property
    def bounds(self):
        return self.x0, self.y1 - self.height * self.res, self.x0 + self.width * self.res, self.y1

    def strips(self):
        """Sub-grids of whole rows covering this grid; rows per strip a multiple of 256 (the output blocks)."""
        rows = max(256, STRIP_PIXELS // max(self.width, 1) // 256 * 256)
        for top in range(0, self.height, rows):
            count = min(rows, self.height - top)
            yield top, dataclasses.replace(self, y1=self.y1 - top * self.res, height=count)


def snapped_grid(epsg, bounds, res, origin):
    """The smallest grid of pixel size ``res`` aligned on ``origin`` (x, y) that contains ``bounds``."""
    xmin, ymin, xmax, ymax = bounds
    ox, oy = origin
    eps = 1e-6  # a bound on a grid line stays there despite float noise
    x0 = ox + math.floor((xmin - ox) / res + eps) * res
    x1 = ox + math.ceil((xmax - ox) / res - eps) * res
    y0 = oy + math.floor((ymin - oy) / res + eps) * res
    y1 = oy + math.ceil((ymax - oy) / res - eps) * res
    return Grid(epsg, x0, y1, res, max(int(round((x1 - x0) / res)), 1), max(int(round((y1 - y0) / res)), 1))


def aoi_in(geometry_lonlat, epsg):
    """The area in a UTM CRS, densified first so its edges keep their shape."""
    from osgeo import osr

    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromEPSG(4326)
    target.ImportFromEPSG(epsg)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geometry = geometry_lonlat.Clone()
    geometry.Segmentize(0.001)
    geometry.Transform(osr.CoordinateTransformation(source, target))
    return geometry


def dominant_zone(plan):
    """The zone of the tiles (with products) that holds the largest share of the area; its EPSG code."""
    from osgeo import ogr

    candidates = {t.zone: t.epsg for t in plan.tiles if any(k[0] == t.tile_id for k in plan.products)}
    if not candidates:
        candidates = {t.zone: t.epsg for t in plan.tiles}

    def share(zone):
        west = grid.central_meridian(zone) - 3.0
        strip = ogr.CreateGeometryFromWkt(f"POLYGON(({west} -90,{west + 6} -90,{west + 6} 90,{west} 90,{west} -90))")
        piece = plan.aoi.Intersection(strip)
        return piece.GetArea() if piece is not None else 0.0

    zone = max(sorted(candidates), key=share)
    return candidates[zone]


def _pixel_grid(rasterio, path):
    """(epsg, pixel size, origin) of a file: the grid outputs align on."""
    with _open(rasterio, path) as dataset:
        transform = dataset.transform
        return dataset.crs.to_epsg(), transform.a, (transform.c % transform.a, transform.f % transform.a)


def _valid_frc(nodata):
    return lambda values: values != nodata


def _valid_flg(values):
    return (values & NO_DATA_BIT) == 0


def mosaic(datasets, target, fill, valid, wanted, dtype, src_nodata="file"):
    """The datasets (in painting order: a later one wins where it has valid data) on ``target``, only where
    ``wanted`` (a boolean array; ``fill`` elsewhere).

    Painted backwards, each dataset only into pixels still missing, and read only over the box of those: the
    result is the same, and tile overlaps and parts outside the area cost no bytes. ``src_nodata``: the
    sources' nodata value, ``"file"`` for each file's own, None for none (FLG masks: no data is a bit)."""
    import numpy as np

    out = np.full((target.height, target.width), fill, dtype=dtype)
    missing = wanted.copy()
    for dataset in reversed(datasets):
        box = _box(missing)
        if box is None:
            break
        r0, r1, c0, c1 = box
        sub = dataclasses.replace(target, x0=target.x0 + c0 * target.res, y1=target.y1 - r0 * target.res,
                                  width=c1 - c0, height=r1 - r0)
        nodata = src_nodata if src_nodata != "file" else (dataset.nodata if dataset.nodata is not None else fill)
        piece = onto_grid(dataset, sub, fill, nodata)
        if piece is None:
            continue
        region, still = out[r0:r1, c0:c1], missing[r0:r1, c0:c1]  # views
        take = still & valid(piece)
        region[take] = piece[take]
        still[take] = False
    return out


def _box(mask):
    """(row0, row1, col0, col1) of the True pixels, None when there are none."""
    import numpy as np

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def onto_grid(dataset, target, fill, src_nodata):
    """The part of ``dataset`` on ``target`` (``fill`` elsewhere), read as a window; None when they do not meet.

    Same CRS and no rotation: every target pixel takes the source pixel under its centre (exact copy on equal
    grids, nearest neighbour otherwise). Other CRS: GDAL's warper, nearest neighbour."""
    transform = dataset.transform
    if dataset.crs.to_epsg() == target.epsg and transform.b == 0 and transform.d == 0:
        return _copied(dataset, target, fill, src_nodata)
    return _warped(dataset, target, fill, src_nodata)


def _copied(dataset, target, fill, src_nodata):
    import numpy as np
    from rasterio.windows import Window

    t = dataset.transform
    cols = np.floor((target.x0 + (np.arange(target.width) + 0.5) * target.res - t.c) / t.a).astype(np.int64)
    rows = np.floor((target.y1 - (np.arange(target.height) + 0.5) * target.res - t.f) / t.e).astype(np.int64)
    col_in = np.nonzero((cols >= 0) & (cols < dataset.width))[0]
    row_in = np.nonzero((rows >= 0) & (rows < dataset.height))[0]
    if not len(col_in) or not len(row_in):
        return None
    c0, c1, r0, r1 = cols[col_in[0]], cols[col_in[-1]], rows[row_in[0]], rows[row_in[-1]]
    window = Window(int(c0), int(r0), int(c1 - c0 + 1), int(r1 - r0 + 1))
    data = _retrying(lambda: dataset.read(1, window=window), dataset.name)
    if src_nodata is not None and src_nodata != fill:
        data[data == src_nodata] = fill
    piece = np.full((target.height, target.width), fill, dtype=data.dtype)
    piece[row_in[0]:row_in[-1] + 1, col_in[0]:col_in[-1] + 1] = data[np.ix_(rows[row_in] - r0, cols[col_in] - c0)]
    return piece


def _warped(dataset, target, fill, src_nodata):
    import numpy as np
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    bounds = transform_bounds(f"EPSG:{target.epsg}", dataset.crs, *target.bounds, densify_pts=21)
    window = from_bounds(*bounds, transform=dataset.transform)
    col0, row0 = max(int(math.floor(window.col_off)) - 2, 0), max(int(math.floor(window.row_off)) - 2, 0)
    col1 = min(int(math.ceil(window.col_off + window.width)) + 2, dataset.width)
    row1 = min(int(math.ceil(window.row_off + window.height)) + 2, dataset.height)
    if col1 <= col0 or row1 <= row0:
        return None
    window = Window(col0, row0, col1 - col0, row1 - row0)
    data = _retrying(lambda: dataset.read(1, window=window), dataset.name)
    piece = np.full((target.height, target.width), fill, dtype=data.dtype)
    reproject(data, piece, src_transform=dataset.window_transform(window), src_crs=dataset.crs,
              src_nodata=src_nodata, dst_transform=target.transform, dst_crs=f"EPSG:{target.epsg}",
              dst_nodata=fill, resampling=Resampling.nearest)
    return piece


def inside_mask(aoi_target, target):
    """True for pixels whose centre lies inside the area (GDAL's rasterizer; rasterio's warns spuriously about
    a missing geotransform when several threads rasterize at once)."""
    from osgeo import gdal, ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(target.epsg)
    raster = gdal.GetDriverByName("MEM").Create("", target.width, target.height, 1, gdal.GDT_Byte)
    raster.SetGeoTransform(target.transform.to_gdal())
    raster.SetProjection(srs.ExportToWkt())
    source = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = source.CreateLayer("aoi", srs, ogr.wkbUnknown)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(aoi_target)
    layer.CreateFeature(feature)
    gdal.RasterizeLayer(raster, [1], layer, burn_values=[1])
    return raster.ReadAsArray().astype(bool)


# ---- the jobs ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Layer:
    """A layer to show: ``path``, ``name``, and per band of the file (in order) its 2-98 % stretch limits."""

    path: str
    name: str
    month: str
    bands: list
    stretch: list


@dataclasses.dataclass
class Result:
    report: dict
    report_path: str
    files: list
    layers: list
    excluded: list
    failed: list


class _Run:
    """State shared by the jobs of one :func:`build_mosaics` call."""

    def __init__(self, plan, sources, options, aoi_target, grids, output_folder, stop):
        self.plan, self.sources, self.options = plan, sources, options
        self.aoi_target, self.grids, self.output_folder, self.stop = aoi_target, grids, output_folder, stop
        self.epsg = None

    def check(self):
        if self.stop.is_set():
            raise Cancelled()

    def open_all(self, rasterio, remotes, opened):
        """Open the files (in painting order) into the list ``opened``, which the caller closes, also when this
        fails half-way; files that failed to download are left out."""
        for remote in remotes:
            if remote.url not in self.sources.failed:
                self.check()
                opened.append(_open(rasterio, self.sources.path(remote)))
        return opened


def _close(datasets):
    for dataset in datasets:
        dataset.close()


def _quality_job(run, month):
    """Counts of area pixels that are no data, cloud, snow (any of them: masked), from the FLG masks."""
    import numpy as np

    rasterio = _rasterio()
    remotes = [p.mask() for p in _products(run.plan, month) if p.mask() is not None]
    if not remotes:
        return None
    counts = {"pixels": 0, "no_data": 0, "cloud": 0, "snow": 0, "masked": 0}
    datasets = []
    with rasterio.Env(**run.options):
        try:
            run.open_all(rasterio, remotes, datasets)
            for _, strip in run.grids["flg"].strips():
                run.check()
                inside = inside_mask(run.aoi_target, strip)
                flags = mosaic(datasets, strip, NO_DATA_BIT, _valid_flg, inside, "uint8", None)
                values = flags[inside]
                counts["pixels"] += int(values.size)
                for key, bit in (("no_data", NO_DATA_BIT), ("cloud", CLOUD_BIT), ("snow", SNOW_BIT)):
                    counts[key] += int(np.count_nonzero(values & bit))
                counts["masked"] += int(np.count_nonzero(values & (NO_DATA_BIT | CLOUD_BIT | SNOW_BIT)))
        finally:
            _close(datasets)
    return counts


def _products(plan, month):
    return [p for p in (plan.product(t, month) for t in sorted(plan.tiles, key=lambda t: t.tile_id)) if p]


def _band_job(run, month, bands, path):
    """Mosaic ``bands`` of ``month`` into one file at ``path`` (one band, or the stack): returns per band its
    stretch limits, or raises :class:`ServiceError`."""
    rasterio = _rasterio()
    products = _products(run.plan, month)
    target = run.grids["stack"] if len(bands) > 1 else run.grids[bands[0]]
    inputs = {band: [] for band in bands}
    with rasterio.Env(**run.options):
        try:
            for band, datasets in inputs.items():
                run.open_all(rasterio, [p.frc[band] for p in products if band in p.frc], datasets)
            return _write_mosaic(run, inputs, target, path, month)
        finally:
            for datasets in inputs.values():
                _close(datasets)


def _write_mosaic(run, inputs, target, path, month):
    """Write the mosaic through ``<path>.part``. Read failures arrive as ServiceError; what else GDAL raises
    here comes from writing (a full disk...): that stops the run with one sentence."""
    rasterio = _rasterio()
    from rasterio.errors import RasterioError
    first = next((d[0] for d in inputs.values() if d), None)
    dtype = first.dtypes[0] if first is not None else "int16"
    nodata = first.nodata if first is not None and first.nodata is not None else NODATA
    histograms = {band: _Histogram(dtype) for band in inputs}
    profile = {"driver": "GTiff", "width": target.width, "height": target.height, "count": len(inputs),
               "dtype": dtype, "nodata": nodata, "crs": f"EPSG:{target.epsg}", "transform": target.transform,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "predictor": 2,
               "BIGTIFF": "IF_SAFER"}
    part = path + ".part"
    try:
        with rasterio.open(part, "w", **profile) as output:
            for index, band in enumerate(inputs, start=1):
                output.set_band_description(index, band)
            output.update_tags(L3A_MONTH=month_text(month), L3A_PRODUCTS=",".join(
                p.name for p in _products(run.plan, month)), L3A_SERVICE=http.redact_url(run.plan.url))
            _write_strips(run, inputs, target, output, nodata, histograms)
        os.replace(part, path)
    except (OSError, RasterioError) as error:
        raise ParameterError("OUTPUT_FOLDER", f"could not write {os.path.basename(path)} ({error}).") from None
    finally:
        if os.path.exists(part):
            os.remove(part)
    return [histograms[band].limits() for band in inputs]


def _write_strips(run, inputs, target, output, nodata, histograms):
    from rasterio.windows import Window

    for top, strip in target.strips():
        inside = inside_mask(run.aoi_target, strip)
        for index, (band, datasets) in enumerate(inputs.items(), start=1):
            run.check()
            values = mosaic(datasets, strip, nodata, _valid_frc(nodata), inside, output.dtypes[0])
            histograms[band].add(values[values != nodata])
            output.write(values, index, window=Window(0, top, strip.width, strip.height))


class _Histogram:
    """Exact 2 % and 98 % values of 8/16-bit integer pixels without keeping them (for the layer stretch)."""

    def __init__(self, dtype):
        import numpy as np

        info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) and np.dtype(dtype).itemsize <= 2 \
            else None
        self.offset = int(info.min) if info else 0
        self.counts = np.zeros(int(info.max) - int(info.min) + 1, dtype=np.int64) if info else None

    def add(self, values):
        import numpy as np

        if self.counts is None:
            return
        values = values.ravel()
        for start in range(0, values.size, 1 << 18):  # bincount makes an int64 copy: keep it small
            chunk = values[start:start + (1 << 18)].astype(np.int32) - self.offset
            self.counts += np.bincount(chunk, minlength=len(self.counts))

    def limits(self, low=0.02, high=0.98):
        import numpy as np

        if self.counts is None or not self.counts.sum():
            return None
        cumulative = np.cumsum(self.counts) / self.counts.sum()
        return [int(np.searchsorted(cumulative, low)) + self.offset, int(np.searchsorted(cumulative, high))
                + self.offset]


# ---- the whole run -------------------------------------------------------------------------------------------


def build_mosaics(plan, output_folder, session, max_masked=100.0, stack=False, cache_folder=None,
                  progress=None, is_cancelled=None, log=None):
    """Write the report, then the monthly mosaics of ``plan`` into ``output_folder``; returns a :class:`Result`.

    ``max_masked``: months whose share of no-data/cloud/snow pixels over the area is above this percentage are
    excluded. ``stack``: one multi-band file per month instead of one file per band. ``cache_folder``: where
    whole files go when the server does not support Range (default ``$SENTINEL2_L3A_CACHE`` or
    ``<output_folder>/l3a_cache``)."""
    progress, is_cancelled, log = progress or no_progress, is_cancelled or never_cancelled, log or no_progress
    if not 0 <= float(max_masked) <= 100:
        raise ParameterError("MAX_MASKED", f"{max_masked} is not a percentage between 0 and 100.")
    files.writable_folder(output_folder)
    report = plan_report(plan)
    report_path = os.path.join(output_folder, REPORT_NAME)
    write_report(report_path, report)
    if not plan.products:
        raise ServiceError(f"{SERVICE} ({http.host_of(plan.url)}) has no composite of the area's tiles from "
                           f"{report['period'][0]} to {report['period'][1]}; see {report_path}.")
    cache_folder = cache_folder or os.environ.get(CACHE_ENV) or os.path.join(output_folder, "l3a_cache")
    sources = _Sources(plan, supports_ranges(session, plan.needed_files()), cache_folder)
    report["read_mode"] = "range" if sources.ranges else "whole files"
    report["cache_folder"] = None if sources.ranges else cache_folder
    log("Reading only the area of each file (the server supports Range requests)." if sources.ranges else
        f"Reading whole files (the server ignores Range requests); they are kept in {cache_folder} for re-runs.")
    run = _prepare(plan, sources, session, output_folder, scaled(progress, 0.0, 0.2), is_cancelled, log)
    months = _quality(run, report, max_masked, scaled(progress, 0.2, 0.35), is_cancelled, log)
    result = _bands(run, report, months, stack, session, scaled(progress, 0.35, 1.0), is_cancelled, log)
    result.report_path = report_path
    report["grids"] = {key: dataclasses.asdict(run.grids[key]) for key in ("R1", "R2", "stack", "flg")
                       if run.grids.get(key) is not None}
    report["stage"] = "complete"
    write_report(report_path, report)
    return result


def _prepare(plan, sources, session, output_folder, progress, is_cancelled, log):
    """The area in the output CRS and the FLG grid. In whole-file mode only the FLG masks are fetched now, so
    months excluded by the quality check never cost their bands."""
    if not sources.ranges:
        sources.fetch(plan.needed_files(bands=False), session, progress, is_cancelled, log)
    epsg = dominant_zone(plan)
    run = _Run(plan, sources, gdal_options(session, plan.url), aoi_in(plan.aoi, epsg), {}, output_folder,
               threading.Event())
    run.epsg = epsg  # the output CRS
    masks = [f for f in _preferred(plan, plan.months, epsg, lambda p: [p.mask()]) if f.url not in sources.failed]
    run.grids["flg"] = _grid_of(run, masks[0]) if masks else None
    return run


def _preferred(plan, months, epsg, files_of):
    """Files of ``months`` from tiles of the output zone first (their grid is the output grid)."""
    products = sorted((p for p in plan.products.values() if p.month in months),
                      key=lambda p: (p.tile.epsg != epsg, p.tile.tile_id, p.month))
    return [f for p in products for f in files_of(p) if f is not None]


def _grid_of(run, remote):
    """The output grid with the pixel size and alignment of ``remote``'s file."""
    rasterio = _rasterio()
    xmin, xmax, ymin, ymax = run.aoi_target.GetEnvelope()
    with rasterio.Env(**run.options):
        _, res, origin = _pixel_grid(rasterio, run.sources.path(remote))
    return snapped_grid(run.epsg, (xmin, ymin, xmax, ymax), res, origin)


def _band_grids(run, months):
    """Grids of the 10 m bands, the 20 m bands and the stack (the finest of the bands asked)."""
    plan = run.plan
    for key, kind in (("R1", True), ("R2", False)):
        files = _preferred(plan, months, run.epsg, lambda p, kind=kind: [
            p.frc[b] for b in plan.bands if (b in R1_BANDS) == kind and b in p.frc])
        files = [f for f in files if f.url not in run.sources.failed]
        run.grids[key] = _grid_of(run, files[0]) if files else None
    for band in plan.bands:
        run.grids[band] = run.grids["R1" if band in R1_BANDS else "R2"]
    run.grids["stack"] = run.grids["R1"] or run.grids["R2"]


def _supervise(run, jobs, progress, is_cancelled, message):
    """Run ``jobs`` ({key: callable}) on a few threads; returns {key: result or ServiceError}. A read failure
    (ServiceError) fails its job only; anything else stops every job and is raised."""
    if not jobs:
        return {}
    results = {}
    progress(0.0, message)
    pool = concurrent.futures.ThreadPoolExecutor(min(PARALLEL, len(jobs)), thread_name_prefix="s2-l3a")
    futures = {pool.submit(job): key for key, job in jobs.items()}
    try:
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.1)
            if is_cancelled():
                raise Cancelled()
            for future in done:
                try:
                    results[futures[future]] = future.result()
                except ServiceError as error:
                    results[futures[future]] = error
            progress(len(results) / len(jobs))
    except BaseException:
        run.stop.set()  # the other jobs end at their next check; their .part files are removed
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _quality(run, report, max_masked, progress, is_cancelled, log):
    """Shares of masked pixels per month; returns the months to build."""
    plan = run.plan
    months = [m for m in plan.months if _products(plan, m)]
    jobs = {m: (lambda m=m: _quality_job(run, m)) for m in months} if run.grids.get("flg") else {}
    counts = _supervise(run, jobs, progress, is_cancelled, "Checking the FLG masks")
    keep = []
    for month in months:
        entry = _entry(report, month)
        found = counts.get(month)
        if isinstance(found, S2Error):
            entry["masked"] = None
            entry["notes"] = [f"FLG mask unreadable ({found}); month kept unchecked."]
        elif found and found["pixels"]:
            entry["masked"] = {key: round(found[key] / found["pixels"], 6) for key in ("no_data", "cloud", "snow")}
            entry["masked"]["share"] = round(found["masked"] / found["pixels"], 6)
        else:
            entry["masked"] = None
        share = entry["masked"]["share"] if entry["masked"] else None
        if share is not None and share * 100 > max_masked:
            entry["status"] = "excluded"
            log(f"{month_text(month)}: {share:.1%} of the area is no data, cloud or snow, above MAX_MASKED "
                f"({max_masked:g} %): excluded.")
        else:
            keep.append(month)
    report["excluded"] = [{"month": e["month"], "masked_share": e["masked"]["share"]}
                          for e in report["months"] if e.get("status") == "excluded"]
    return keep


def _entry(report, month):
    return next(e for e in report["months"] if e["month"] == month_text(month))


def _bands(run, report, months, stack, session, progress, is_cancelled, log):
    plan = run.plan
    if not run.sources.ranges:
        run.sources.fetch(plan.needed_files(months, masks=False), session, scaled(progress, 0.0, 0.6),
                          is_cancelled, log)
        progress = scaled(progress, 0.6, 1.0)
    _band_grids(run, months)
    jobs, paths = {}, {}
    for month in months:
        for bands in [tuple(plan.bands)] if stack else [(band,) for band in plan.bands]:
            readable = [p.frc[b] for p in _products(plan, month) for b in bands if b in p.frc]
            if run.grids.get("stack" if stack else bands[0]) is None or all(
                    r.url in run.sources.failed for r in readable):
                continue  # nothing to mosaic (a failed download is reported with its month)
            key = (month, bands)
            paths[key] = os.path.join(run.output_folder, f"s2_l3a_{month[0]:04d}{month[1]:02d}_"
                                                         f"{'stack' if stack else bands[0]}.tif")
            jobs[key] = (lambda m=month, b=bands, p=paths[key]: _band_job(run, m, b, p))
    done = _supervise(run, jobs, progress, is_cancelled, "Mosaicking")
    return _collect(run, report, months, paths, done, log)


def _collect(run, report, months, paths, done, log):
    files, layers, failed = [], [], []
    for month in run.plan.months:
        entry = _entry(report, month)
        keys = [key for key in paths if key[0] == month]
        written = {key: done[key] for key in keys if not isinstance(done.get(key), S2Error)}
        errors = [str(done[key]) for key in keys if isinstance(done.get(key), S2Error)]
        errors += _download_failures(run, month)
        entry["files"] = [os.path.basename(paths[key]) for key in written]
        if errors:
            entry["errors"] = errors
            failed.extend(f"{month_text(month)}: {error}" for error in errors)
            for error in errors:
                log(f"{month_text(month)}: {error}")
        if month in months:
            entry["status"] = "written" if written and not errors else ("failed" if errors else "missing")
        entry.setdefault("status", "missing")
        stretch = {}
        for key, limits in written.items():
            files.append(paths[key])
            stretch.update(zip(key[1], limits))
        entry["stretch"] = stretch
        layers.extend(_month_layers(run, month, {k: paths[k] for k in written}, stretch))
    return Result(report, "", files, layers, [e["month"] for e in report["months"] if e.get("status") == "excluded"],
                  failed)


def _download_failures(run, month):
    """Why files of ``month`` are missing from the mosaics although listed (whole-file mode only)."""
    remotes = [r for p in _products(run.plan, month) for r in [p.mask(), *p.frc.values()] if r is not None]
    return [run.sources.failed[r.url] for r in remotes if r.url in run.sources.failed]


def _month_layers(run, month, written, stretch):
    """The true-colour VRT of a month when B4, B3 and B2 were written, else each written file as it is."""
    label = month_text(month)
    by_band = {band: (path, bands) for (_, bands), path in written.items() for band in bands}
    if all(band in by_band for band in TRUE_COLOUR):
        path = os.path.join(run.output_folder, f"s2_l3a_{month[0]:04d}{month[1]:02d}_truecolour.vrt")
        stack_path, stack_bands = by_band[TRUE_COLOUR[0]]
        if len(stack_bands) > 1:  # three bands of the stack
            _true_colour_vrt(path, [stack_path], [stack_bands.index(b) + 1 for b in TRUE_COLOUR])
        else:
            _true_colour_vrt(path, [by_band[band][0] for band in TRUE_COLOUR], None)
        return [Layer(path, f"L3A {label} true colour", label, list(TRUE_COLOUR),
                      [stretch.get(band) for band in TRUE_COLOUR])]
    return [Layer(path, f"L3A {label} {'stack' if len(bands) > 1 else bands[0]}", label, list(bands),
                  [stretch.get(band) for band in bands]) for (_, bands), path in written.items()]


def _true_colour_vrt(path, files, band_list):
    """A VRT of B4, B3, B2 (three files, or three bands of the stack) with paths relative to it, written
    through a temporary name."""
    from osgeo import gdal

    part = path + ".part"
    options = gdal.BuildVRTOptions(bandList=band_list) if band_list else gdal.BuildVRTOptions(separate=True)
    vrt = gdal.BuildVRT(part, files, options=options)
    if vrt is None:
        raise ParameterError("OUTPUT_FOLDER", f"GDAL could not write {os.path.basename(path)}.")
    for index, band in enumerate(TRUE_COLOUR, start=1):
        vrt.GetRasterBand(index).SetDescription(band)
    vrt = None  # closing writes the file
    os.replace(part, path)

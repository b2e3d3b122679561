"""MAJA L2A time series for one tile and period, two ways: CNES's ready-made products from GEODES, or a MAJA
installed on the user's machine run over local L1C products the way StartMaja runs it.

PEPS ran MAJA on demand until its end of service (2026-03-25); GEODES now distributes the THEIA MAJA products
(collection ``THEIA_REFLECTANCE_SENTINEL2_L2A``, downloads with an ``X-API-Key`` header) and no on-demand
processing is known to replace it (reference/services.md §5).

Facts this module relies on (reference/processors.md §2):
- ``maja -w <work> --input <dir> --output <dir> --mode L2INIT|L2NOMINAL|L2BACKWARD -ucs <userconf> --TileId <tile>
  --loglevel PROGRESS`` is StartMaja's call; MAJA needs ``MAJA_INSTALL_DIR`` (its launcher environment sets it);
- the input folder holds the L1C ``.SAFE`` product(s), the GIPPs of each satellite
  (``S2x_*_GIP_{CKEXTL,CKQLTL,L2COMM,L2SMAC,L2SITE}_*.EEF`` and ``{L2ALBD,L2DIFT,L2DIRT,L2TOCR,L2WATV}`` as ``.HDR``
  with ``.DBL.DIR``), the DTM ``S2__TEST_AUX_REFDE2_<tile>_<version>.HDR`` with its ``.DBL.DIR``, and in nominal
  mode the previous L2A product;
- the time series (StartMaja ``create_workplans``): NOMINAL when an L2 of the tile exists less than ``max_l2_diff``
  before the date (30 days before 2017-07-01, 15 after), else BACKWARD over the date and the next 7 when 8 are
  available, else INIT; dates with an L2 already are skipped;
- the output is a MUSCATE product ``SENTINEL2A_20160928-105637-665_L2A_T31UDS_C_V1-0`` (``*_FRE_B*.tif``,
  ``MASKS/*_CLM_R1.tif``, ``*_MTD_ALL.xml``); above 90 % cloud MAJA writes only the metadata; too much no-data
  renames the folder ``L2NOTV_*``. There is no percentage in MAJA's output: progress is per date, with phases.

MAJA runs in its own process group (``start_new_session``), so a cancel stops it and every process it started
within two seconds. Each run works in a hidden folder inside the output folder and its product is renamed into
place when complete; each date has its log ``<L1C name>.maja.log`` in the output folder.
"""

import collections
import dataclasses
import datetime as dt
import glob
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

from . import catalogs, files, grid, http, processes, safe, transfer
from .callbacks import check_cancelled, never_cancelled, no_progress, scaled
from .errors import Cancelled, ParameterError, S2Error, ServiceError
from .footprints import merge, parse_product_name
from .query import Query

MISSION_START = dt.date(2015, 6, 23)  # Sentinel-2A launch
ANGLES_COMPLETE = dt.date(2016, 4, 1)  # earlier L1C products may lack the angles MAJA needs (CNES/MAJA README)
L2_DIFF_CHANGE = dt.date(2017, 7, 1)  # StartMaja's max_l2_diff: 30 days before, 15 days after
REVISIT_DAYS = 5
NBACKWARD = 8
INIT, NOMINAL, BACKWARD = "L2INIT", "L2NOMINAL", "L2BACKWARD"
MODE_WORDS = {INIT: "initialisation", NOMINAL: "nominal", BACKWARD: "backward initialisation"}

GEODES_URL = "https://geodes-portal.cnes.fr/api/stac"
GEODES_URL_VARIABLE = "SENTINEL2_GEODES_URL"
GEODES_HOSTS = ("geodes-portal.cnes.fr",)  # where the API key may go, besides the STAC root's own host
GEODES_PARALLEL = 2
INSTALL_URL = "https://logiciels.cnes.fr/en/content/maja"
GIPP_URL = "http://osr-cesbio.ups-tlse.fr/gitlab_cesbio/kettigp/maja-gipp"
SETTING_KEY = "sentinel2_pipeline/maja_executable"

NODATA = -10000
LOG_SUFFIX = ".maja.log"
WORK_FOLDER = ".maja-work"  # hidden: product searches never look inside
ORPHAN_GRACE = 5.0  # MAJA exited but a child still holds its output open
POLL = 0.1

L2_NAME = re.compile(r"^(?P<notv>L2NOTV_)?SENTINEL2(?P<platform>[A-D])_(?P<date>\d{8})-(?P<time>\d{6})-\d{3}_L2A_"
                     r"T(?P<tile>\d{2}[A-Z]{3})_[A-Z]_V(?P<major>\d+)-(?P<minor>\d+)$")
GIPP_ENTRY = re.compile(r"^(?P<owner>S2[A-D]|S2_)_[A-Z]{4}_GIP_(?P<kind>[A-Z0-9]{6})_.*?(?P<ext>\.EEF|\.HDR|\.DBL\.DIR"
                        r"|\.DBL)$")
GIPP_EEF = ("CKEXTL", "CKQLTL", "L2COMM", "L2SMAC", "L2SITE")
GIPP_HDR = ("L2ALBD", "L2DIFT", "L2DIRT", "L2TOCR", "L2WATV")
_REFUSED = re.compile(r"HTTP (401|403)\b")


def _callbacks(progress, is_cancelled, log):
    return progress or no_progress, is_cancelled or never_cancelled, log or (lambda message: None)


# ---------------------------------------------------------------------------------------------------------------
# The request: tile, period, orbit, cloud share — validated before any work
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Period:
    tile: str
    start: dt.date
    end: dt.date
    relative_orbit: int = None  # None: any orbit
    max_cloud: float = None  # GEODES only: L1C products carry no cloud share MAJA would honour


def period(tile, start, end, relative_orbit=0, max_cloud=None, today=None):
    """A validated :class:`Period`; every problem is a ParameterError naming its parameter."""
    tile_id = grid.parse_tile_id(str(tile or ""), "TILE").tile_id
    start, end, today = _as_date(start), _as_date(end), today or dt.date.today()
    if end < start:
        raise ParameterError("END", f"the end ({end}) is before the start ({start}).")
    if start < MISSION_START:
        raise ParameterError("START", f"{start} is before the first Sentinel-2 acquisitions ({MISSION_START}).")
    if end > today:
        raise ParameterError("END", f"{end} is in the future (today is {today}).")
    orbit = int(relative_orbit or 0)
    if not 0 <= orbit <= 143:
        raise ParameterError("RELATIVE_ORBIT", f"{orbit} is outside 1–143 (0: any orbit).")
    if max_cloud is not None and not 0 <= max_cloud <= 100:
        raise ParameterError("MAX_CLOUD", f"{max_cloud:g} is outside 0–100 %.")
    return Period(tile_id, start, end, orbit or None, max_cloud)


def _as_date(value):
    return value.date() if isinstance(value, dt.datetime) else value


def max_l2_diff(day):
    """Days an L2 may lie before a date for a NOMINAL run (StartMaja ``S2Product.max_l2_diff``)."""
    return 30 if day < L2_DIFF_CHANGE else 15


def missing_periods(start, end, dates, revisit=REVISIT_DAYS):
    """(first day, last day) of each run of at least ``revisit`` days in [start, end] without a product, i.e. every
    gap longer than the revisit, including those at the start and at the end of the period."""
    days = sorted({day for day in dates if start <= day <= end})
    one = dt.timedelta(days=1)
    bounds = [start - one] + days + [end + one]
    gaps = []
    for before, after in zip(bounds, bounds[1:]):
        first, last = before + one, after - one
        if (last - first).days + 1 >= revisit:
            gaps.append((first, last))
    return gaps


# ---------------------------------------------------------------------------------------------------------------
# MUSCATE L2A products on disk
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class L2Product:
    path: str
    name: str
    date: dt.date
    tile: str
    platform: str  # "S2A"
    version: tuple  # (3, 1) for V3-1

    @property
    def metadata(self):
        return os.path.join(self.path, f"{self.name}_MTD_ALL.xml")

    def band(self, kind, band):
        return os.path.join(self.path, f"{self.name}_{kind}_{band}.tif")

    @property
    def cloud_mask(self):
        return os.path.join(self.path, "MASKS", f"{self.name}_CLM_R1.tif")

    @property
    def has_images(self):
        """False for a date above MAJA's cloud limit: the product then holds only its metadata."""
        return all(os.path.isfile(self.band("FRE", band)) for band in ("B4", "B3", "B2"))


def l2_product(path):
    """The :class:`L2Product` in folder ``path``, or None when it is not a complete, valid MUSCATE L2A product."""
    name = os.path.basename(os.path.normpath(path))
    match = L2_NAME.match(name)
    if not match or match.group("notv") or not os.path.isfile(os.path.join(path, f"{name}_MTD_ALL.xml")):
        return None
    return L2Product(os.path.normpath(path), name, dt.datetime.strptime(match.group("date"), "%Y%m%d").date(),
                     match.group("tile"), f"S2{match.group('platform')}",
                     (int(match.group("major")), int(match.group("minor"))))


def find_l2(folder, tile=None):
    """Valid MUSCATE L2A products directly in ``folder`` (of ``tile`` when given), by date."""
    if not folder or not os.path.isdir(folder):
        return []
    found = [l2_product(entry.path) for entry in os.scandir(folder) if entry.is_dir()]
    return sorted((p for p in found if p and (tile is None or p.tile == tile)), key=lambda p: (p.date, p.name))


def reflectance_scale(product):
    """REFLECTANCE_QUANTIFICATION_VALUE of the product's metadata (reflectance = value / scale), None if unread."""
    try:
        root = ET.parse(product.metadata).getroot()
    except (OSError, ET.ParseError):
        return None
    element = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "REFLECTANCE_QUANTIFICATION_VALUE"), None)
    try:
        return float(element.text) if element is not None and element.text else None
    except ValueError:
        return None


def layers_of(product):
    """{"FRE": a B4/B3/B2 VRT of the flat reflectance, "CLM": the 10 m cloud mask}; what a product lacks (a very
    cloudy date has no images) is left out. The VRT is written next to the bands, through a temporary name."""
    layers = {}
    if product.has_images:
        layers["FRE"] = true_colour_vrt(product)
    if os.path.isfile(product.cloud_mask):
        layers["CLM"] = product.cloud_mask
    return {kind: path for kind, path in layers.items() if path}


def true_colour_vrt(product):
    from osgeo import gdal

    target = os.path.join(product.path, f"{product.name}_FRE_B432.vrt")
    if os.path.isfile(target):
        return target
    partial = target + ".part"
    bands = [product.band("FRE", band) for band in ("B4", "B3", "B2")]
    options = gdal.BuildVRTOptions(separate=True, srcNodata=NODATA, VRTNodata=NODATA)
    dataset = gdal.BuildVRT(partial, bands, options=options)
    if dataset is None:
        return None
    dataset = None  # closing writes the file
    os.replace(partial, target)
    return target


# ---------------------------------------------------------------------------------------------------------------
# MODE=geodes: CNES's MAJA products
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class GeodesResult:
    products: list = dataclasses.field(default_factory=list)  # L2Product in the output folder, by date
    downloaded: list = dataclasses.field(default_factory=list)  # names fetched now
    present: list = dataclasses.field(default_factory=list)  # names already in the output folder
    failed: dict = dataclasses.field(default_factory=dict)  # name -> one sentence
    offline: list = dataclasses.field(default_factory=list)  # names GEODES marks as not online (tape)
    dates: list = dataclasses.field(default_factory=list)  # dates GEODES has a product for
    missing: list = dataclasses.field(default_factory=list)  # (first, last) without a product

    def report(self):
        """Lines for the log: the dates found, then each period without a product."""
        days = ", ".join(f"{day}" for day in self.dates) or "none"
        lines = [f"GEODES has MAJA products for {len(self.dates)} date(s): {days}."]
        lines += [f"No product between {first} and {last} ({(last - first).days + 1} days)."
                  for first, last in self.missing]
        return lines


def geodes_url(environ=None):
    environ = os.environ if environ is None else environ
    return (environ.get(GEODES_URL_VARIABLE) or GEODES_URL).rstrip("/")


def fetch_geodes(request, output_folder, api_key, url=None, session=None, progress=None, is_cancelled=None,
                 log=None):
    """Search GEODES for the MAJA L2A products of ``request`` (a :class:`Period`), download those not yet in
    ``output_folder`` with the API key, extract them there, and return a :class:`GeodesResult`."""
    progress, is_cancelled, log = _callbacks(progress, is_cancelled, log)
    if not api_key:
        raise ParameterError("AUTH", "MODE=geodes downloads need a GEODES API key: store it in an authentication "
                                     "configuration (Basic, key in the password field) and choose it in AUTH.")
    files.writable_folder(output_folder)
    url = (url or geodes_url()).rstrip("/")
    own = session is None
    session = session or http.new_session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"})
    try:
        found = _search_geodes(request, url, api_key, session, scaled(progress, 0.0, 0.1), is_cancelled, log)
        result = GeodesResult(dates=sorted({f.sensing_start.date() for f in found}))
        result.missing = missing_periods(request.start, request.end, result.dates)
        todo = _not_yet_there(found, output_folder, result)
        _download(todo, output_folder, url, api_key, session, result, progress, is_cancelled, log)
    finally:
        if own:
            session.close()
    result.products = [p for p in find_l2(output_folder, request.tile) if p.name in {f.name for f in found}]
    progress(1.0, f"GEODES: {len(result.downloaded)} downloaded, {len(result.present)} already there, "
                  f"{len(result.failed)} failed")
    return result


def _search_geodes(request, url, api_key, session, progress, is_cancelled, log):
    query = Query(start=dt.datetime.combine(request.start, dt.time(), dt.timezone.utc),
                  end=dt.datetime.combine(request.end, dt.time(23, 59, 59, 999999), dt.timezone.utc),
                  level="L2A", relative_orbit=request.relative_orbit, max_cloud=request.max_cloud,
                  tiles=(request.tile,))
    found = merge(catalogs.search("geodes", query, url, catalogs.Credentials(api_key=api_key), session, progress,
                                  is_cancelled, log))
    return _newest_versions(found, log)


def _newest_versions(found, log):
    """One product per date: THEIA reprocessings (V1-0, V3-1...) of one acquisition are listed side by side."""
    best = {}
    for footprint in found:
        match = L2_NAME.match(footprint.name)
        version = (int(match.group("major")), int(match.group("minor"))) if match else (0, 0)
        key = (footprint.tile_id, footprint.sensing_start.date())
        if key not in best or version > best[key][0]:
            best[key] = (version, footprint)
    kept = [footprint for _, footprint in best.values()]
    if len(kept) < len(found):
        log(f"GEODES: {len(found) - len(kept)} older version(s) of the same dates left aside.")
    return sorted(kept, key=lambda f: (f.sensing_start, f.name))


def _not_yet_there(found, output_folder, result):
    """The footprints to download; those already extracted, on tape or without a link are accounted for."""
    todo = []
    for footprint in found:
        if l2_product(os.path.join(output_folder, footprint.name)):
            result.present.append(footprint.name)
        elif footprint.online is False:  # as the download source does: no request for a product on tape
            result.offline.append(footprint.name)
            result.failed[footprint.name] = (f"{footprint.name}: GEODES keeps it on tape (not online); bring it "
                                             f"online in the GEODES portal, then run again.")
        elif not footprint.download_url:
            result.failed[footprint.name] = f"{footprint.name}: GEODES lists no file to download."
        else:
            todo.append(footprint)
    return todo


def _download(todo, output_folder, url, api_key, session, result, progress, is_cancelled, log):
    if result.offline:
        log(f"GEODES keeps {len(result.offline)} product(s) on tape (not online): they are not downloaded.")
    if not todo:
        return
    key_for = key_header(url, api_key)
    transfers = [transfer.Transfer(f.download_url, os.path.join(output_folder, f.name + ".zip"), f.size_bytes,
                                   f.checksum, auth=key_for, name=f.name) for f in todo]
    report = transfer.download_all(transfers, session, GEODES_PARALLEL, scaled(progress, 0.1, 0.9), is_cancelled,
                                   log)
    _raise_if_refused(report, url)
    for outcome in report.failed:
        result.failed[outcome.transfer.name] = outcome.reason
    arrived = report.downloaded + report.skipped
    for index, outcome in enumerate(arrived):
        check_cancelled(is_cancelled)
        step = scaled(progress, 0.9 + 0.1 * index / len(arrived), 0.9 + 0.1 * (index + 1) / len(arrived))
        _extract(outcome.transfer, output_folder, result, step, is_cancelled)


def key_header(url, api_key):
    """``auth(url)`` for the transfer engine: the key goes to the STAC root's host and to GEODES' portal only,
    never to a host a download is redirected to (object stores, mirrors)."""
    root = urllib.parse.urlsplit(url)
    trusted = {(root.scheme, root.netloc.lower())} | {("https", host) for host in GEODES_HOSTS}

    def auth(target):
        parts = urllib.parse.urlsplit(target)
        return {"X-API-Key": api_key} if (parts.scheme, parts.netloc.lower()) in trusted else {}

    return auth


def _raise_if_refused(report, url):
    refused = [_REFUSED.search(outcome.reason) for outcome in report.failed]
    if report.failed and all(refused) and not report.downloaded and not report.skipped:
        raise ServiceError(f"GEODES ({http.host_of(url)}) refused the API key for the downloads (HTTP "
                           f"{refused[0].group(1)}); the authentication configuration (AUTH) needs a valid GEODES "
                           f"API key (create one in your GEODES account).")


def _extract(job, output_folder, result, progress, is_cancelled):
    try:
        folder = safe.extract_zip(job.dest, output_folder, progress, is_cancelled, replace=True)
    except Cancelled:
        raise
    except S2Error as error:
        result.failed[job.name] = f"{job.name}: {error}"
        return
    if l2_product(folder) is None:
        result.failed[job.name] = f"{job.name}: the archive holds no MAJA L2A product ({os.path.basename(folder)})."
        return
    os.remove(job.dest)  # the product is on disk now; keeping the archive would double the space
    result.downloaded.append(job.name)


# ---------------------------------------------------------------------------------------------------------------
# MODE=local: finding MAJA, its DTM, GIPPs and user configuration
# ---------------------------------------------------------------------------------------------------------------

def find_executable(executable=None, setting=None, environ=None, home=None):
    """The ``maja`` launcher: ``executable`` (EXECUTABLE) → ``setting`` (plugin setting) → ``maja`` on PATH →
    ``$MAJA_HOME`` and ``$MAJA_INSTALL_DIR`` → the usual install folders (``/opt/maja``, ``~/maja``), newest version
    first. A folder given explicitly may be the installation folder."""
    if executable:
        return _given(executable, "EXECUTABLE")
    if setting:
        return _given(setting, f"The MAJA executable in the plugin settings ({SETTING_KEY})")
    environ = os.environ if environ is None else environ
    home = home or os.path.expanduser("~")
    looked = []
    for place, candidates in _search_places(environ, home):
        looked.append(place)
        found = next((c for c in candidates if _runnable(c)), None)
        if found:
            return found
    raise ParameterError("EXECUTABLE", f"MAJA (maja) was not found in the plugin setting, {', '.join(looked)}: "
                                       f"install it from {INSTALL_URL} (./MAJA-4.x.run --target <folder>) and give "
                                       f"its bin/maja here, or use MODE=geodes for CNES's ready-made products.")


def _given(path, label):
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        found = next((c for c in _in_install(path) if _runnable(c)), None)
        problem = None if found else "is a folder without bin/maja"
    else:
        found = path if _runnable(path) else None
        problem = None if found else ("is not executable" if os.path.isfile(path) else "does not exist")
    if found:
        return os.path.abspath(found)
    if label == "EXECUTABLE":
        raise ParameterError("EXECUTABLE", f"{path} {problem}.")
    raise S2Error(f"{label}: {path} {problem}.")


def _in_install(root):
    return [os.path.join(root, "bin", "maja"), os.path.join(root, "maja")] + _newest_first(
        glob.glob(os.path.join(root, "maja", "*", "bin", "maja")))


def _runnable(path):
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _search_places(environ, home):
    """(description, candidates) in search order; globs are expanded only when reached."""
    yield "PATH", [shutil.which("maja", path=environ.get("PATH", "")) if environ.get("PATH") else None]
    for variable in ("MAJA_HOME", "MAJA_INSTALL_DIR"):
        if environ.get(variable):
            yield f"${variable}", _in_install(environ[variable])
    for root in ("/opt/maja", os.path.join(home, "maja"), "/usr/local/maja"):
        yield root.replace(home, "~", 1), _in_install(root) + _newest_first(glob.glob(os.path.join(root, "*", "bin",
                                                                                                  "maja")))


def _newest_first(paths):
    def version(path):
        return tuple(int(n) for n in re.findall(r"\d+", path))

    return sorted(paths, key=lambda p: (version(p), p), reverse=True)


def install_dir(executable):
    """What MAJA_INSTALL_DIR is for an executable ``<install>/bin/maja`` (used only when it is not set)."""
    folder = os.path.dirname(os.path.realpath(executable))
    return os.path.dirname(folder) if os.path.basename(folder) == "bin" else folder


def dtm_name(tile, extension):
    return f"S2__TEST_AUX_REFDE2_T{tile}_0001{extension}"


def find_dtm(dtm_folder, tile):
    """[header, data folder] of the MAJA DTM of ``tile`` in ``dtm_folder`` (or one folder down); a ParameterError
    naming the file expected otherwise."""
    how = "StartMaja's prepare_mnt/DTMCreation.py makes it from an L1C product of the tile"
    expected = f"{dtm_name(tile, '.HDR')} with its {dtm_name(tile, '.DBL.DIR')} folder"
    if not dtm_folder or not os.path.isdir(dtm_folder):
        where = f"{dtm_folder} does not exist" if dtm_folder else "no DTM folder was given"
        raise ParameterError("DTM_FOLDER", f"{where}; local MAJA needs the DTM of tile {tile}: {expected} ({how}).")
    pattern = re.compile(rf"^S2_?_[A-Z]{{4}}_AUX_REFDE2_T?{tile}_\d{{4}}\.HDR$")
    for folder in [dtm_folder] + [e.path for e in sorted(os.scandir(dtm_folder), key=lambda e: e.name) if e.is_dir()]:
        for header in sorted(n for n in os.listdir(folder) if pattern.match(n)):
            data = [os.path.join(folder, header[:-4] + ext) for ext in (".DBL.DIR", ".DBL")]
            data = next((d for d in data if os.path.exists(d)), None)
            if data:
                return [os.path.join(folder, header), data]
            raise ParameterError("DTM_FOLDER", f"the DTM header {header} in {folder} has no {header[:-4]}.DBL.DIR "
                                               f"folder next to it.")
    raise ParameterError("DTM_FOLDER", f"there is no MAJA DTM for tile {tile} in {dtm_folder}: expected {expected} "
                                       f"({how}).")


def find_gipp(gipp_folder, platforms):
    """(the GIPP set folder, the entries to link) for the satellites ``platforms``: ``gipp_folder`` itself or one of
    its subfolders (StartMaja's ``SENTINEL2_NATIF`` ... first); a ParameterError naming a missing file otherwise."""
    if not gipp_folder or not os.path.isdir(gipp_folder):
        where = f"{gipp_folder} does not exist" if gipp_folder else "no GIPP folder was given"
        raise ParameterError("GIPP_FOLDER", f"{where}; local MAJA needs its GIPP set (parameter files) for "
                                            f"{', '.join(platforms)}, e.g. {_gipp_example(platforms[0], 'L2COMM')} "
                                            f"(StartMaja downloads them from {GIPP_URL}).")
    best = None
    for folder in _gipp_candidates(gipp_folder):
        entries = _gipp_entries(folder, platforms)
        missing = _gipp_missing(entries, platforms)
        if not missing:
            return folder, sorted(os.path.join(folder, name) for name in entries)
        if best is None or len(missing) < len(best[1]):
            best = (folder, missing)
    folder, missing = best
    raise ParameterError("GIPP_FOLDER", f"the MAJA GIPP set in {folder} is incomplete for {', '.join(platforms)}: "
                                        f"{missing[0]} is missing ({len(missing)} file(s) in all; StartMaja "
                                        f"downloads the set from {GIPP_URL}).")


def _gipp_candidates(gipp_folder):
    subfolders = [e.path for e in os.scandir(gipp_folder) if e.is_dir() and not GIPP_ENTRY.match(e.name)]
    # SAFE L1C in: StartMaja's NATIF set; sets with CAMS aerosol models need CAMS files this plugin does not get.
    subfolders.sort(key=lambda p: ("NATIF" not in os.path.basename(p), "CAMS" in os.path.basename(p), p))
    return [gipp_folder] + subfolders


def _gipp_entries(folder, platforms):
    owners = set(platforms) | {"S2_"}
    return [name for name in os.listdir(folder) if GIPP_ENTRY.match(name) and GIPP_ENTRY.match(name)["owner"] in owners]


def _gipp_missing(entries, platforms):
    """Descriptions of the required GIPP files absent from ``entries`` (an .HDR counts with its .DBL.DIR)."""
    names = set(entries)
    missing = []
    for platform in platforms:
        for kind in GIPP_EEF + GIPP_HDR:
            owners = (platform, "S2_") if kind == "L2SITE" else (platform,)
            ext = ".EEF" if kind in GIPP_EEF else ".HDR"
            hits = [n for n in names if GIPP_ENTRY.match(n)["kind"] == kind and GIPP_ENTRY.match(n)["owner"] in owners
                    and n.endswith(ext) and (ext == ".EEF" or {n[:-4] + ".DBL.DIR", n[:-4] + ".DBL"} & names)]
            if not hits:
                missing.append(_gipp_example(platform, kind))
    return missing


def _gipp_example(platform, kind):
    if kind in GIPP_EEF:
        return f"{platform}_TEST_GIP_{kind}_L_ALLSITES_00001_20190626_21000101.EEF"
    return f"{platform}_TEST_GIP_{kind}_L_CONTINEN_00001_20190626_21000101.HDR (with its .DBL.DIR)"


def find_userconf(*folders):
    """A user configuration folder (``userconf`` with ``MAJAUserConfigSystem.xml``) in one of ``folders``, or None
    (the plugin then writes its own)."""
    for folder in folders:
        candidate = os.path.join(folder or "", "userconf")
        if folder and os.path.isfile(os.path.join(candidate, "MAJAUserConfigSystem.xml")):
            return candidate
    return None


def write_userconf(folder, threads=None, memory_mb=None):
    """MAJA's user configuration (``-ucs``): ``MAJAUserConfigSystem.xml`` with the threads and memory of this
    machine, and ``MAJAUserConfig_SENTINEL2[_MUSCATE].xml`` with StartMaja's values (240 m coarse resolution,
    as DTMCreation.py's default DTM)."""
    os.makedirs(folder, exist_ok=True)
    system = _config({
        "Notes": {"L2Note": "L2 note", "L3Note": "L3 note", "CheckToolsNote": "Checktool note"},
        "Computing": {"NbThreads": threads or min(os.cpu_count() or 1, 16), "RAM": memory_mb or _memory_mb(),
                      "EnableL2ResolutionProcessing": "true",
                      "Caching": {"EnableCleaningCachingDirectoryBeforeProcessing": "false",
                                  "EnableCleaningCachingDirectoryAfterProcessing": "true",
                                  "EnableCachingConvertReflectanceData": "true"},
                      "EnableCleaningTemporaryDirectory": "true"},
        "Processing": {"CheckXMLFilesWithSchema": "false", "PreProcessing": {"CleanInputZipFiles": "false"},
                       "PostProcessing": {"ZipFiles": "false", "CleanFiles": "false"}}})
    strips = dict.fromkeys(("L2InitProcessing", "L2NominalProcessing", "L2BackwardProcessing", "L3Processing",
                            "ChecktoolProcessing"), 800)
    plugin = _config({
        "Business": {"ImageDivision": {"NbStrips": strips}, "L2CoarseResolution": 240},
        "Algorithms": {"GRID_Reference_Altitudes": {"SOLH1": 3000, "SOLHRef": 4000, "VIEHRef": 3000},
                       "Atmospheric_Absorption_Correction": {"Use_Default_Constant_Ozone_Amount": "true"}}})
    plugin.find("Business/ImageDivision").set("method", "strips")
    for name, root in (("MAJAUserConfigSystem.xml", system), ("MAJAUserConfig_SENTINEL2.xml", plugin),
                       ("MAJAUserConfig_SENTINEL2_MUSCATE.xml", plugin)):
        _write_xml(root, os.path.join(folder, name))
    return folder


MAJA_NAMESPACE = "http://maja.fr"


def _config(content):
    # a plain xmlns attribute: ET.register_namespace would change a table shared by the whole process, and
    # ET's default_namespace refuses the unqualified attribute MAJA's files have (method="strips")
    root = ET.Element("Config", xmlns=MAJA_NAMESPACE)
    _fill(root, content)
    return root


def _fill(parent, content):
    for name, value in content.items():
        child = ET.SubElement(parent, name)
        if isinstance(value, dict):
            _fill(child, value)
        else:
            child.text = str(value)


def _write_xml(root, path):
    ET.indent(root)
    partial = path + ".part"
    ET.ElementTree(root).write(partial, encoding="utf-8", xml_declaration=True)
    os.replace(partial, path)


def _memory_mb():
    """MAJA's default RAM budget (8096 MB), lowered to 3/4 of the physical memory on smaller machines."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (AttributeError, ValueError, OSError):
        return 8096
    return max(min(8096, total * 3 // 4), 1024)


# ---------------------------------------------------------------------------------------------------------------
# MODE=local: the L1C products and the plan
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class L1CProduct:
    path: str  # .SAFE folder or zip
    name: str  # the .SAFE name
    sensing: dt.datetime
    platform: str
    relative_orbit: int
    tile: str

    @property
    def date(self):
        return self.sensing.date()


@dataclasses.dataclass
class LocalPlan:
    request: Period
    executable: str
    input_folder: str
    output_folder: str
    products: list  # L1CProduct, by date
    existing: dict  # date -> L2Product already in the output folder
    previous: object  # the latest L2Product before the first date, or None
    dtm: list
    gipp_folder: str
    gipp: list
    userconf: str  # None: the plugin writes one
    nbackward: int = NBACKWARD
    notes: list = dataclasses.field(default_factory=list)

    def describe(self):
        done = sum(1 for p in self.products if p.date in self.existing)
        return (f"MAJA ({self.executable}) for tile {self.request.tile}: {len(self.products)} date(s) from "
                f"{self.products[0].date} to {self.products[-1].date}, {done} already processed; GIPP set "
                f"{self.gipp_folder}; DTM {os.path.basename(self.dtm[0])}.")


def plan_local(request, input_folder, output_folder, executable=None, setting=None, dtm_folder=None,
               gipp_folder=None, environ=None, home=None, nbackward=NBACKWARD):
    """Everything checked before any work: the products, MAJA, the DTM, the GIPP set, the output folder."""
    if sys.platform.startswith("win"):
        raise ParameterError("MODE", "MAJA is distributed for Linux only; use MODE=geodes on this system.")
    if not input_folder or not os.path.isdir(input_folder):
        raise ParameterError("INPUT_FOLDER", f"the folder {input_folder or '(none)'} does not exist.")
    products, notes = inventory(input_folder, request)
    exe = find_executable(executable, setting, environ, home)
    dtm = find_dtm(dtm_folder, request.tile)
    gipp_set, gipp = find_gipp(gipp_folder, sorted({p.platform for p in products}))
    files.writable_folder(output_folder)
    existing = {p.date: p for p in find_l2(output_folder, request.tile)}
    earlier = [p for day, p in sorted(existing.items()) if day < products[0].date]
    early = [p for p in products if p.date < ANGLES_COMPLETE]
    if early:
        notes.append(f"{len(early)} product(s) are from before {ANGLES_COMPLETE}: MAJA stops on L1C products of "
                     f"February–March 2016 that lack angle information (never reprocessed by ESA); if such a date "
                     f"fails, remove it from INPUT_FOLDER.")
    return LocalPlan(request, exe, input_folder, output_folder, products, existing, earlier[-1] if earlier else None,
                     dtm, gipp_set, gipp, find_userconf(gipp_set, gipp_folder), nbackward, notes)


def inventory(input_folder, request):
    """(the L1C products of the tile, period and orbit, one per date, by date; notes on what was left aside)."""
    kept, aside = {}, collections.Counter()
    others = collections.Counter()
    for path in safe.find_products(input_folder):
        product = _l1c(path)
        reason = _aside(product, request)
        if reason == "tile":
            others[product.tile] += 1
        elif reason:
            aside[reason] += 1
        elif product.date not in kept or _newer(product, kept[product.date]):
            aside["duplicate"] += product.date in kept
            kept[product.date] = product
        else:
            aside["duplicate"] += 1
    notes = _inventory_notes(others, aside)
    if not kept:
        raise ParameterError("INPUT_FOLDER", f"there is no Level-1C product of tile {request.tile} between "
                                             f"{request.start} and {request.end} in {input_folder}"
                                             f"{' (' + ' '.join(notes) + ')' if notes else ''}.")
    return [kept[day] for day in sorted(kept)], notes


def _l1c(path):
    name = os.path.basename(os.path.normpath(path))
    name = name[:-4] if name.lower().endswith(".zip") else name
    parsed = parse_product_name(name)
    if not parsed or parsed["level"] != "L1C":
        return L1CProduct(path, name, None, "", 0, "")
    name = name if name.endswith(".SAFE") else name + ".SAFE"
    return L1CProduct(path, name, parsed["sensing_start"], parsed["platform"], parsed["relative_orbit"],
                      parsed["tile_id"])


def _aside(product, request):
    """Why a product is not used ("level", "tile", "period", "orbit", "incomplete"), or None."""
    if product.sensing is None:
        return "level"
    if product.tile != request.tile:
        return "tile"
    if not request.start <= product.date <= request.end:
        return "period"
    if request.relative_orbit and product.relative_orbit != request.relative_orbit:
        return "orbit"
    if os.path.isdir(product.path) and not safe.inspect(product.path).product_mtd:
        return "incomplete"
    return None


def _newer(product, other):
    """Same date twice (a reprocessing): the newer baseline, then the newer generation, wins."""
    return product.name > other.name


def _inventory_notes(others, aside):
    notes = []
    if others:
        tiles = ", ".join(f"{tile}: {count}" for tile, count in sorted(others.items()))
        notes.append(f"Ignored {sum(others.values())} product(s) of other tiles ({tiles}): MAJA processes one tile "
                     f"at a time.")
    words = {"level": "that are not Level-1C products in the compact naming", "period": "outside the period",
             "orbit": "of other relative orbits", "incomplete": "without their MTD_MSIL1C.xml",
             "duplicate": "of a date that has a newer product (MAJA makes one L2A per date)"}
    notes += [f"Ignored {aside[key]} product(s) {text}." for key, text in words.items() if aside.get(key)]
    return notes


# ---------------------------------------------------------------------------------------------------------------
# The time series: which mode for which date (StartMaja's create_workplans)
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    mode: str
    product: L1CProduct  # the date this run makes an L2 for
    inputs: tuple  # the L1C products given to MAJA (8 for BACKWARD)
    previous: object = None  # the L2Product a NOMINAL run continues from


def next_step(products, index, previous, nbackward=NBACKWARD):
    """The run for ``products[index]``: NOMINAL from ``previous`` when it is recent enough, else a fresh
    initialisation, BACKWARD over this date and the following ones when ``nbackward`` are available, else INIT.
    The backward window stops at a gap that would itself restart the series."""
    product = products[index]
    if previous is not None and 0 < (product.date - previous.date).days < max_l2_diff(product.date):
        return Step(NOMINAL, product, (product,), previous)
    window = _segment(products, index)
    if len(window) >= nbackward:
        return Step(BACKWARD, product, tuple(window[:nbackward]))
    return Step(INIT, product, (product,))


def _segment(products, index):
    segment = [products[index]]
    for product in products[index + 1:]:
        if (product.date - segment[-1].date).days >= max_l2_diff(product.date):
            break
        segment.append(product)
    return segment


def workplan(products, existing=None, nbackward=NBACKWARD, previous=None):
    """[(date, mode or "skip")] for the whole series when every run succeeds (for logs and tests)."""
    existing = existing or {}
    plan = []
    for index, product in enumerate(products):
        if product.date in existing:
            previous = existing[product.date]
            plan.append((product.date, "skip"))
            continue
        step = next_step(products, index, previous, nbackward)
        plan.append((product.date, step.mode))
        previous = _Made(product.date)
    return plan


_Made = collections.namedtuple("_Made", "date")


# ---------------------------------------------------------------------------------------------------------------
# MODE=local: running the series
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LocalResult:
    products: list = dataclasses.field(default_factory=list)  # L2Product made now, by date
    skipped: list = dataclasses.field(default_factory=list)  # L2Product already there
    failed: dict = dataclasses.field(default_factory=dict)  # L1C name -> one sentence
    runs: list = dataclasses.field(default_factory=list)  # (date, mode) of every MAJA run, in order
    logs: dict = dataclasses.field(default_factory=dict)  # L1C name -> log file

    @property
    def cloudy(self):
        return [p for p in self.products + self.skipped if not p.has_images]


class _Failed(Exception):
    """One date failed; the text is the reason sentence."""


def run_local(plan, progress=None, is_cancelled=None, log=None):
    """Run the series of ``plan``; a failed date is reported and the next one starts a fresh initialisation.
    ``plan.notes`` (products left aside, warnings) are the caller's to show. Cancelling stops MAJA's process
    group and raises :class:`Cancelled` (products made before stay)."""
    progress, is_cancelled, log = _callbacks(progress, is_cancelled, log)
    work = os.path.join(plan.output_folder, WORK_FOLDER)
    result, previous, total = LocalResult(), plan.previous, len(plan.products)
    try:
        userconf = plan.userconf or write_userconf(os.path.join(work, "userconf"))
        for index, product in enumerate(plan.products):
            check_cancelled(is_cancelled)
            if product.date in plan.existing:
                previous = plan.existing[product.date]
                result.skipped.append(previous)
                log(f"{product.date}: skipped, {previous.name} is already in the output folder.")
                continue
            step = next_step(plan.products, index, previous, plan.nbackward)
            result.runs.append((product.date, step.mode))
            previous = _attempt(plan, step, userconf, result, scaled(progress, index / total, (index + 1) / total),
                                is_cancelled, log)
    finally:
        files.remove(work)
    progress(1.0, f"MAJA: {len(result.products)} made, {len(result.skipped)} already there, "
                  f"{len(result.failed)} failed")
    return result


def _attempt(plan, step, userconf, result, progress, is_cancelled, log):
    """Run one step; the new L2Product, or None after a failure (the next date then starts afresh)."""
    name = step.product.name
    result.logs[name] = os.path.join(plan.output_folder, files.product_stem(name) + LOG_SUFFIX)
    try:
        made = _run_step(plan, step, userconf, result.logs[name], progress, is_cancelled, log)
    except _Failed as failure:
        result.failed[name] = str(failure)
        log(f"{step.product.date}: FAILED: {failure} The next date starts a new initialisation.")
        return None
    result.products.append(made)
    cloudy = "" if made.has_images else " (too cloudy: MAJA wrote only the metadata)"
    log(f"{step.product.date}: done -> {made.name}{cloudy}")
    return made


def _run_step(plan, step, userconf, log_path, progress, is_cancelled, log):
    day = step.product.date
    folder = os.path.join(plan.output_folder, WORK_FOLDER, f"{day:%Y%m%d}")
    files.remove(folder)  # left by a run that died: never reuse its files
    paths = {part: os.path.join(folder, part) for part in ("input", "output", "work")}
    for path in paths.values():
        os.makedirs(path)
    try:
        _link_inputs(plan, step, paths["input"], os.path.join(plan.output_folder, WORK_FOLDER, "l1c"), is_cancelled)
        command = [plan.executable, "-w", paths["work"], "--input", paths["input"], "--output", paths["output"],
                   "--mode", step.mode, "-ucs", userconf, "--TileId", plan.request.tile, "--loglevel", "PROGRESS"]
        extra = f" from {step.previous.name}" if step.previous else (
            f" over {len(step.inputs)} dates" if step.mode == BACKWARD else "")
        log(f"{day}: MAJA {MODE_WORDS[step.mode]}{extra} (log: {log_path})")
        watcher = _Watcher(progress, f"{day} {MODE_WORDS[step.mode]}")
        code = execute(command, log_path, child_environment(plan.executable), folder, is_cancelled, watcher.feed)
        return _collect(paths["output"], step, code, watcher, log_path, plan)
    finally:
        files.remove(folder)


def _link_inputs(plan, step, input_folder, cache, is_cancelled):
    """The folder MAJA reads: links to the L1C product(s), the GIPPs, the DTM and, in NOMINAL, the previous L2."""
    sources = [_l1c_folder(product, cache, is_cancelled) for product in step.inputs]
    sources += plan.gipp + plan.dtm + ([step.previous.path] if step.previous else [])
    for source in sources:
        os.symlink(os.path.abspath(source), os.path.join(input_folder, os.path.basename(source)))


def _l1c_folder(product, cache, is_cancelled):
    if os.path.isdir(product.path):
        return product.path
    try:  # zips are extracted once for the whole series (a backward window reuses them)
        folder = safe.extract_zip(product.path, cache, is_cancelled=is_cancelled)
    except Cancelled:
        raise
    except S2Error as error:
        raise _Failed(str(error)) from None
    if os.path.basename(folder) != product.name or not safe.inspect(folder).product_mtd:
        raise _Failed(f"{os.path.basename(product.path)} does not hold the L1C product {product.name}.")
    return folder


def _collect(output, step, code, watcher, log_path, plan):
    """The new L2 product moved into the output folder, or :class:`_Failed` with the reason."""
    day = step.product.date
    words = f"MAJA ({MODE_WORDS[step.mode]}) on {day}"
    if code != 0:
        raise _Failed(f"{words} {_exit_words(code)}{watcher.summary(log_path)}")
    candidates = [os.path.join(root, name) for root, names, _ in os.walk(output) for name in names
                  if L2_NAME.match(name) and L2_NAME.match(name)["date"] == f"{day:%Y%m%d}"]
    if any(L2_NAME.match(os.path.basename(c))["notv"] for c in candidates):
        raise _Failed(f"{words}: MAJA judged the date not valid (L2NOTV: too many no-data pixels).")
    made = next((l2_product(c) for c in candidates if l2_product(c)), None)
    if made is None:
        raise _Failed(f"{words} exited with 0 but wrote no L2A product for that date{watcher.summary(log_path)}")
    final = os.path.join(plan.output_folder, made.name)
    files.remove(final)  # not a valid product (else the date would have been skipped): a leftover
    os.rename(made.path, final)  # same file system (the work folder is inside the output folder): atomic
    return l2_product(final)


def _exit_words(code):
    if code < 0:
        try:
            return f"crashed ({signal.Signals(-code).name})"
        except ValueError:
            return f"crashed (signal {-code})"
    return f"exited with code {code}"


class _Watcher:
    """Turns MAJA's log lines into progress (phases, since MAJA prints no percentage) and keeps the last ones."""

    def __init__(self, progress, label):
        self.progress = progress
        self.label = label
        self.phases = 0
        self.last = collections.deque(maxlen=40)
        progress(0.0, f"MAJA {label}: starting")

    def feed(self, line):
        text = line.strip()
        if not text:
            return
        self.last.append(text)
        match = re.search(r"\[P\]\s*(.*)$", text)
        if match and match.group(1).strip("- "):
            self.phases += 1
            self.progress(1 - 0.8 ** self.phases, f"MAJA {self.label}: {match.group(1).strip()}")

    def summary(self, log_path):
        """'; last log lines: ... (log: path).' — the error lines ([E]) when there are some, else the last ones."""
        lines = list(self.last)
        errors = [line for line in lines if "[E]" in line or "rror" in line or "Traceback" in line]
        text = " / ".join((errors or lines)[-3:])
        text = "..." + text[-400:] if len(text) > 400 else text
        return f"; last log lines: {text} (log: {log_path})." if text else f"; it printed nothing (log: {log_path})."


def child_environment(executable, environ=None):
    """Ours without PYTHONHOME/PYTHONPATH (QGIS's Python would break MAJA's own), with MAJA_INSTALL_DIR set when
    missing (MAJA refuses to start without it; its launcher environment normally sets it)."""
    environ = dict(os.environ if environ is None else environ)
    for name in ("PYTHONHOME", "PYTHONPATH"):
        environ.pop(name, None)
    environ.setdefault("MAJA_INSTALL_DIR", install_dir(executable))
    return environ


# ---------------------------------------------------------------------------------------------------------------
# Running one process in its own process group
# ---------------------------------------------------------------------------------------------------------------

def execute(command, log_path, env, cwd, is_cancelled, on_line):
    """Run ``command`` in a new session (its own process group), append its output to ``log_path``, pass each
    line to ``on_line`` on this thread, and return the exit code. A cancel stops the whole group and raises
    :class:`Cancelled`; nothing of the group outlives this call."""
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"=== {dt.datetime.now().isoformat(timespec='seconds')} {' '.join(command)}\n")
        log.flush()
        try:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            raise _Failed(f"MAJA could not be started ({command[0]}): {error.strerror or error}.") from None
        started = time.monotonic()
        try:
            code = _follow(process, log, is_cancelled, on_line)
        except Cancelled:
            log.write("=== stopped: cancelled by the user\n")
            raise
        finally:
            if processes.alive(process):
                processes.stop([process])
        log.write(f"=== exit code {code} after {time.monotonic() - started:.1f} s\n")
    return code


def _follow(process, log, is_cancelled, on_line):
    lines = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    exited = None
    while reader.is_alive() or not lines.empty():
        _deliver(lines, log, on_line)
        if is_cancelled():
            processes.stop([process])
            raise Cancelled()
        if exited is None and process.poll() is not None:
            exited = time.monotonic()
        elif exited is not None and time.monotonic() - exited > ORPHAN_GRACE:
            processes.stop([process])  # MAJA ended but a child still holds the pipe open
        reader.join(POLL)
    _deliver(lines, log, on_line)
    return process.wait()


def _read_lines(stream, lines):
    for raw in stream:
        lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    stream.close()


def _deliver(lines, log, on_line):
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return
        log.write(line + "\n")
        log.flush()  # the log is what users tail on a cluster
        on_line(line)



"""Copernicus Data Space Ecosystem OData catalogue (``CATALOG=cdse``): anonymous Sentinel-2 search.

What the service does that shapes this module (reference notes §1.1, fixtures ``cdse_odata_*``):
- filters are one ``$filter`` expression; product attributes are matched with
  ``Attributes/OData.CSC.<Type>Attribute/any(att:att/Name eq '<name>' and att/OData.CSC.<Type>Attribute/Value ...)``;
- pages hold at most 1000 products (``$top``) and ``$skip`` may not pass 10,000: the server answers 422 and
  leaves ``@odata.nextLink`` out once the next skip would pass it. Past that point the search restarts with
  ``ContentDate/Start ge <last sensing time seen>`` and drops the products it already has (by Id);
- with ``$orderby`` the order is total (sensing time, then Id), so restarting on a sensing time loses nothing;
- ``$count`` is slow, so progress is the share of the period covered so far.
"""

import datetime as dt
import importlib.util
import json
import os
import urllib.parse

from .. import http
from ..callbacks import check_cancelled
from ..errors import ServiceError
from ..footprints import Footprint, parse_time
from . import Found

SERVICE = "Copernicus Data Space"
DOWNLOAD_URL = "https://download.dataspace.copernicus.eu/odata/v1"
PAGE_SIZE = 1000  # the largest $top the server accepts
SKIP_LIMIT = 10_000  # the largest $skip it accepts
TILES_PER_REQUEST = 20  # one clause per tile: keep URLs well below common 8-16 KB server limits
# CDSE gives no orbitDirection attribute for Sentinel-2 (see the fixture). The MSI images the day side of its
# sun-synchronous orbit, i.e. descending passes, so that is what ORBIT_DIRECTION is compared with.
SENTINEL2_ORBIT_DIRECTION = "DESCENDING"


def search(query, url, credentials, session, progress, is_cancelled, log, catalog="cdse"):
    """Every Sentinel-2 product matching ``query`` (see ``catalogs/__init__.py``); search needs no account,
    so ``credentials`` are not used."""
    own_session = session is None
    session = session or http.new_session()
    try:
        return _Search(query, url, session, progress, is_cancelled, log).run()
    finally:
        if own_session:
            session.close()


# ---- the request -------------------------------------------------------------------------------------

def build_filter(query, start=None, tiles=None):
    """The ``$filter`` for ``query`` from ``start`` (default: the query's start) for ``tiles`` (default: all)."""
    clauses = [
        "Collection/Name eq 'SENTINEL-2'",
        f"ContentDate/Start ge {odata_time(start or query.start)}",
        f"ContentDate/Start le {odata_time(query.end, round_up=True)}",
    ]
    wkt = query.aoi_wkt()
    if wkt:
        clauses.append(f"OData.CSC.Intersects(area=geography'SRID=4326;{wkt}')")
    clauses.append(attribute_clause("String", "productType", "eq", _quoted(query.product_type)))
    if query.max_cloud is not None:
        clauses.append(attribute_clause("Double", "cloudCover", "le", repr(float(query.max_cloud))))
    if query.platform:  # the attribute holds the letter only ('A'), see the fixture
        clauses.append(attribute_clause("String", "platformSerialIdentifier", "eq", _quoted(query.platform[-1])))
    if query.relative_orbit is not None:
        # Integer for both casts, as the attribute's own @odata.type says; sentinelsat #583 and eodag mix
        # String/Integer, which the service seems to tolerate. Query.matches checks the orbit again anyway.
        clauses.append(attribute_clause("Integer", "relativeOrbitNumber", "eq", str(query.relative_orbit)))
    tiles = query.tiles if tiles is None else tiles
    if tiles:
        either = " or ".join(attribute_clause("String", "tileId", "eq", _quoted(tile)) for tile in tiles)
        clauses.append(f"({either})")
    return " and ".join(clauses)


def attribute_clause(kind, name, operator, literal):
    cast = f"OData.CSC.{kind}Attribute"
    return f"Attributes/{cast}/any(att:att/Name eq '{name}' and att/{cast}/Value {operator} {literal})"


def odata_time(value, round_up=False):
    """An OData date-time literal (UTC, milliseconds, unquoted). Rounding widens the range, never narrows it."""
    value = value.astimezone(dt.timezone.utc)
    extra = value.microsecond % 1000
    if extra:
        value += dt.timedelta(microseconds=1000 - extra if round_up else -extra)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _quoted(text):
    return "'" + str(text).replace("'", "''") + "'"


def page_size(query):
    return min(PAGE_SIZE, query.max_results) if query.max_results else PAGE_SIZE


def request_parameters(filter_text, top):
    # $expand repeated, not comma-joined: the form the service echoes in its own nextLink (fixture).
    return [("$filter", filter_text), ("$orderby", "ContentDate/Start asc"), ("$top", str(top)),
            ("$expand", "Attributes"), ("$expand", "Assets")]


# ---- paging -------------------------------------------------------------------------------------------

class _Search:
    """One search: pages fetched in sensing order, restarted past the $skip limit, results deduplicated."""

    def __init__(self, query, url, session, progress, is_cancelled, log):
        self.query, self.session = query, session
        self.progress, self.is_cancelled, self.log = progress, is_cancelled, log
        self.products_url = url.rstrip("/") + "/Products"
        self.download_root = os.environ.get("SENTINEL2_CDSE_DOWNLOAD_URL") or DOWNLOAD_URL
        self.top = page_size(query)
        self.seen, self.found, self.pages = set(), [], 0
        self.groups = _tile_groups(query.tiles)
        self.group = 0

    def run(self):
        if self.query.orbit_direction:
            self.log(f"{SERVICE} has no orbit direction for Sentinel-2 products (all are acquired on descending "
                     f"passes): ORBIT_DIRECTION is applied to the results here.")
        for group, tiles in enumerate(self.groups):
            self.group = group  # for progress: groups share the bar equally
            self._period(tiles)
            if self._full():
                break
        self.found.sort(key=lambda f: (f.sensing_start, f.name))
        self.progress(1.0, f"{len(self.found)} products found in {self.pages} pages")
        if not self._full():
            return Found(self.found)
        return Found(self.found, capped=True, matched=self._count())

    def _count(self):
        """What the catalogue holds for the query ($count, asked only once MAX_RESULTS stopped the paging: it is
        slow); None when the service does not say."""
        total = 0
        for tiles in self.groups:
            params = [("$filter", build_filter(self.query, tiles=tiles)), ("$count", "True"), ("$top", "1")]
            body = self._get(self.products_url, params)
            count = body.get("@odata.count") if isinstance(body, dict) else None
            if not isinstance(count, int):
                return None
            total += count
        return total

    def _period(self, tiles):
        """All products of the period for one group of tiles, in windows of at most SKIP_LIMIT + top."""
        start = self.query.start
        filter_text = build_filter(self.query, start, tiles)
        self.log(f"{SERVICE}: GET {self.products_url} with $filter={filter_text}")
        while True:
            complete, last_start = self._window(filter_text)
            if complete or self._full():
                return
            if last_start is None or last_start <= start:
                raise ServiceError(
                    f"{SERVICE} holds more than {SKIP_LIMIT} products sensed at {start:%Y-%m-%d %H:%M:%S} UTC, "
                    f"more than it lets a client page through; narrow the area or add filters.")
            self.log(f"{SERVICE} pages no further than $skip={SKIP_LIMIT}: continuing from "
                     f"{odata_time(last_start)}.")
            start = last_start
            filter_text = build_filter(self.query, start, tiles)

    def _window(self, filter_text):
        """Follow nextLinks from skip 0. Returns (complete, last sensing time seen); ``complete`` is False when
        the skip limit stopped the paging before the end. The next page is requested while this one is
        parsed, so the parsing hides behind the transfer."""
        from concurrent.futures import ThreadPoolExecutor

        skip, last_start = 0, None
        with ThreadPoolExecutor(max_workers=1) as fetcher:
            pending = fetcher.submit(self._get, self.products_url, request_parameters(filter_text, self.top))
            while True:
                check_cancelled(self.is_cancelled)
                body = pending.result()
                if body is None:  # 422: a server with a lower skip limit than documented
                    return False, last_start
                values = _values(body, self.products_url)
                next_url = body.get("@odata.nextLink")
                next_skip = _skip_of(next_url) if next_url else None
                if values and next_url and next_skip <= SKIP_LIMIT and not self._full(len(values)):
                    check_cancelled(self.is_cancelled)  # no new request once the user cancelled
                    pending = fetcher.submit(self._get, next_url, None)
                last_start = self._take(values) or last_start
                self.pages += 1
                self.log(f"page {self.pages}: {len(values)} products at $skip={skip}, {len(self.found)} kept so far")
                self._report(last_start)
                if self._full() or not values:
                    return True, last_start
                if not next_url:
                    # The server leaves nextLink out both at the end and when the next skip would pass its limit.
                    return not (len(values) >= self.top and skip + self.top > SKIP_LIMIT), last_start
                if next_skip > SKIP_LIMIT:
                    return False, last_start
                skip = next_skip

    def _get(self, url, params):
        """The decoded JSON page, or None when the server refuses the $skip (HTTP 422 naming $skip)."""
        with http.service_errors(SERVICE, url):
            response = self.session.get(url, params=params)
        if response.status_code == 422 and _refuses_skip(response):
            response.close()
            return None
        http.raise_for_service(response, SERVICE)
        try:
            return json.loads(response.content)
        except ValueError:
            raise ServiceError(
                f"{SERVICE} ({http.host_of(response.url)}) answered something that is not JSON for "
                f"{http.redact_url(response.url)}; check that URL is the OData root (…/odata/v1).") from None

    def _take(self, values):
        """Keep the new products that match the query; returns the last sensing time on the page."""
        last = None
        for product in values:
            footprint = parse_product(product, self.download_root, self.products_url)
            last = footprint.sensing_start
            if footprint.id in self.seen:
                continue
            self.seen.add(footprint.id)
            if self.query.matches(footprint) and not self._full():
                self.found.append(footprint)
        return last

    def _full(self, coming=0):
        """MAX_RESULTS reached (or reached anyway with ``coming`` more products)."""
        return bool(self.query.max_results) and len(self.found) + coming >= self.query.max_results

    def _report(self, last_start):
        span = (self.query.end - self.query.start).total_seconds()
        covered = (last_start - self.query.start).total_seconds() / span if last_start and span > 0 else 0.0
        fraction = (self.group + min(max(covered, 0.0), 1.0)) / len(self.groups)
        self.progress(min(fraction, 0.99), f"{len(self.found)} products found ({self.pages} pages)")


def _tile_groups(tiles):
    tiles = tuple(tiles or ())
    if not tiles:
        return [None]  # None: no tile clause (build_filter's default would be all the query's tiles)
    return [tiles[i: i + TILES_PER_REQUEST] for i in range(0, len(tiles), TILES_PER_REQUEST)]


def _values(body, url):
    values = body.get("value") if isinstance(body, dict) else None
    if not isinstance(values, list):
        raise ServiceError(f"{SERVICE} ({http.host_of(url)}) answered JSON without a product list ('value'); "
                           f"check that URL is the OData root (…/odata/v1).")
    return values


def _skip_of(url):
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    try:
        return int((query.get("$skip") or ["0"])[0])
    except ValueError:
        return 0


def _refuses_skip(response):
    try:
        details = response.json().get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(details, list) and any(
        isinstance(d, dict) and "$skip" in (d.get("loc") or ()) for d in details)


# ---- the products -------------------------------------------------------------------------------------

def parse_product(product, download_root=DOWNLOAD_URL, url=None):
    """A :class:`Footprint` from one OData product (as returned with ``$expand=Attributes&$expand=Assets``)."""
    try:
        product_id, name, sensing = product["Id"], product["Name"], product["ContentDate"]["Start"]
    except (KeyError, TypeError):
        raise ServiceError(f"{SERVICE} ({http.host_of(url)}) answered a product without Id, Name or "
                           f"ContentDate; check that URL is the OData root (…/odata/v1).") from None
    attributes = {a.get("Name"): a.get("Value") for a in product.get("Attributes") or () if isinstance(a, dict)}
    serial = attributes.get("platformSerialIdentifier")
    return Footprint(
        id=product_id, name=name, provider="cdse",
        geometry=product.get("GeoFootprint") or _ewkt_geometry(product.get("Footprint")),
        sensing_start=parse_time(sensing),
        platform=f"S2{serial}" if serial else "",
        level=_level(attributes.get("productType") or attributes.get("processingLevel")),
        tile_id=attributes.get("tileId") or "",
        relative_orbit=_number(int, attributes.get("relativeOrbitNumber")),
        orbit_direction=str(attributes.get("orbitDirection") or SENTINEL2_ORBIT_DIRECTION).upper(),
        cloud_cover=_number(float, attributes.get("cloudCover")),
        size_bytes=product.get("ContentLength") or None,  # 0 is the service's "unknown"
        online=product.get("Online"),
        download_url=f"{download_root.rstrip('/')}/Products({product_id})/$value",
        checksum=checksum(product.get("Checksum")),
        extra={"quicklook": _quicklook(product.get("Assets")), "s3_path": product.get("S3Path") or ""},
    )


def checksum(entries):
    """``'BLAKE3:<hex>'`` when listed and the ``blake3`` package is installed (eight times faster than MD5, so
    verifying costs nothing next to the transfer), else ``'MD5:<hex>'`` (hashlib), else ``'BLAKE3:<hex>'``
    (verified by size then, said once), else ''."""
    by_algorithm = {str(e.get("Algorithm", "")).upper(): e.get("Value") for e in entries or () if isinstance(e, dict)}
    preferred = ("BLAKE3", "MD5") if importlib.util.find_spec("blake3") else ("MD5", "BLAKE3")
    for algorithm in preferred:
        if by_algorithm.get(algorithm):
            return f"{algorithm}:{by_algorithm[algorithm]}"
    return ""


def _level(product_type):
    product_type = product_type or ""
    if product_type.startswith("S2MSI1C"):
        return "L1C"
    if product_type.startswith("S2MSI2A"):  # also the early 'S2MSI2Ap'
        return "L2A"
    return ""  # Footprint takes it from the product name


def _number(kind, value):
    try:
        return kind(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _quicklook(assets):
    for asset in assets or ():
        if isinstance(asset, dict) and asset.get("Type") == "QUICKLOOK":
            return asset.get("DownloadLink") or ""
    return ""


def _ewkt_geometry(ewkt):
    """GeoJSON from ``geography'SRID=4326;POLYGON (...)'`` (for answers without GeoFootprint, e.g. $select)."""
    if not ewkt:
        return None
    from osgeo import ogr

    text = ewkt.strip()
    if text.startswith("geography'"):
        text = text[len("geography'"):].rstrip("'")
    geometry = ogr.CreateGeometryFromWkt(text.split(";", 1)[-1])
    return json.loads(geometry.ExportToJson()) if geometry is not None else None

"""STAC API catalogues: Earth Search (Element 84), CDSE STAC and GEODES (CNES), through one client.

What differs between the three services, and where it is handled:

- collections per level (:data:`CATALOGUES`); Earth Search L2A is searched in ``sentinel-2-c1-l2a`` first, then in
  the older ``sentinel-2-l2a``, and a product found in both is kept once (same ESA product name);
- the filter language (:func:`request_body`): Earth Search takes the ``query`` extension; CDSE STAC takes a CQL2
  JSON ``filter`` when its landing page declares the filter extension (else ``query``); GEODES takes its own
  ``query`` operators (``contains`` for tiles, which it writes ``T31TCJ`` or ``31TCJ``; a date range on
  ``start_datetime``/``end_datetime``). With the ``query`` extension each tile is searched on its own (``eq``):
  its ``in`` operator is not implemented everywhere (stac-fastapi refuses it);
- paging: Earth Search and CDSE STAC answer ``links[rel=next]``, either a GET URL carrying a token or a POST with a
  body to send (merged into the previous body when ``merge`` is true); GEODES pages with ``page``/``limit`` in the
  body (``limit`` at most 80): its own next link is a GET URL without the search's filters, so it is not followed;
- CDSE STAC refuses pages past ``(page - 1) * limit > 10000``: a period with more results is split in two,
  recursively, and each half searched on its own.

Every item goes through ``query.matches``, so a filter a service ignores or cannot express (Earth Search items
have no orbit properties) is still applied here. The footprint geometry is the item's, untouched.
"""

import dataclasses
import datetime as dt
import json
import re
import urllib.parse

from .. import http
from ..callbacks import check_cancelled, scaled
from ..errors import ServiceError
from ..footprints import Footprint, merge, parse_time
from . import Found

MIN_SPLIT = dt.timedelta(minutes=1)  # below this a CDSE window is not split again (the cap then truncates)
MAX_PAGES = 100_000  # a server that keeps answering "next" forever must not hang the search


@dataclasses.dataclass(frozen=True)
class Catalogue:
    name: str            # how messages and the log name the service
    collections: dict    # level -> collection ids, preferred first
    page_size: int       # the largest page the service answers reliably
    paging: str          # "links" (next links) or "pages" (page/limit in the body)
    window_cap: int = 0  # results one search may page through before the service refuses (0: no cap)


CATALOGUES = {
    # eodag: a limit of 5000 makes Earth Search answer 502; 500 is safe.
    "earth-search": Catalogue("Earth Search", {"L1C": ("sentinel-2-l1c",),
                                               "L2A": ("sentinel-2-c1-l2a", "sentinel-2-l2a")}, 500, "links"),
    "cdse-stac": Catalogue("CDSE STAC", {"L1C": ("sentinel-2-l1c",), "L2A": ("sentinel-2-l2a",)}, 500, "links",
                           window_cap=10_000),
    # GEODES documents at most 80 results per page.
    "geodes": Catalogue("GEODES", {"L1C": ("PEPS_S2_L1C",), "L2A": ("THEIA_REFLECTANCE_SENTINEL2_L2A",)}, 80,
                        "pages"),
}


def search(query, url, credentials, session, progress, is_cancelled, log, catalog="earth-search", page_size=None):
    """Footprints of the products matching ``query`` in one of the STAC catalogues (see the package docstring).

    ``page_size`` overrides the catalogue's page size (tests, benchmarks); the service may still answer less.
    """
    catalogue = CATALOGUES[catalog]
    own_session = session is None
    if own_session:  # a STAC search is a POST that is safe to repeat: retry it on 429/5xx like a GET
        session = http.new_session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"})
    client = _Client(catalogue, catalog, url, session, credentials, log, is_cancelled, page_size)
    if catalog == "earth-search" and query.orbit_direction:
        log("Earth Search items do not state the orbit direction: ORBIT_DIRECTION cannot be applied to them.")
    try:
        collections = catalogue.collections[query.level]
        found = [client.collection(query, name, scaled(progress, i / len(collections), (i + 1) / len(collections)))
                 for i, name in enumerate(collections)]
    finally:
        if own_session:
            session.close()
    results = merge(*found)  # the first collection wins: c1-l2a before the older l2a
    log(f"{catalogue.name}: {len(results)} products match.")
    progress(1.0, f"{catalogue.name}: {len(results)} products")
    return Found(results, *client.matched())


class _Client:
    """One search session against one service: requests, paging, period splitting, logging."""

    def __init__(self, catalogue, catalog, url, session, credentials, log, is_cancelled, page_size):
        self.catalogue = catalogue
        self.catalog = catalog
        self.root = (url or "").rstrip("/")
        self.session = session
        self.log = log
        self.is_cancelled = is_cancelled
        self.limit = min(page_size or catalogue.page_size, catalogue.page_size)
        self.api_key = getattr(credentials, "api_key", None) if catalog == "geodes" else None
        self.headers = {"Accept": "application/geo+json, application/json"}
        if self.api_key:
            self.headers["X-API-Key"] = self.api_key
        self.language = None  # CDSE STAC: "cql2-json" or "query", read from the landing page once
        self.body_logged = False
        self.windows = {}  # collection -> [(stopped early, items: the service's count when it stopped early)]

    # ---- one collection ---------------------------------------------------------------------------------

    def collection(self, query, collection, progress):
        if self.catalog == "cdse-stac" and self.language is None:
            self.language = self._filter_language()
        tiles = query.tiles if query.tiles and self._tile_per_search() else (None,)
        self.windows[collection] = []
        found = []
        for i, tile in enumerate(tiles):
            step = scaled(progress, i / len(tiles), (i + 1) / len(tiles))
            found.extend(self._window(query, collection, query.start, query.end, tile, step))
        return merge(found)

    def _tile_per_search(self):
        """GEODES matches tiles with ``contains``, and the query extension's ``in`` is not universal
        (stac-fastapi refuses it): one search per tile then. CQL2 says "any of these tiles" in one search."""
        return self.catalog == "geodes" or self.language != "cql2-json"

    def _window(self, query, collection, start, end, tile, progress):
        """Matching footprints of [start, end]; split in two when the service cannot page through it all."""
        body = request_body(self.catalog, query, collection, self.limit, start, end, tile, self.language)
        results, fetched, matched = [], 0, None
        pages = self._pages(body)
        for number, (data, more) in enumerate(pages, 1):
            features = data["features"]
            matched = _matched(data) if matched is None else matched
            if more and self._past_cap(matched, fetched + len(features)) and end - start > MIN_SPLIT:
                pages.close()
                return self._split(query, collection, start, end, tile, progress)
            fetched += len(features)
            page = self._footprints(features, query)
            results.extend(page)
            self.log(f"{self.catalogue.name} {collection}: page {number}, {len(features)} items, "
                     f"{len(page)} match ({len(results)} so far).")
            progress(min(fetched / matched, 0.99) if matched else 0.5, f"{self.catalogue.name}: {fetched} items")
            if more and self._enough(query, len(results), fetched, start, end):
                pages.close()
                self.windows[collection].append((True, matched))
                return results
        self.windows[collection].append((False, len(results)))
        return results

    def matched(self):
        """``(capped, matched)`` of the search (see :class:`Found`): windows that stopped early count with the
        service's number (None when it gives none); collections overlap (c1-l2a and l2a), so the largest wins."""
        windows = [w for per_collection in self.windows.values() for w in per_collection]
        if not any(stopped for stopped, _ in windows):
            return False, None
        totals = [sum(count for _, count in per_collection) if all(count is not None for _, count in per_collection)
                  else None for per_collection in self.windows.values()]
        return True, (None if None in totals else max(totals))

    def _enough(self, query, found, fetched, start, end):
        """Stop before the last page: MAX_RESULTS reached, or the page cap of a window too short to split."""
        if query.max_results and found >= query.max_results:
            return True
        if self.catalogue.window_cap and fetched > self.catalogue.window_cap:
            self.log(f"{self.catalogue.name}: stopped at the service's limit of {self.catalogue.window_cap} results "
                     f"for {_iso(start)} .. {_iso(end)}; the rest of that period is not listed: narrow the search.")
            return True
        return False

    def _past_cap(self, matched, fetched):
        cap = self.catalogue.window_cap
        if not cap:
            return False
        return matched > cap if matched is not None else fetched >= cap

    def _split(self, query, collection, start, end, tile, progress):
        middle = start + (end - start) / 2
        self.log(f"{self.catalogue.name}: more than {self.catalogue.window_cap} results between "
                 f"{_iso(start)} and {_iso(end)}; searching each half of the period on its own.")
        first = self._window(query, collection, start, middle, tile, scaled(progress, 0.0, 0.5))
        second = self._window(query, collection, middle, end, tile, scaled(progress, 0.5, 1.0))
        return merge(first, second)  # an item exactly at the middle comes back twice

    def _footprints(self, features, query):
        level = query.level  # the collection decides the level, whatever an item's own fields say
        footprints = []
        for item in features:
            footprint = item_footprint(item, self.catalog, level)
            if footprint is None:
                self.log(f"{self.catalogue.name}: skipped item '{item.get('id')}' (no acquisition date).")
            elif query.matches(footprint):
                footprints.append(footprint)
        return footprints

    # ---- paging -----------------------------------------------------------------------------------------

    def _pages(self, body):
        """Yield ``(page, more)`` until the last page; ``more`` says whether another page follows."""
        if self.catalogue.paging == "pages":
            yield from self._numbered_pages(body)
        else:
            yield from self._linked_pages(body)

    def _linked_pages(self, body):
        request, seen = ("POST", self.root + "/search", body), set()
        for _ in range(MAX_PAGES):
            data = self._send(*request)
            following = _next_request(data, request)
            key = json.dumps(following, sort_keys=True)
            if following is not None and key in seen:  # a next link pointing back: stop rather than loop
                self.log(f"{self.catalogue.name}: the next link repeats an earlier page; stopping there.")
                following = None
            seen.add(key)
            more = following is not None and bool(data["features"])
            yield data, more
            if not more:
                return
            request = following

    def _numbered_pages(self, body):
        fetched = 0
        for page in range(1, MAX_PAGES):
            data = self._send("POST", self.root + "/search", dict(body, page=page))
            count, matched = len(data["features"]), _matched(data)
            fetched += count
            # ``matched`` decides when known: a server that answers fewer than ``limit`` items still pages right.
            more = count > 0 and (fetched < matched if matched is not None else count >= self.limit)
            yield data, more
            if not more:
                return

    # ---- requests ---------------------------------------------------------------------------------------

    def _send(self, method, url, body):
        check_cancelled(self.is_cancelled)
        if body is not None and not self.body_logged:
            self.log(f"{self.catalogue.name}: POST {http.redact_url(url)} {json.dumps(body)}")
            self.body_logged = True
        with http.service_errors(self.catalogue.name, url):
            response = self.session.request(method, url, json=body, headers=self.headers)
        if response.status_code in (401, 403) and self.catalog == "geodes":
            response.close()
            raise ServiceError(self._geodes_refused(response.status_code))
        http.raise_for_service(response, self.catalogue.name)
        return self._features(response, url)

    def _features(self, response, url):
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            raise ServiceError(f"{self._who(url)} answered {http.redact_url(url)} with something that is not a STAC "
                               f"search result; check the URL (a STAC API root) or try again later.")
        return data

    def _geodes_refused(self, status):
        who = self._who(self.root)
        if not self.api_key:
            return (f"{who} refused the search without an API key (HTTP {status}); the authentication "
                    f"configuration (AUTH) needs the GEODES API key.")
        return (f"{who} refused the API key (HTTP {status}); the authentication configuration (AUTH) needs a "
                f"valid GEODES API key.")

    def _who(self, url):
        return f"{self.catalogue.name} ({http.host_of(url)})"

    def _filter_language(self):
        """CQL2 JSON when the landing page declares the filter extension, else the query extension."""
        with http.service_errors(self.catalogue.name, self.root):
            response = self.session.get(self.root + "/", headers=self.headers)
        try:
            conforms = (response.json().get("conformsTo") or []) if response.ok else []
        except (ValueError, AttributeError):
            conforms = []
        response.close()
        if not conforms:
            return "cql2-json"  # what CDSE documents; a broken root shows up in the search itself
        language = "cql2-json" if any(_is_filter_class(c) for c in conforms) else "query"
        self.log(f"{self.catalogue.name}: filters sent as {language}.")
        return language


def _is_filter_class(conformance):
    return "item-search#filter" in conformance or "cql2-json" in conformance


def _next_request(data, previous):
    """``(method, url, body)`` of the next page from ``links[rel=next]``, or None on the last page."""
    link = next((link for link in data.get("links") or [] if isinstance(link, dict) and link.get("rel") == "next"),
                None)
    if link is None:
        return None
    _, previous_url, previous_body = previous
    url = urllib.parse.urljoin(previous_url, link.get("href") or previous_url)
    if (link.get("method") or "GET").upper() != "POST":
        return "GET", url, None  # the token travels in the URL
    body = link.get("body")
    if body is None:
        body = previous_body
    elif link.get("merge"):
        body = {**(previous_body or {}), **body}
    return "POST", url, body


def _matched(data):
    for value in (data.get("numberMatched"), (data.get("context") or {}).get("matched")):
        if isinstance(value, int) and value >= 0:
            return value
    return None


# ---- request bodies ---------------------------------------------------------------------------------------

def request_body(catalog, query, collection, limit, start=None, end=None, tile=None, language=None):
    """The JSON body of the first search request for one collection (and, for GEODES, one tile)."""
    start, end = start or query.start, end or query.end
    body = {"collections": [collection], "limit": limit}
    if query.aoi:
        body["intersects"] = query.aoi_geojson()
    if catalog == "geodes":
        body["query"] = _geodes_query(query, start, end, tile)
        body["sortBy"] = [{"field": "start_datetime", "direction": "asc"}]  # stable pages
        return body
    body["datetime"] = f"{_iso(start)}/{_iso(end)}"
    if catalog == "cdse-stac" and language != "query":
        cql2 = _cql2(query)
        if cql2:
            body.update({"filter-lang": "cql2-json", "filter": cql2})
        return body
    filters = _query_filters(query, tile, with_orbit=catalog == "cdse-stac")
    if filters:
        body["query"] = filters
    return body


def _query_filters(query, tile, with_orbit):
    """The ``query`` extension object (one tile per search); Earth Search items lack the orbit fields, so they
    are not sent there."""
    filters = {}
    if query.max_cloud is not None:
        filters["eo:cloud_cover"] = {"lte": query.max_cloud}
    if query.platform:
        filters["platform"] = {"eq": _stac_platform(query.platform)}
    if tile:
        filters["grid:code"] = {"eq": f"MGRS-{tile}"}
    if with_orbit and query.relative_orbit is not None:
        filters["sat:relative_orbit"] = {"eq": query.relative_orbit}
    if with_orbit and query.orbit_direction:
        filters["sat:orbit_state"] = {"eq": query.orbit_direction.lower()}
    return filters


def _cql2(query):
    """The filters as a CQL2 JSON expression, or None when there are none."""
    terms = []
    if query.max_cloud is not None:
        terms.append({"op": "<=", "args": [{"property": "eo:cloud_cover"}, query.max_cloud]})
    if query.platform:
        terms.append({"op": "=", "args": [{"property": "platform"}, _stac_platform(query.platform)]})
    if query.tiles:  # "or" of "=": basic CQL2, where "in" needs the advanced comparison operators
        tiles = [{"op": "=", "args": [{"property": "grid:code"}, f"MGRS-{tile}"]} for tile in query.tiles]
        terms.append(tiles[0] if len(tiles) == 1 else {"op": "or", "args": tiles})
    if query.relative_orbit is not None:
        terms.append({"op": "=", "args": [{"property": "sat:relative_orbit"}, query.relative_orbit]})
    if query.orbit_direction:
        terms.append({"op": "=", "args": [{"property": "sat:orbit_state"}, query.orbit_direction.lower()]})
    if len(terms) > 1:
        return {"op": "and", "args": terms}
    return terms[0] if terms else None


def _geodes_query(query, start, end, tile):
    # GEODES filters dates through the query object (as eodag does): products overlapping [start, end].
    filters = {"start_datetime": {"lte": _iso(end)}, "end_datetime": {"gte": _iso(start)}}
    if query.max_cloud is not None:
        filters["eo:cloud_cover"] = {"lte": query.max_cloud}
    if tile:
        filters["grid:code"] = {"contains": tile}  # matches both 'T31TCJ' (before 2024-09-25) and '31TCJ'
    if query.relative_orbit is not None:
        filters["sat:relative_orbit"] = {"eq": query.relative_orbit}
    return filters


def _stac_platform(platform):
    return "sentinel-2" + platform[-1].lower()  # 'S2A' -> 'sentinel-2a'


def _iso(value):
    value = value.astimezone(dt.timezone.utc)
    fraction = f".{value.microsecond:06d}" if value.microsecond else ""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


# ---- items -> footprints ----------------------------------------------------------------------------------

_PLATFORM = re.compile(r"^(?:sentinel-?2|s2)([a-d])$", re.IGNORECASE)
_DESCRIBED = re.compile(r"^\s*(File size|Is online|Checksum MD5)\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_PRODUCT_TYPES = {"S2MSI1C": "L1C", "S2MSI2A": "L2A"}


def item_footprint(item, provider, level=""):
    """The footprint of one STAC item (None when it has no date); ``level`` when the collection decides it."""
    props = item.get("properties") or {}
    when = props.get("start_datetime") or props.get("datetime")
    if not when:
        return None
    assets = item.get("assets") or {}
    product = _product_asset(assets)
    described = _described(product)
    return Footprint(
        id=str(item.get("id")), name=_product_name(item, props, product), provider=provider,
        geometry=item.get("geometry"), sensing_start=parse_time(when),
        platform=_platform(props.get("platform")), level=level or _level(props), tile_id=_tile_id(props),
        relative_orbit=_integer(props.get("sat:relative_orbit")),
        orbit_direction=str(props.get("sat:orbit_state") or "").upper(),
        cloud_cover=_number(props.get("eo:cloud_cover")), size_bytes=_size(assets, product, described),
        online=_online(described, provider), checksum=_checksum(product, described),
        download_url=(product or {}).get("href") or _link(item, "self"),
        extra={"assets": {key: asset.get("href") for key, asset in assets.items() if isinstance(asset, dict)},
               "quicklook": _quicklook(item, assets), "scaling": _scaling(assets),
               "baseline": props.get("s2:processing_baseline") or props.get("processing:version")},
    )


def _scaling(assets):
    """{asset key: (scale, offset)} of the assets that state them: Earth Search's ``raster:bands`` (STAC 1.0) or
    the Data Space's ``raster:scale``/``raster:offset`` (STAC 1.1). Reflectance = DN x scale + offset."""
    found = {}
    for key, asset in assets.items():
        if not isinstance(asset, dict):
            continue
        raster = (asset.get("raster:bands") or [{}])[0] if isinstance(asset.get("raster:bands"), list) else {}
        scale = raster.get("scale", asset.get("raster:scale"))
        offset = raster.get("offset", asset.get("raster:offset", 0.0))
        if isinstance(scale, (int, float)) and scale > 0 and isinstance(offset, (int, float)):
            found[key] = (float(scale), float(offset))
    return found


def _product_name(item, props, product=None):
    """The product's own name: Earth Search's ``s2:product_uri``; at GEODES the zip's name, which THEIA items
    state only there (``identifier`` lacks the version: ``…_L2A_T31TCH_C`` for the ``…_C_V4-0`` product, see
    tests/fixtures/services), else ``identifier``; else the id (CDSE STAC: the ESA name)."""
    if props.get("s2:product_uri"):
        return str(props["s2:product_uri"])
    identifier = str(props.get("identifier") or "")
    title = str((product or {}).get("title") or "")
    if identifier and title.lower().endswith(".zip") and title.startswith(identifier):
        return title[:-len(".zip")]
    return identifier or str(item.get("id"))


def _platform(value):
    match = _PLATFORM.match(str(value or "").strip())
    return f"S2{match.group(1).upper()}" if match else ""


def _level(props):
    level = str(props.get("processing:level") or "").upper()
    if level in ("L1C", "L2A"):
        return level
    return _PRODUCT_TYPES.get(props.get("s2:product_type") or props.get("product:type"), "")


def _tile_id(props):
    """'31TCJ' from ``mgrs:*`` fields or ``grid:code`` ('MGRS-31TCJ' at Earth Search, 'T31TCJ' or '31TCJ' at GEODES)."""
    zone, band, square = (props.get(f"mgrs:{key}") for key in ("utm_zone", "latitude_band", "grid_square"))
    if zone and band and square:
        return f"{int(zone):02d}{band}{square}".upper()
    code = str(props.get("grid:code") or "").upper()
    code = code[len("MGRS-"):] if code.startswith("MGRS-") else code
    return code[1:] if len(code) == 6 and code.startswith("T") else code


def _product_asset(assets):
    """The asset holding the whole product (a zip), if the catalogue offers one."""
    for key, asset in assets.items():
        if not isinstance(asset, dict):
            continue
        names = (str(key).lower(), str(asset.get("title") or "").lower(), str(asset.get("href") or "").lower())
        if "zip" in str(asset.get("type") or "") or names[0] == "product" or any(n.endswith(".zip") for n in names):
            return asset
    return None


def _described(asset):
    """GEODES writes size, availability and MD5 into the asset description ('Is online: false')."""
    text = (asset or {}).get("description") or ""
    return {key.lower(): value for key, value in _DESCRIBED.findall(text)}


def _size(assets, product, described):
    if product is not None and _integer(product.get("file:size")) is not None:
        return _integer(product["file:size"])
    if described.get("file size", "").isdigit():
        return int(described["file size"])
    sizes = [_integer(a.get("file:size")) for a in assets.values() if isinstance(a, dict)]
    sizes = [size for size in sizes if size is not None]
    return sum(sizes) if sizes else None


def _online(described, provider):
    if "is online" in described:
        return described["is online"].lower() == "true"
    return True if provider == "earth-search" else None  # Earth Search assets are plain S3 objects, no tape


def _checksum(product, described):
    """'SHA256:<hex>' / 'MD5:<hex>' of the whole product only (a per-band checksum verifies no download)."""
    if product is None:
        return ""
    multihash = str(product.get("file:checksum") or "").lower()
    for prefix, algorithm, length in (("1220", "SHA256", 64), ("d50110", "MD5", 32), ("1114", "SHA1", 40)):
        if multihash.startswith(prefix) and len(multihash) == len(prefix) + length:
            return f"{algorithm}:{multihash[len(prefix):]}"
    md5 = described.get("checksum md5", "").lower()
    return f"MD5:{md5}" if re.fullmatch(r"[0-9a-f]{32}", md5) else ""


def _quicklook(item, assets):
    """The thumbnail (GEODES: the 'overview' asset); an https one first, since s3:// ones need AWS credentials."""
    hrefs = [asset.get("href") or "" for wanted in ("thumbnail", "overview") for key, asset in assets.items()
             if isinstance(asset, dict) and (key == wanted or wanted in (asset.get("roles") or []))]
    hrefs = [href for href in hrefs + [_link(item, "thumbnail")] if href]
    return next((href for href in hrefs if href.startswith(("http://", "https://"))), hrefs[0] if hrefs else "")


def _link(item, rel):
    return next((link.get("href") or "" for link in item.get("links") or []
                 if isinstance(link, dict) and link.get("rel") == rel), "")


def _integer(value):
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _number(value):
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None

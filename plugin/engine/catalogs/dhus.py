"""The ``dhus`` catalogue: any Data Hub Software (DHuS) mirror, searched through sentinelsat's ``SentinelAPI``.

sentinelsat sends DHuS OpenSearch requests (``GET <root>search?format=json&rows=..&start=..&q=<Solr query>``, HTTP
Basic auth) and parses the answer; this module builds its query from the filters, runs it on a session of the
plugin's factory (proxies, User-Agent, timeouts, retries) and turns the products into footprints.

Settings like sentinelsat's command line: the root from ``URL`` or ``DHUS_URL``; the user and password from
``AUTH``, or ``DHUS_USER``/``DHUS_PASSWORD``, or a ``~/.netrc`` entry for the host.
"""

import contextlib
import json
import os
import re

from .. import http
from ..callbacks import check_cancelled
from ..errors import MissingDependency, ParameterError, ServiceError
from ..footprints import Footprint, parse_product_name
from . import Found

SERVICE = "DHuS"
PAGE_SIZE = 100  # DHuS answers at most 100 rows per request
LEVELS = {"S2MSI1C": "L1C", "S2MSI2A": "L2A", "S2MSI2Ap": "L2A"}
SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}  # DHuS sizes are binary


def search(query, url, credentials, session, progress, is_cancelled, log, catalog="dhus"):
    sentinelsat = import_sentinelsat()
    root = root_url(url)
    user, password = dhus_credentials(credentials, root)
    own_session = sentinelsat_session(session, user, password, sentinelsat.__version__)
    api = sentinelsat.SentinelAPI(user, password, root, show_progressbars=False, timeout=own_session.timeout)
    api.session = own_session  # sentinelsat sends everything through this attribute
    keywords = _keywords(query)
    log(f"DHuS search at {http.redact_url(api.api_url)}: {api.format_query(**keywords)}")
    try:
        with dhus_errors(sentinelsat, api.api_url):
            return _pages(api, query, keywords, progress, is_cancelled, log)
    finally:
        own_session.close()


def import_sentinelsat():
    try:
        import sentinelsat
    except ImportError:
        raise MissingDependency("sentinelsat", "sentinelsat", "for the dhus catalogue") from None
    return sentinelsat


def root_url(url):
    root = (url or os.environ.get("DHUS_URL") or "").strip()
    if not root:
        raise ParameterError("URL", "the dhus catalogue needs the root URL of a DHuS mirror (for example "
                                    "https://colhub.met.no/): set URL or DHUS_URL.")
    if not re.match(r"(?i)^https?://[^/]", root):
        raise ParameterError("URL", f"'{http.redact_url(root)}' is not an http(s) URL of a DHuS mirror.")
    return root if root.endswith("/") else root + "/"


def dhus_credentials(credentials, root):
    """(user, password) from AUTH, else sentinelsat's environment variables, else ~/.netrc (as its CLI does)."""
    if credentials and credentials.username and credentials.password:
        return credentials.username, credentials.password
    user, password = os.environ.get("DHUS_USER"), os.environ.get("DHUS_PASSWORD")
    if user and password:
        return user, password
    import requests.utils

    netrc = requests.utils.get_netrc_auth(root)
    if netrc and all(netrc):
        return netrc
    raise ParameterError("AUTH", "the dhus catalogue needs a user name and password: choose an authentication "
                                 "configuration or set DHUS_USER and DHUS_PASSWORD.")


def sentinelsat_session(session, user, password, version):
    """A session of the plugin's factory for sentinelsat alone, with the caller's proxies, timeout and retries.

    SentinelAPI builds a plain ``requests.Session`` (no retries, and its ``timeout`` attribute is ignored by
    requests) and sends every request through ``api.session``: giving it one of ours fixes both. It is a new
    session rather than the caller's because sentinelsat needs the password on ``session.auth``, which must not
    follow the caller's session to other hosts.
    """
    if session is None:
        own = http.new_session()
    else:
        proxies = dict(getattr(session, "explicit_proxies", None) or {})
        if getattr(session, "no_proxy", None):
            proxies["no_proxy"] = ",".join(session.no_proxy)
        own = http.new_session(proxies=proxies or None, timeout=getattr(session, "timeout", (10, 60)),
                               user_agent=session.headers.get("User-Agent"))
        for prefix, adapter in session.adapters.items():
            # Same retry policy as the caller's session; a fresh connection pool (closing ours leaves theirs).
            own.mount(prefix, type(adapter)(max_retries=adapter.max_retries))
    own.headers["User-Agent"] = f"{own.headers['User-Agent']} sentinelsat/{version}"
    own.auth = (user, password)
    return own


def _keywords(query):
    """sentinelsat ``query()`` keywords for the filters DHuS can apply; everything is checked again client-side."""
    keywords = {"platformname": "Sentinel-2", "producttype": query.product_type,
                "date": (query.start, query.end)}
    if query.max_cloud is not None:
        keywords["cloudcoverpercentage"] = (0, query.max_cloud)
    if query.platform:
        keywords["platformserialidentifier"] = f"Sentinel-{query.platform[1:]}"
    if query.relative_orbit is not None:
        keywords["relativeorbitnumber"] = query.relative_orbit
    if query.orbit_direction:
        keywords["orbitdirection"] = query.orbit_direction
    if query.tiles:
        # ``tileid`` exists only on products ingested since 2017; the name carries the tile since late 2016.
        keywords["filename"] = {f"*_T{tile}_*" for tile in query.tiles}
    area = _area(query)
    if area:
        keywords.update(area)
    return keywords


def _area(query):
    """The AOI as sentinelsat's ``area`` (one polygon) or a raw OR of polygons (parts split at ±180°)."""
    wkts = [f"POLYGON(({','.join(f'{x:.6f} {y:.6f}' for x, y in ring)}))" for ring in query.aoi or ()]
    if len(wkts) == 1:
        return {"area": wkts[0]}
    if wkts:
        return {"raw": "(" + " OR ".join(f'footprint:"Intersects({wkt})"' for wkt in wkts) + ")"}
    return {}


def _pages(api, query, keywords, progress, is_cancelled, log):
    """One sentinelsat ``query`` per page of 100, so cancel, progress and MAX_RESULTS (counted after the
    client-side filters) apply between pages; ordered by sensing time so pages stay stable."""
    total = api.count(**keywords)
    log(f"DHuS: {total} products match; fetching {-(-total // PAGE_SIZE)} page(s) of up to {PAGE_SIZE}.")
    results, offset, dropped = [], 0, 0
    while offset < total:
        check_cancelled(is_cancelled)
        page = api.query(**keywords, order_by="+beginposition", limit=PAGE_SIZE, offset=offset)
        offset += PAGE_SIZE
        for uuid, properties in page.items():
            footprint = to_footprint(uuid, properties, api.api_url)
            if query.matches(footprint):
                results.append(footprint)
            else:
                dropped += 1
        progress(min(offset, total) / total, f"DHuS: {len(results)} products")
        if len(page) < PAGE_SIZE or (query.max_results and len(results) >= query.max_results):
            break
    if dropped:
        log(f"DHuS: {dropped} products did not meet every filter (checked here) and were left out.")
    if query.max_results and len(results) >= query.max_results and offset < total:
        return Found(results[: query.max_results], capped=True, matched=total)
    return Found(results)


def to_footprint(uuid, p, api_url):
    """A footprint from one product of sentinelsat's ``query()`` result (properties already typed by it)."""
    name = p.get("title") or re.sub(r"\.SAFE$", "", p.get("filename") or uuid)
    platform = p.get("platformserialidentifier") or ""
    return Footprint(
        id=uuid, name=name, provider="dhus", geometry=wkt_to_geojson(p.get("footprint")),
        sensing_start=_utc(p["beginposition"]) if p.get("beginposition") else parse_product_name(name).get(
            "sensing_start"),
        platform=("S" + platform.split("-", 1)[1]) if platform.startswith("Sentinel-") else "",
        level=LEVELS.get(p.get("producttype"), ""), tile_id=p.get("tileid") or "",
        relative_orbit=p.get("relativeorbitnumber"), orbit_direction=(p.get("orbitdirection") or "").upper(),
        cloud_cover=p.get("cloudcoverpercentage"), size_bytes=parse_size(p.get("size")),
        online=_online(p), download_url=p.get("link") or f"{api_url}odata/v1/Products('{uuid}')/$value",
        checksum="",  # DHuS search results carry none; the OData product entry has it (read at download)
        extra={k: v for k, v in (("quicklook_url", p.get("link_icon")), ("ondemand", p.get("ondemand"))) if v})


def wkt_to_geojson(wkt):
    """The DHuS footprint (WKT, lon/lat) as a GeoJSON geometry, coordinates unchanged; None when missing."""
    from osgeo import ogr

    geometry = ogr.CreateGeometryFromWkt(wkt) if wkt else None
    return json.loads(geometry.ExportToJson()) if geometry is not None else None


def parse_size(text):
    """Bytes from a DHuS size such as '799.87 MB' (binary units, as sentinelsat reads them); None if unreadable."""
    match = re.match(r"^\s*([\d.]+)\s*([KMGT]?B)\s*$", text or "", re.IGNORECASE)
    if not match:
        return None
    return round(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


def _online(properties):
    # DHuS OpenSearch has no online flag (``ondemand`` is something else: it is false for archived products
    # too); some mirrors add one. None means "unknown": the downloader asks OData ``Online`` per product.
    value = properties.get("online", properties.get("Online"))
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return value if isinstance(value, bool) else None


def _utc(value):
    import datetime as dt

    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


@contextlib.contextmanager
def dhus_errors(sentinelsat, url):
    """sentinelsat and requests exceptions as one-sentence errors naming the DHuS host (never a password)."""
    with http.service_errors(SERVICE, url):
        try:
            yield
        except sentinelsat.SentinelAPIError as exc:
            raise _translated(sentinelsat, exc, url) from None


def _translated(sentinelsat, exc, url):
    who = f"{SERVICE} ({http.host_of(url)})"
    response = getattr(exc, "response", None)
    if isinstance(exc, sentinelsat.UnauthorizedError):
        return ParameterError("AUTH", f"{who} refused the user name and password (HTTP 401); check the "
                                      f"authentication configuration, or DHUS_USER and DHUS_PASSWORD.")
    detail = http.redact(" ".join(str(getattr(exc, "msg", "") or "").split()))[:200].rstrip(".")
    if isinstance(exc, sentinelsat.ServerError) and (response is None or response.status_code < 400):
        # A 200 that is not OpenSearch JSON: a web portal, a closed hub's notice, a wrong path.
        generic = not detail or detail.startswith(("Invalid API response", "API response not valid"))
        said = "" if generic else f" ('{detail[:80]}')"  # sentinelsat's own texts say nothing more
        return ServiceError(f"{who} did not answer with DHuS search results{said}; check that URL is the root "
                            f"of a DHuS mirror (the address that ends before 'search').")
    if response is not None and response.status_code >= 400 and not isinstance(exc, sentinelsat.QuerySyntaxError):
        return ServiceError(http.status_message(response, SERVICE))
    return ServiceError(f"{who} rejected the search: {detail or type(exc).__name__}.")

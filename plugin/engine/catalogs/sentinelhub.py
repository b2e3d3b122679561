"""The ``sentinelhub`` catalogue: the Sentinel Hub Catalog API (STAC 1.0.0 with CQL2 filters) through sentinelhub-py.

``URL`` is the deployment's base URL: the Copernicus Data Space one (``https://sh.dataspace.copernicus.eu``, the
default) or the commercial one (``https://services.sentinel-hub.com`` and its regional hosts). ``AUTH`` holds an
OAuth client of that deployment (user name = client id, password = client secret; on CDSE created in the Sentinel
Hub dashboard); without it sentinelhub-py's own ``SH_CLIENT_ID``/``SH_CLIENT_SECRET`` are used. The token endpoint
follows from the deployment (``SENTINEL2_SH_TOKEN_URL`` overrides it, for mirrors and tests).

Network: sentinelhub-py makes its own connections (``requests.request`` and requests-oauthlib, no session or
proxy setting in ``SHConfig``), so it follows the environment's proxy variables (HTTP_PROXY, HTTPS_PROXY,
NO_PROXY), not the QGIS proxy settings, and sends its own User-Agent (the log says so when QGIS has a proxy).
The session's timeout and retry policy are copied into ``SHConfig``. One login (token) per token URL, client id
and secret is kept for the QGIS session and refreshed by sentinelhub-py, so repeated searches do not log in again.
"""

import contextlib
import functools
import hashlib
import os
import re
import urllib.parse

from .. import http
from ..callbacks import check_cancelled
from ..errors import MissingDependency, ParameterError, ServiceError
from ..footprints import Footprint, parse_product_name, parse_time
from . import Found

SERVICE = "Sentinel Hub"
PAGE_LIMIT = 100  # the Catalog API's maximum page size
CDSE_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
COMMERCIAL_TOKEN_URL = "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
COLLECTIONS = {"L1C": "SENTINEL2_L1C", "L2A": "SENTINEL2_L2A"}
_LOGINS = {}  # see _login


def search(query, url, credentials, session, progress, is_cancelled, log, catalog="sentinelhub"):
    sh = _import_sentinelhub()
    base = _base_url(url)
    client_id, client_secret = _client(credentials)
    config = _config(sh, base, client_id, client_secret, session)
    arguments = _search_arguments(sh, query)
    log(f"Sentinel Hub Catalog search at {base} (token from {config.sh_token_url}): "
        f"{_describe(arguments, query.level)}")
    route = _proxy_route(session)
    if getattr(session, "explicit_proxies", None):
        log("Sentinel Hub: sentinelhub-py's requests and its sign-in go through the QGIS proxy.")
    catalog_api = sh.SentinelHubCatalog(config=config)
    with _sentinelhub_errors(sh, base, config.sh_token_url):
        # Our login instead of the client's default cache, which is keyed by client id and base URL only
        # (a changed secret or token URL would keep using an old login).
        login = _login(sh, config, route)
        if route is None:
            catalog_api.client = sh.SentinelHubDownloadClient(config=config, session=login)
        else:
            catalog_api.client = _proxied_classes(sh)[0](config=config, session=login, proxies_for=route)
    iterator = catalog_api.search(_collection(sh, query.level, base), **arguments)  # sends nothing yet
    features = _features(sh, iterator, base, config.sh_token_url, is_cancelled)
    return _collect(features, arguments["limit"], query, progress, log)


def _login(sh, config, route=None):
    """A SentinelHubSession per token URL, client id and secret (and proxy): one login reused across searches,
    refreshed by sentinelhub-py before the token expires."""
    digest = hashlib.sha256(config.sh_client_secret.encode()).hexdigest()
    proxies = tuple(sorted(route(config.sh_token_url).items())) if route else ()
    key = (config.sh_token_url, config.sh_client_id, digest, proxies)
    if key not in _LOGINS:  # the session fetches its token now
        _LOGINS[key] = (sh.SentinelHubSession(config=config) if route is None
                        else _proxied_classes(sh)[1](config=config, proxies_for=route))
    return _LOGINS[key]


def _proxy_route(session):
    """``url -> proxies`` for sentinelhub-py's own requests: the QGIS proxy our session uses (none for hosts in
    its no_proxy, and then no environment proxy either); None when QGIS sets no proxy (requests' defaults)."""
    if session is None or not getattr(session, "explicit_proxies", None):
        return None

    def route(url):
        return session.proxies_for(url) or {"http": None, "https": None}

    return route


@functools.lru_cache(maxsize=1)
def _proxied_classes(sh):
    """sentinelhub-py's download client and login session, sending their requests through ``proxies_for(url)``
    (sentinelhub-py has no proxy setting: it calls ``requests`` directly, which only reads HTTP(S)_PROXY)."""
    import requests
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session
    from sentinelhub.download.handlers import fail_user_errors, retry_temporary_errors

    class ProxiedClient(sh.SentinelHubDownloadClient):
        def __init__(self, *args, proxies_for, **kwargs):
            super().__init__(*args, **kwargs)
            self.proxies_for = proxies_for

        def _do_download(self, request):
            return requests.request(request.request_type.value, url=request.url, json=request.post_values,
                                    headers=self._prepare_headers(request),
                                    timeout=self.config.download_timeout_seconds,
                                    proxies=self.proxies_for(request.url))

    class ProxiedSession(sh.SentinelHubSession):
        def __init__(self, *args, proxies_for, **kwargs):
            self.proxies_for = proxies_for  # before the base class signs in
            super().__init__(*args, **kwargs)

        @retry_temporary_errors
        @fail_user_errors
        def _fetch_token(self, request):
            # The client-credentials sign-in sentinelhub-py makes, through the proxy.
            with OAuth2Session(client=BackendApplicationClient(client_id=self.config.sh_client_id)) as oauth:
                oauth.register_compliance_hook("access_token_response", self._compliance_hook)
                return oauth.fetch_token(token_url=request.url, client_id=self.config.sh_client_id,
                                         client_secret=self.config.sh_client_secret,
                                         headers={**self.DEFAULT_HEADERS, **sh.SHConstants.HEADERS},
                                         include_client_id=True, proxies=self.proxies_for(request.url))

    return ProxiedClient, ProxiedSession


def _import_sentinelhub():
    try:
        import sentinelhub
    except ImportError:
        raise MissingDependency("sentinelhub", "sentinelhub", "for the sentinelhub catalogue") from None
    return sentinelhub


def _base_url(url):
    base = (url or "https://sh.dataspace.copernicus.eu").strip().rstrip("/")
    if not re.match(r"(?i)^https?://[^/]", base):
        raise ParameterError("URL", f"'{http.redact_url(base)}' is not an http(s) URL of a Sentinel Hub deployment.")
    return base


def token_url(base):
    """The OAuth token endpoint of the deployment at ``base`` (``SENTINEL2_SH_TOKEN_URL`` wins)."""
    override = os.environ.get("SENTINEL2_SH_TOKEN_URL", "").strip()
    if override:
        return override
    host = urllib.parse.urlsplit(base).hostname or ""
    if host == "dataspace.copernicus.eu" or host.endswith(".dataspace.copernicus.eu"):
        return CDSE_TOKEN_URL
    if host.endswith(".sentinel-hub.com"):
        return COMMERCIAL_TOKEN_URL  # regional deployments log in at the main one
    # Another deployment (a mirror, a proxy path): Sentinel Hub's layout on the same origin.
    return f"{base}/auth/realms/main/protocol/openid-connect/token"


def _client(credentials):
    if credentials and credentials.username and credentials.password:
        return credentials.username, credentials.password
    client_id, secret = os.environ.get("SH_CLIENT_ID"), os.environ.get("SH_CLIENT_SECRET")
    if client_id and secret:
        return client_id, secret
    raise ParameterError("AUTH", "the sentinelhub catalogue needs an OAuth client of the Sentinel Hub deployment: "
                                 "choose an authentication configuration (user name = client id, password = client "
                                 "secret) or set SH_CLIENT_ID and SH_CLIENT_SECRET.")


def _config(sh, base, client_id, client_secret, session):
    """An SHConfig for this search only: defaults (no config.toml read or written), our timeout and retries."""
    attempts, sleep, timeout = _transport(session)
    return sh.SHConfig(use_defaults=True, sh_base_url=base, sh_token_url=token_url(base), sh_client_id=client_id,
                       sh_client_secret=client_secret, max_download_attempts=attempts, download_sleep_time=sleep,
                       download_timeout_seconds=timeout, max_retries=attempts)


def _transport(session):
    """(attempts, first wait, timeout) from the session's retry policy: sentinelhub-py retries on its own."""
    if session is None:
        return 4, 1.0, 60.0
    retry = session.get_adapter("https://").max_retries
    attempts = 1 + max(retry.total or 0, 0)
    # requests accepts the (connect, read) pair sentinelhub-py passes through as ``timeout=``.
    return attempts, max(retry.backoff_factor, 0.01), getattr(session, "timeout", 60.0)


def _collection(sh, level, base):
    """Sentinel-2 L1C/L2A defined for this deployment, as sentinelhub-py documents for CDSE (``define_from``)."""
    name = f"{COLLECTIONS[level]}_AT_{re.sub(r'[^A-Za-z0-9]+', '_', base).strip('_').upper()}"
    return getattr(sh.DataCollection, COLLECTIONS[level]).define_from(name, service_url=base)


def _search_arguments(sh, query):
    """Catalog search arguments: time, area and cloud cover server-side; the rest is checked on each result."""
    arguments = {"time": (query.start, query.end), "limit": _page_limit(query)}
    area = query.aoi_geojson()
    if area:
        arguments["geometry"] = sh.Geometry(area, sh.CRS.WGS84)
    if query.max_cloud is not None:
        arguments["filter"] = f"eo:cloud_cover <= {query.max_cloud:g}"  # CQL2 text, sentinelhub-py's default
    return arguments


def _page_limit(query):
    return min(PAGE_LIMIT, query.max_results) if query.max_results else PAGE_LIMIT


def _describe(arguments, level):
    parts = [f"collection sentinel-2-{level.lower()}", f"time {arguments['time'][0]:%Y-%m-%d}/"
             f"{arguments['time'][1]:%Y-%m-%d}"]
    if "geometry" in arguments:
        parts.append(f"intersects {arguments['geometry'].geometry.wkt[:300]}")
    if "filter" in arguments:
        parts.append(f"filter '{arguments['filter']}'")
    return ", ".join(parts) + f", {arguments['limit']} per page"


def _collect(features, limit, query, progress, log):
    """Keep what meets every filter until the last page or MAX_RESULTS."""
    results, dropped, seen, capped = [], 0, 0, False
    for feature in features:
        seen += 1
        footprint = to_footprint(feature)
        if query.matches(footprint):
            results.append(footprint)
        else:
            dropped += 1
        if query.max_results and len(results) >= query.max_results:
            capped = True  # the Catalog API gives no total: how many more match is not known
            break
        if seen % limit == 0:  # a page is done; the service gives no total, so the bar only approaches 1
            progress(1 - 1 / (1 + seen // limit), f"Sentinel Hub: {len(results)} products")
    log(f"Sentinel Hub: {seen} products in {max(-(-seen // limit), 1)} page(s); {dropped} did not meet every "
        f"filter (checked here) and were left out.")
    progress(1.0, f"Sentinel Hub: {len(results)} products")
    return Found(results, capped=capped)


def _features(sh, iterator, base, token, is_cancelled):
    """The CatalogSearchIterator's features: it POSTs again with ``next`` when a page is used up, so checking
    cancel before each step stops before the next page is requested."""
    while True:
        check_cancelled(is_cancelled)
        with _sentinelhub_errors(sh, base, token):
            feature = next(iterator, None)
        if feature is None:
            return
        yield feature


@contextlib.contextmanager
def _sentinelhub_errors(sh, base, token):
    """sentinelhub-py, oauthlib and requests failures as one sentence naming the deployment (never a secret)."""
    try:
        yield
    except Exception as exc:  # they raise many kinds: translate the known ones, let the others through
        error = _translated(sh, exc, base, token)
        if error is None:
            raise
        raise error from None


def to_footprint(feature):
    """A footprint from one Catalog feature (STAC item; the id is the SAFE name)."""
    properties = feature.get("properties") or {}
    platform = properties.get("platform") or ""  # 'sentinel-2a'
    geometry = feature.get("geometry")
    if isinstance(geometry, dict):
        geometry = {k: v for k, v in geometry.items() if k != "crs"}  # CRS84: lon/lat as EPSG:4326 expects
    href = ((feature.get("assets") or {}).get("data") or {}).get("href")
    return Footprint(
        id=feature["id"], name=feature["id"], provider="sentinelhub", geometry=geometry,
        sensing_start=parse_time(properties["datetime"]) if properties.get("datetime")
        else parse_product_name(feature["id"]).get("sensing_start"),
        platform=("S" + platform.rsplit("-", 1)[1].upper()) if platform.startswith("sentinel-") else "",
        level={"sentinel-2-l1c": "L1C", "sentinel-2-l2a": "L2A"}.get(feature.get("collection"), ""),
        # Sentinel-2 images only on descending (day-side) passes; the Catalog does not repeat it.
        orbit_direction="DESCENDING",
        cloud_cover=properties.get("eo:cloud_cover"),
        extra={k: v for k, v in (("s3_href", href), ("epsg", properties.get("proj:epsg"))) if v})


def _translated(sh, exc, base, token):
    from oauthlib.oauth2 import InsecureTransportError, OAuth2Error

    who = f"{SERVICE} ({http.host_of(base)})"
    if isinstance(exc, InsecureTransportError):  # oauthlib sends client secrets over https only
        return ParameterError("URL", f"the token URL of {who}, {http.redact_url(token)}, is not https; use the "
                                     f"https address (or set SENTINEL2_SH_TOKEN_URL).")
    if isinstance(exc, OAuth2Error):
        return ParameterError("AUTH", f"{who} refused the OAuth client ({exc.error}) at {http.redact_url(token)}; "
                                      f"check the client id (user name) and secret (password) of AUTH.")
    cause = getattr(exc, "request_exception", None)
    if isinstance(exc, sh.exceptions.DownloadFailedException) and cause is not None:
        response = getattr(cause, "response", None)
        if response is not None:
            return ServiceError(http.status_message(response, SERVICE))
        return http.service_error(cause, SERVICE, getattr(getattr(cause, "request", None), "url", None) or base)
    if isinstance(exc, sh.exceptions.OutOfRequestsException):
        return ServiceError(f"{who} is rate limiting requests (HTTP 429) and still was after the retries; wait a "
                            f"few minutes and search again.")
    if isinstance(exc, (ValueError, KeyError, TypeError, sh.exceptions.MissingDataInRequestException)):
        return ServiceError(f"{who} did not answer with Catalog search results; check that URL is the base URL of "
                            f"a Sentinel Hub deployment (such as https://sh.dataspace.copernicus.eu).")
    return None

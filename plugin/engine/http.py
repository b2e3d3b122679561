"""The one HTTP session factory every network feature uses, and the translation of HTTP failures into
one-sentence :class:`~.errors.ServiceError` messages.

What a session from :func:`new_session` does for every request:
- sends a User-Agent naming the plugin and its version;
- applies a default ``(connect, read)`` timeout unless the caller passes ``timeout=``;
- routes through the given proxies (the plugin passes QGIS's proxy settings), bypassing the hosts in
  ``proxies['no_proxy']``; without proxies, requests' usual environment handling (HTTP(S)_PROXY) applies;
- retries idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) on 429/500/502/503/504, dropped or
  reset connections, and read timeouts, with exponential backoff, honouring ``Retry-After`` (seconds or an
  HTTP date), every wait capped at ``max_backoff``. Connection failures before anything was sent are retried
  for every method. When retries run out on a status, the last response is returned (not raised) so
  :func:`raise_for_service` can say what the service answered;
- raises instead of returning short data when a body ends before its Content-Length (urllib3 1.26, which
  Debian ships, silently truncates by default). Retrying or resuming such a body is the download engine's job
  (Range requests and size checks); this layer only guarantees that truncation is never silent.

``requests`` is imported only when a session is made, so importing this module costs nothing at plugin start.
"""

import contextlib
import functools
import re
import urllib.parse

from .errors import ServiceError
from .version import user_agent as plugin_user_agent

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# Query parameters whose values never appear in a message (CDSE accepts ``token=``, S3 presigned URLs sign).
SECRET_PARAMETERS = (
    "token", "access_token", "refresh_token", "id_token", "password", "passwd", "pwd", "apikey", "api_key",
    "key", "secret", "client_secret", "signature", "sig", "x-amz-signature", "x-amz-credential",
    "x-amz-security-token",
)
_MAX_URL_IN_MESSAGE = 200


def new_session(proxies=None, timeout=(10, 60), retries=5, backoff=0.5, max_backoff=60, user_agent=None,
                retry_methods=IDEMPOTENT_METHODS):
    """A ``requests.Session`` configured as described in the module docstring.

    ``proxies``: ``{'http': url, 'https': url, 'no_proxy': 'host1,.domain2'}`` or None (environment).
    ``timeout``: seconds, or a ``(connect, read)`` pair. ``retries``: attempts after the first one.
    ``backoff``: the factor of the exponential wait (0, 2b, 4b, 8b... seconds between attempts).
    ``retry_methods``: methods retried on a status or a read error; pass e.g. ``IDEMPOTENT_METHODS | {"POST"}``
    for POSTs that are safe to repeat (STAC searches, token requests).
    """
    session_class, retry_class, _ = _classes()
    retry = retry_class(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,  # TLS and proxy errors do not heal by retrying: fail fast with a clear message
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset(m.upper() for m in retry_methods),
        backoff_factor=backoff,
        respect_retry_after_header=True,
        raise_on_status=False,
        max_backoff=max_backoff,
    )
    return session_class(retry, timeout, proxies, user_agent or plugin_user_agent())


def __getattr__(name):
    # ``http.Session`` for isinstance checks without importing requests at module import.
    if name == "Session":
        return _classes()[0]
    raise AttributeError(name)


@functools.lru_cache(maxsize=1)
def _classes():
    """Define the requests/urllib3 subclasses on first use (keeps the module import free of requests)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class CappedRetry(Retry):
        """urllib3's Retry with every wait (backoff and Retry-After) capped at ``max_backoff`` seconds."""

        def __init__(self, *args, max_backoff=60, **kwargs):
            super().__init__(*args, **kwargs)
            self.max_backoff = max_backoff

        def new(self, **kwargs):
            kwargs.setdefault("max_backoff", self.max_backoff)
            return super().new(**kwargs)

        def get_backoff_time(self):
            return min(super().get_backoff_time(), self.max_backoff)

        def parse_retry_after(self, retry_after):
            try:
                seconds = super().parse_retry_after(retry_after)
            except Exception:  # an unparsable Retry-After must not abort: fall back to the backoff
                return 0
            return min(seconds, self.max_backoff)

    class StrictAdapter(HTTPAdapter):
        def build_response(self, req, resp):
            # urllib3 1.26 returns short data when the connection closes before Content-Length bytes;
            # make it raise (ChunkedEncodingError) as urllib3 2 does.
            resp.enforce_content_length = True
            return super().build_response(req, resp)

    class Session(requests.Session):
        """A session with a default timeout and proxies chosen per URL (see :func:`new_session`)."""

        def __init__(self, retry, timeout, proxies, user_agent):
            super().__init__()
            self.timeout = timeout
            self.headers["User-Agent"] = user_agent
            adapter = StrictAdapter(max_retries=retry, pool_maxsize=32)
            self.mount("https://", adapter)
            self.mount("http://", adapter)
            self.no_proxy = _no_proxy_entries((proxies or {}).get("no_proxy"))
            self.proxies.update({k: v for k, v in (proxies or {}).items() if k != "no_proxy" and v})
            self.explicit_proxies = dict(self.proxies)

        def request(self, method, url, **kwargs):
            kwargs.setdefault("timeout", self.timeout)
            return super().request(method, url, **kwargs)

        def send(self, request, **kwargs):
            kwargs.setdefault("timeout", self.timeout)
            if self.explicit_proxies:
                # Decided here, per URL and also for each redirect: requests itself ignores a
                # ``no_proxy`` key in explicit proxies, and environment proxies must not override QGIS's.
                kwargs["proxies"] = self.proxies_for(request.url)
            return super().send(request, **kwargs)

        def proxies_for(self, url):
            """The proxies to use for ``url``: none when its host is in ``no_proxy``."""
            parts = urllib.parse.urlsplit(url)
            if _bypassed(parts.hostname or "", parts.port, self.no_proxy):
                return {}
            return dict(self.explicit_proxies)

    return Session, CappedRetry, StrictAdapter


def _no_proxy_entries(value):
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip().lower() for item in items if item and item.strip())


def _bypassed(host, port, entries):
    """curl-like ``no_proxy`` matching: ``*`` (all), ``host``, ``host:port``, ``.domain`` or ``domain``
    (the domain and its subdomains)."""
    host = host.lower()
    for entry in entries:
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and (not entry_port.isdigit() or port != int(entry_port)):
            continue
        name = name.lstrip("*").lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


# ---- messages ---------------------------------------------------------------------------------------

# ``name=value`` anywhere (URLs, exception texts, error bodies), not only after ``?`` or ``&``.
_SECRET_QUERY = re.compile(
    r"(?i)((?<![\w.-])(?:%s)=)[^&#\s'\"]*" % "|".join(re.escape(p) for p in SECRET_PARAMETERS))
_URL_PASSWORD = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")


def redact(text):
    """``text`` with secrets removed: secret query parameters, passwords in URLs, Bearer/Basic credentials."""
    text = _SECRET_QUERY.sub(r"\1***", str(text))
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _AUTH_HEADER.sub(r"\1 ***", text)


def redact_url(url):
    """A URL fit for a message: secrets redacted, shortened when very long (long OData filters)."""
    text = redact(url or "")
    return text if len(text) <= _MAX_URL_IN_MESSAGE else text[: _MAX_URL_IN_MESSAGE - 1] + "…"


def host_of(url):
    return urllib.parse.urlsplit(url or "").hostname or "the server"


def _named(service, url):
    """``'Copernicus Data Space (host)'``, or just the host when no service name is known."""
    host = host_of(url)
    return f"{service} ({host})" if service and service != host else host


def raise_for_service(response, service=None):
    """Return ``response`` when it succeeded (status < 400); otherwise close it and raise :class:`ServiceError`
    with one sentence naming the service, the status and what to do."""
    if response.status_code < 400:
        return response
    message = status_message(response, service)
    response.close()
    raise ServiceError(message)


def status_message(response, service=None):
    """The one-sentence explanation of an HTTP error response."""
    status = response.status_code
    url = redact_url(response.url)
    who = _named(service, response.url)
    code = f"HTTP {status}{' ' + response.reason if response.reason else ''}"
    if status in (401, 403):
        return (f"{who} refused access ({code}) to {url}; check the authentication configuration (AUTH) "
                f"and that the account may use this service.")
    if status == 404:
        return f"{who} has nothing at {url} ({code}); check the URL and that the item still exists."
    if status == 407:
        return (f"The proxy refused the request to {who} ({code}); check the user and password in the QGIS "
                f"proxy settings.")
    if status == 429:
        return (f"{who} is rate limiting requests ({code}) and still was after the retries; wait a few minutes "
                f"or lower the number of parallel requests.")
    if status >= 500:
        return f"{who} is unavailable ({code}) for {url}; try again later."
    detail = _error_detail(response)
    return f"{who} rejected the request ({code}) for {url}{': ' + detail if detail else ''}."


def _error_detail(response):
    """A short, redacted reason from a JSON error body (OData ``detail``, OAuth ``error_description``...)."""
    if "json" not in (response.headers.get("Content-Type") or "") or len(response.content) > 100_000:
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return ""
    for key in ("error_description", "detail", "message", "description", "error"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return redact(" ".join(value.split()))[:200].rstrip(".")
    return ""


def service_error(exc, service=None, url=None):
    """The :class:`ServiceError` for a requests/urllib3 exception: one sentence naming the host."""
    import requests.exceptions as rex
    import urllib3.exceptions as u3

    request = getattr(exc, "request", None)
    url = getattr(request, "url", None) or url
    who = _named(service, url)
    host = host_of(url)
    if isinstance(exc, rex.ProxyError):
        text = f"Could not reach {who} through the proxy; check the QGIS proxy settings (Options > Network)."
    elif isinstance(exc, rex.SSLError):
        text = f"The secure connection to {who} failed (certificate or TLS error); check the system certificates."
    elif isinstance(exc, rex.ConnectTimeout):
        text = f"{who} did not accept a connection in time; check the network connection and the proxy settings."
    elif isinstance(exc, u3.ReadTimeoutError):
        text = f"{who} did not answer in time; try again later."
    elif isinstance(exc, (rex.ChunkedEncodingError, rex.ContentDecodingError, u3.ProtocolError)):
        text = f"The connection to {who} broke before the whole answer arrived; try again."
    elif isinstance(exc, rex.TooManyRedirects):
        text = f"{who} redirected too many times for {redact_url(url)}; check the URL."
    elif isinstance(exc, (rex.MissingSchema, rex.InvalidSchema, rex.InvalidURL)):
        text = f"'{redact_url(url)}' is not a usable http(s) URL for {service or 'the service'}."
    elif isinstance(exc, rex.RetryError):
        text = f"{who} kept failing after several retries; try again later."
    elif isinstance(exc, (rex.ConnectionError, rex.Timeout)):
        text = _connection_sentence(exc, who, host)
    else:
        text = f"The request to {who} failed ({type(exc).__name__}); try again later."
    error = ServiceError(text)
    error.detail = redact(f"{type(exc).__name__}: {exc}")  # for debugging; never shown with secrets
    return error


def _connection_sentence(exc, who, host):
    reason = str(exc)
    if any(s in reason for s in ("Name or service not known", "name resolution", "getaddrinfo failed",
                                 "nodename nor servname", "No address associated")):
        return f"Could not find the host {host}; check the URL and the network connection."
    if "Read timed out" in reason:
        return f"{who} did not answer in time; try again later."
    if "Connection refused" in reason or "10061" in reason:
        return f"{who} refused the connection; check the URL or try again later."
    return f"Could not reach {who}: the connection failed or was dropped, even after retries; try again later."


@contextlib.contextmanager
def service_errors(service=None, url=None):
    """Turn requests/urllib3 exceptions raised inside the block into one-sentence :class:`ServiceError`.

    The original exception is not chained: its text may hold URLs with secrets (kept redacted in ``detail``).
    """
    import requests
    import urllib3.exceptions

    try:
        yield
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise service_error(exc, service, url) from None


def fetch(session, method, url, service=None, **kwargs):
    """``session.request`` whose failures, network or HTTP status, raise one-sentence :class:`ServiceError`."""
    with service_errors(service, url):
        response = session.request(method, url, **kwargs)
        return raise_for_service(response, service)

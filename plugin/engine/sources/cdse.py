"""Copernicus Data Space downloads (``SOURCE=cdse``): product zips from OData ``Products(<Id>)/$value`` with a
bearer token from the identity service (reference notes §1.2-1.5).

- One sign-in per batch: the token is reused by every download, refreshed with the refresh token before it
  expires and when a server answers 401 (``transfer``'s ``on_unauthorized``), and a new password sign-in happens
  only when the refresh token is dead. The service allows 100 sessions and each sign-in starts one.
- The token goes only to Data Space hosts (``https://*.dataspace.copernicus.eu``) and to the hosts of the
  configured download and token URLs; the catalogue host redirects to the "zipper" host, which needs it, while
  a redirect anywhere else gets no token.
- Footprints that do not carry an OData ``$value`` link (Sentinel Hub, Earth Search, DHuS...) are looked up by
  product name in the OData catalogue first; offline products are reported without a request (the Data Space
  cannot restore them through OData).
- The catalogue's BLAKE3 is verified when the ``blake3`` package is installed, its MD5 otherwise; the size is
  left unknown when the catalogue says 0.
"""

import os
import re
import threading
import time
import urllib.parse

from .. import http, transfer
from ..catalogs import cdse as catalogue
from ..errors import ParameterError, ServiceError
from . import common

SERVICE = "Copernicus Data Space"
TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
CATALOGUE_URL = "https://catalogue.dataspace.copernicus.eu/odata/v1"
CLIENT_ID = "cdse-public"
TRUSTED_SUFFIX = ".dataspace.copernicus.eu"
MAX_CONNECTIONS = 4  # per account (quotas, reference notes §1.4)
LOOKUP_BATCH = 20  # names per catalogue request ("Name eq 'a' or Name eq 'b' ..."), well below URL limits
RESTORE = ("the Data Space restores offline products only through an order in its Workspace, after which a new "
           "search shows them online.")
_VALUE_URL = re.compile(r"/Products\([0-9A-Fa-f-]{36}\)/\$value$")


def token_url():
    return os.environ.get("SENTINEL2_CDSE_TOKEN_URL") or TOKEN_URL


def download_root():
    return (os.environ.get("SENTINEL2_CDSE_DOWNLOAD_URL") or catalogue.DOWNLOAD_URL).rstrip("/")


def lookup_root(options=None):
    """The OData root products are looked up in: the source URL, else the configured download root (the same
    OData service), else the public catalogue."""
    url = getattr(options, "url", None) or os.environ.get("SENTINEL2_CDSE_DOWNLOAD_URL") or CATALOGUE_URL
    return url.rstrip("/")


def validate(options):
    credentials = getattr(options, "credentials", None)
    if not credentials or not credentials.username or not credentials.password:
        raise ParameterError("AUTH", f"downloads from the {SERVICE} need an account: choose an authentication "
                                     f"configuration of type Basic with its username and password.")


def download(footprints, folder, options, session, progress, is_cancelled, log):
    """See ``sources/__init__.py``; raises ParameterError (AUTH) when the sign-in is refused."""
    validate(options)
    results, ready = [], []
    known, results_lookup = _with_odata_links(footprints, options, session, log)
    results += results_lookup
    for footprint in known:
        if footprint.online is False:
            results.append(common.offline_result(footprint, SERVICE, RESTORE))
        else:
            ready.append(footprint)
    if not ready:
        return results
    if options.parallel > MAX_CONNECTIONS:
        log(f"{SERVICE} allows {MAX_CONNECTIONS} connections per account; with PARALLEL={options.parallel} some "
            f"downloads may be refused (HTTP 429) and retried.")
    token = Token(session, token_url(), options.credentials.username, options.credentials.password)
    pairs, failures = _transfers(ready, folder, token)
    results += failures
    if any(not os.path.exists(job.dest) for _, job in pairs):
        token.sign_in()  # now, from this thread: a refused password is one error for the batch, not N failures
        log(f"{SERVICE}: signed in at {http.host_of(token.url)}.")
    report = transfer.download_all([job for _, job in pairs], session, options.parallel, progress, is_cancelled,
                                   log, on_unauthorized=token.renew)
    if token.sign_ins or token.refreshes:
        log(f"{SERVICE}: {token.sign_ins} sign-in(s) and {token.refreshes} token refresh(es) for {len(pairs)} "
            f"product(s).")
    return results + common.results_from_report(pairs, report)


def _transfers(footprints, folder, token):
    pairs, failures = [], []
    for footprint in footprints:
        try:
            job = transfer.Transfer(footprint.download_url, common.zip_path(folder, footprint),
                                    footprint.size_bytes or None, footprint.checksum or "",
                                    auth=token.auth, name=common.stem(footprint.name))
        except ValueError:
            failures.append(common.failed(footprint, f"the catalogue's checksum '{footprint.checksum}' cannot be "
                                                     f"used; search again."))
            continue
        pairs.append((footprint, job))
    return pairs, failures


# ---- trusted hosts --------------------------------------------------------------------------------------------


def trusted(url):
    """True when ``url`` may receive the Data Space token (see the module docstring)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host.endswith(TRUSTED_SUFFIX):
        return True
    configured = {_origin(download_root()), _origin(token_url())}
    return _origin(url) in configured


def _origin(url):
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.netloc or "").lower()


# ---- the token ------------------------------------------------------------------------------------------------


class Token:
    """The batch's one bearer token (thread-safe: ``auth`` and ``renew`` run in the download workers).

    ``sign_ins`` and ``refreshes`` count the identity service's grants, for the log and the tests. A refused
    password is remembered, so the workers do not try it again one after the other."""

    def __init__(self, session, url, username, password, clock=time.monotonic):
        self.session, self.url = session, url
        self._username, self._password = username, password
        self.clock = clock
        self.lock = threading.Lock()
        self.access = self.refresh_token = None
        self.expires = self.refresh_expires = 0.0
        self.sign_ins = self.refreshes = 0
        self.refused = None

    def auth(self, url):
        """The Authorization header for ``url`` ({} for hosts that must not see the token)."""
        if not trusted(url):
            return {}
        with self.lock:
            if self.access is None or self.clock() >= self.expires:
                self._renew()
            return {"Authorization": f"Bearer {self.access}"}

    def sign_in(self):
        with self.lock:
            if self.access is None:
                self._password_grant()

    def renew(self):
        """A server refused the token (401): get a new one."""
        with self.lock:
            self._renew()

    def _renew(self):
        if self.refresh_token and (not self.refresh_expires or self.clock() < self.refresh_expires):
            try:
                self._grant({"grant_type": "refresh_token", "refresh_token": self.refresh_token})
                self.refreshes += 1
                return
            except _Refused:
                pass  # revoked or past its lifetime: sign in again
        self._password_grant()

    def _password_grant(self):
        if self.refused is not None:
            raise self.refused
        try:
            self._grant({"grant_type": "password", "username": self._username, "password": self._password})
        except _Refused as refusal:
            self.refused = ParameterError("AUTH", f"the {SERVICE} identity service ({http.host_of(self.url)}) "
                                                  f"refused the username or password ({refusal}); check the "
                                                  f"authentication configuration.")
            raise self.refused from None
        self.sign_ins += 1

    def _grant(self, form):
        started = self.clock()
        with http.service_errors(f"{SERVICE} identity service", self.url):
            response = self.session.post(self.url, data={**form, "client_id": CLIENT_ID})
        if response.status_code in (400, 401):
            raise _Refused(_refusal(response))
        http.raise_for_service(response, f"{SERVICE} identity service")
        self._take(response, started)

    def _take(self, response, started):
        try:
            body = response.json()
            access, lifetime = body["access_token"], float(body.get("expires_in") or 600)
        except (ValueError, KeyError, TypeError):
            raise ServiceError(f"The {SERVICE} identity service ({http.host_of(self.url)}) answered without an "
                               f"access token; check SENTINEL2_CDSE_TOKEN_URL.") from None
        self.access = access
        self.expires = started + lifetime - _margin(lifetime)  # refresh a little before the server would refuse
        self.refresh_token = body.get("refresh_token") or self.refresh_token
        refresh_lifetime = float(body.get("refresh_expires_in") or 0)  # 0: no stated end
        self.refresh_expires = started + refresh_lifetime - _margin(refresh_lifetime) if refresh_lifetime else 0.0


class _Refused(Exception):
    """The identity service refused a grant (400/401); the message is its short reason."""


def _margin(lifetime):
    return min(60.0, lifetime / 4.0)


def _refusal(response):
    try:
        body = response.json()
        reason = body.get("error_description") or body.get("error") or ""
    except (ValueError, AttributeError):
        reason = ""
    response.close()
    reason = http.redact(" ".join(str(reason).split()))[:120].rstrip(".")
    return f"HTTP {response.status_code}" + (f": {reason}" if reason else "")


# ---- products without an OData link ---------------------------------------------------------------------------


def _with_odata_links(footprints, options, session, log):
    """(footprints with an OData $value link, failed Results): the others are looked up by name."""
    direct = [f for f in footprints if _VALUE_URL.search(f.download_url or "")]
    others = [f for f in footprints if not _VALUE_URL.search(f.download_url or "")]
    if not others:
        return direct, []
    root = lookup_root(options)
    log(f"{SERVICE}: looking up {len(others)} product(s) by name at {http.host_of(root)}.")
    found, failures = [], []
    for start in range(0, len(others), LOOKUP_BATCH):
        group = others[start: start + LOOKUP_BATCH]
        by_name = _lookup(group, root, session)
        for footprint in group:
            match = by_name.get(common.stem(footprint.name))
            if match is None:
                failures.append(common.failed(footprint, f"not found by name in the {SERVICE} catalogue "
                                                         f"({http.host_of(root)})."))
            else:
                found.append(match)
    return direct + found, failures


def _lookup(footprints, root, session):
    """{stem: Footprint with the OData Id, link, checksum, size, online} for the names found."""
    names = " or ".join(f"Name eq '{common.stem(f.name)}.SAFE'" for f in footprints)
    url = root + "/Products"
    params = {"$filter": names, "$top": str(len(footprints)), "$expand": "Attributes"}
    response = http.fetch(session, "GET", url, SERVICE, params=params)
    try:
        values = response.json()["value"]
    except (ValueError, KeyError, TypeError):
        raise ServiceError(f"{SERVICE} ({http.host_of(url)}) answered a product lookup with something that is not "
                           f"an OData product list.") from None
    found = [catalogue.parse_product(product, download_root(), url) for product in values]
    return {common.stem(f.name): f for f in found}

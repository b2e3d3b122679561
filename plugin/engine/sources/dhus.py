"""The ``dhus`` download source: products of a Data Hub Software (DHuS) mirror.

sentinelsat talks to the mirror: ``get_product_odata`` (OData v2 ``Products('<uuid>')?$format=json``: name, size,
MD5 or SHA3-256, ``Online``, download URL) and, for an offline product, ``trigger_offline_retrieval`` (its
one-byte ``GET .../$value`` that DHuS answers 202 when it accepts to restore the product from the long-term
archive, 403 when the user's quota is used up, 503 when it is busy). The bytes come through our
``transfer.download_all`` with an HTTP Basic header that is only sent to the mirror's own host.

Why not sentinelsat's downloader (``SentinelAPI.download`` / ``download_all``): it resumes ``.incomplete`` files by
appending whatever the server sends, even a 200 that ignored the Range request (a corrupt copy is only caught,
and thrown away whole, by the checksum); it trusts any existing final file without verifying it; it retries on
a fixed 10 s delay ignoring Retry-After; it reports progress only to tqdm, and has no cancel hook in
``download_all``. Our engine does all of that to the design's contract, for every source alike.

Offline products are not waited for: DHuS restores take hours, far longer than a QGIS task should block.
Their retrieval is requested, they are reported 'offline' (not a failure), and running the same download again
later fetches them (complete products are skipped, so a rerun costs nothing for them).

Settings as for the ``dhus`` catalogue: the mirror from ``URL``, else ``DHUS_URL``, else the footprint's own
download URL; the user and password from ``AUTH``, else ``DHUS_USER``/``DHUS_PASSWORD``, else ``~/.netrc``.
"""

import base64
import os
import re
import urllib.parse

from .. import http, safe, transfer
from ..callbacks import check_cancelled, scaled
from ..catalogs import dhus as catalog
from ..errors import MissingDependency, ParameterError, ServiceError
from . import Result

_ODATA = re.compile(r"^(https?://.+?/)odata/v1/", re.IGNORECASE)
CHECKSUMS = (("sha3-256", "SHA3-256"), ("md5", "MD5"))  # sentinelsat's keys, strongest first


def download(footprints, folder, options, session, progress, is_cancelled, log):
    try:
        sentinelsat = catalog.import_sentinelsat()
    except MissingDependency:
        raise MissingDependency("sentinelsat", "sentinelsat", "for the dhus download source") from None
    footprints = list(footprints)
    results = [None] * len(footprints)
    mirrors = {}
    for index, footprint in enumerate(footprints):
        root = _mirror_of(footprint, options.url)
        if root is None:
            results[index] = Result(footprint, "failed", None, f"{footprint.name}: no DHuS mirror is known for "
                                                                f"it; set URL or DHUS_URL to the mirror's root.")
        else:
            mirrors.setdefault(root, []).append(index)
    for number, (root, indices) in enumerate(mirrors.items()):
        part = scaled(progress, number / len(mirrors), (number + 1) / len(mirrors))
        batch = [footprints[i] for i in indices]
        for index, result in zip(indices, _from_mirror(sentinelsat, root, batch, folder, options, session, part,
                                                       is_cancelled, log)):
            results[index] = result
    return results


def _mirror_of(footprint, url):
    """The mirror's root URL (ending in '/'), or None when nothing says which mirror holds the product."""
    root = url or os.environ.get("DHUS_URL")
    if not root:
        match = _ODATA.match(footprint.download_url or "")
        root = match.group(1) if match else None
    return catalog.root_url(root) if root else None


def _from_mirror(sentinelsat, root, footprints, folder, options, session, progress, is_cancelled, log):
    user, password = dhus_credentials(options.credentials, root)
    own = catalog.sentinelsat_session(session, user, password, sentinelsat.__version__)
    api = sentinelsat.SentinelAPI(user, password, root, show_progressbars=False, timeout=own.timeout)
    api.session = own  # sentinelsat sends every request through this attribute
    try:
        plans = []
        for number, footprint in enumerate(footprints):
            check_cancelled(is_cancelled)
            progress(0.05 * number / len(footprints), f"DHuS: checking {footprint.name}")
            plans.append(_plan(sentinelsat, api, footprint, folder, _basic_auth(root, user, password)))
    finally:
        own.close()
    offline = [plan for plan in plans if isinstance(plan, Result) and plan.status == "offline"]
    if offline:
        log(f"DHuS ({http.host_of(root)}): {len(offline)} of {len(plans)} products are offline; see the lines "
            f"below for each.")
    for plan in plans:
        if isinstance(plan, Result):
            log(plan.reason or f"Skipped {plan.footprint.name}: already extracted and complete in the output folder.")
    return _transfer(plans, footprints, session, options, scaled(progress, 0.05, 1.0), is_cancelled, log)


def dhus_credentials(credentials, root):
    try:
        return catalog.dhus_credentials(credentials, root)
    except ParameterError:
        raise ParameterError("AUTH", "the dhus source needs a user name and password of the DHuS mirror: choose "
                                     "an authentication configuration or set DHUS_USER and DHUS_PASSWORD.") from None


def _basic_auth(root, user, password):
    """``Transfer.auth``: the Basic header for the mirror's own scheme, host and port only, so a redirect to
    another host (a storage node, a CDN) never receives the password."""
    mirror = urllib.parse.urlsplit(root)
    header = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    def auth(url):
        target = urllib.parse.urlsplit(url)
        same = (target.scheme, target.hostname, target.port) == (mirror.scheme, mirror.hostname, mirror.port)
        return header if same else {}

    return auth


def _plan(sentinelsat, api, footprint, folder, auth):
    """A :class:`transfer.Transfer` for the product, or its final :class:`Result` when nothing is to fetch."""
    name = re.sub(r"(\.SAFE|\.zip)$", "", footprint.name or "")
    extracted = os.path.join(folder, f"{name}.SAFE")
    if name and os.path.isdir(extracted) and not safe.check(extracted):
        return Result(footprint, "skipped", extracted, "")
    uuid, problem = _uuid(sentinelsat, api, footprint, name)
    info, problem = (None, problem) if problem else _odata(sentinelsat, api, uuid, name)
    if problem:
        return Result(footprint, "failed", None, problem)
    dest = os.path.join(folder, f"{info['title']}.zip")
    if not info.get("Online", True) and not os.path.exists(dest):  # a complete zip needs no retrieval
        offline = _request_retrieval(sentinelsat, api, footprint, uuid, info["title"])
        if offline is not None:
            return offline
    return transfer.Transfer(info["url"], dest, info.get("size"), _checksum(info), auth=auth, name=info["title"])


def _uuid(sentinelsat, api, footprint, name):
    """(DHuS id, None), or (None, why not): a DHuS footprint carries it; others are looked up by name."""
    if footprint.provider == "dhus" and footprint.id:
        return footprint.id, None
    found, problem = _ask(sentinelsat, api, name, lambda: api.query(identifier=name))
    if problem:
        return None, problem
    if not found:
        return None, f"{name}: the DHuS mirror {http.host_of(api.api_url)} does not have this product."
    return next(iter(found)), None


def _odata(sentinelsat, api, uuid, name):
    """(sentinelsat's product info, None) or (None, why not)."""
    missing = (f"{name}: the DHuS mirror {http.host_of(api.api_url)} has no product with id {uuid}; search the "
               f"mirror again.")
    return _ask(sentinelsat, api, name, lambda: api.get_product_odata(uuid), missing)


def _ask(sentinelsat, api, name, call, missing=None):
    """(answer, None), or (None, a sentence) for a failure about this product (``missing``: the sentence for
    DHuS's "Invalid key" answer). A refused password raises :class:`ParameterError` on AUTH: it is the same for
    every product."""
    try:
        with catalog.dhus_errors(sentinelsat, api.api_url):
            try:
                return call(), None
            except sentinelsat.InvalidKeyError:
                if missing is None:
                    raise
                return None, missing
    except ServiceError as error:
        return None, f"{name}: {error}"


def _request_retrieval(sentinelsat, api, footprint, uuid, title):
    """The 'offline' Result after asking DHuS to restore the product; None when it turns out to be online."""
    host = http.host_of(api.api_url)
    try:
        with catalog.dhus_errors(sentinelsat, api.api_url):
            try:
                if not api.trigger_offline_retrieval(uuid):
                    return None
            except sentinelsat.LTAError as error:
                cause = http.redact(" ".join(str(error.msg or "").split()))[:160].rstrip(".")
                return Result(footprint, "offline", None, (
                    f"{title} is in the long-term archive of {host}, which did not accept a retrieval request now "
                    f"({cause}); try again later."))
    except ServiceError as error:
        return Result(footprint, "failed", None, f"{title}: {error}")
    return Result(footprint, "offline", None, (
        f"{title} is in the long-term archive of {host}: its retrieval was requested; run the download again in "
        f"a few hours to fetch it."))


def _checksum(info):
    for key, algorithm in CHECKSUMS:
        if info.get(key):
            return f"{algorithm}:{info[key]}"
    return ""  # verified by size only


def _transfer(plans, footprints, session, options, progress, is_cancelled, log):
    transfers = [plan for plan in plans if isinstance(plan, transfer.Transfer)]
    own = session is None
    session = http.new_session() if own else session
    try:
        report = transfer.download_all(transfers, session, options.parallel, progress, is_cancelled, log)
    finally:
        if own:
            session.close()
    outcomes = iter(report.outcomes)
    results = []
    for footprint, plan in zip(footprints, plans):
        if isinstance(plan, Result):
            results.append(plan)
            continue
        outcome = next(outcomes)
        path = None if outcome.status == transfer.FAILED else outcome.path
        results.append(Result(footprint, outcome.status, path, outcome.reason))
    return results

"""GEODES (CNES) downloads: the product zip of a GEODES footprint (PEPS L1C SAFE zips, THEIA/MAJA L2A zips)
fetched from its ``download_url`` with the ``X-API-Key`` header, verified against the MD5 the catalogue states.

Used by ``SOURCE=auto`` for footprints whose provider is ``geodes``. Offline (tape) products are reported without a
request. The key is sent to the host of each product's link only, never to a host a redirect leads to.
"""

import urllib.parse

from .. import transfer
from ..errors import ParameterError
from . import common

SERVICE = "GEODES"
RESTORE = "GEODES brings tape products online on request in its portal; download them again once they are online."


def validate(options):
    credentials = getattr(options, "credentials", None)
    if not credentials or not credentials.api_key:
        raise ParameterError("AUTH", f"{SERVICE} downloads need an API key: choose an authentication configuration "
                                     f"that holds the GEODES API key (in the password field).")


def download(footprints, folder, options, session, progress, is_cancelled, log):
    """See ``sources/__init__.py``."""
    validate(options)
    results, pairs = [], []
    for footprint in footprints:
        if footprint.online is False:
            results.append(common.offline_result(footprint, SERVICE, RESTORE))
        elif not (footprint.download_url or "").startswith(("http://", "https://")):
            results.append(common.failed(footprint, f"its footprint has no {SERVICE} download link; search again."))
        else:
            pairs.append((footprint, _transfer(footprint, folder, options.credentials.api_key)))
    if pairs:
        report = transfer.download_all([job for _, job in pairs], session, options.parallel, progress,
                                       is_cancelled, log)
        results += common.results_from_report(pairs, report)
    return results


def _transfer(footprint, folder, key):
    origin = _origin(footprint.download_url)

    def auth(url):
        return {"X-API-Key": key} if _origin(url) == origin else {}

    return transfer.Transfer(footprint.download_url, common.zip_path(folder, footprint), footprint.size_bytes or None,
                             footprint.checksum or "", auth=auth, name=common.stem(footprint.name))


def _origin(url):
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()

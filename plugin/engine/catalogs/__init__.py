"""Catalogue back-ends of ``sentinel2:search``. Each module exposes

    search(query, url, credentials, session, progress, is_cancelled, log) -> list[Footprint]

``query`` is a :class:`..query.Query`; ``url`` the service root (None: the module's default); ``credentials`` a
:class:`Credentials` (or None); ``session`` from the single HTTP session factory (``http.new_session``);
``progress(fraction, message)``, ``is_cancelled()`` as everywhere; ``log(message)`` writes one line to the
algorithm's log (what was sent, pages fetched). Results satisfy ``query.matches`` and are not yet merged; they
come as a :class:`Found`, which also tells whether MAX_RESULTS cut the search short and how many products the
catalogue holds.
"""

import collections
import importlib

from ..errors import ParameterError


class Found(list):
    """A search's footprints. ``capped``: the search stopped at MAX_RESULTS; ``matched``: then, how many products
    the catalogue says it holds for the query (its own count, before the checks made here), or None when it does
    not say. A complete search has ``capped`` False and holds every match."""

    def __init__(self, footprints=(), capped=False, matched=None):
        super().__init__(footprints)
        self.capped, self.matched = capped, matched


Credentials = collections.namedtuple("Credentials", "username password api_key", defaults=(None, None, None))

# name -> (module, default service root)
CATALOGS = {
    "cdse": ("cdse", "https://catalogue.dataspace.copernicus.eu/odata/v1"),
    "cdse-stac": ("stac", "https://stac.dataspace.copernicus.eu/v1"),
    "earth-search": ("stac", "https://earth-search.aws.element84.com/v1"),
    "geodes": ("stac", "https://geodes-portal.cnes.fr/api/stac"),
    "dhus": ("dhus", None),  # any DHuS mirror: URL, AUTH or sentinelsat's DHUS_URL
    "sentinelhub": ("sentinelhub", "https://sh.dataspace.copernicus.eu"),
}


def default_url(catalog):
    return CATALOGS[catalog][1]


def search(catalog, query, url=None, credentials=None, session=None, progress=None, is_cancelled=None, log=None):
    """Search one catalogue; see the module docstring for the arguments."""
    from ..callbacks import never_cancelled, no_progress

    if catalog not in CATALOGS:
        raise ParameterError("CATALOG", f"'{catalog}' is not one of {', '.join(CATALOGS)}.")
    module_name, default = CATALOGS[catalog]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return module.search(query, url or default, credentials, session, progress or no_progress,
                         is_cancelled or never_cancelled, log or (lambda message: None), catalog=catalog)

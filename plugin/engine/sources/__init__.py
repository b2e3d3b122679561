"""Download sources of ``sentinel2:download``. Each module exposes

    download(footprints, folder, options, session, progress, is_cancelled, log) -> list[Result]

``footprints``: the products to fetch (:class:`..footprints.Footprint`, from a search layer or GeoJSON);
``folder``: the output folder (exists, writable, space checked by the caller); ``options``: :class:`Options`;
``session``: from the single HTTP session factory; callbacks as everywhere. A source fetches bytes through
``transfer.download_all`` (never its own downloader), leaves zips for the caller to extract, and returns one
:class:`Result` per footprint: nothing it raises may be about one product only (report it in the Result).
"""

import collections
import dataclasses

Result = collections.namedtuple("Result", "footprint status path reason", defaults=(None, ""))
Result.__doc__ = ("What happened to one product: status is 'downloaded', 'skipped' (already complete), "
                  "'offline' (in a long-term archive; reported, not a failure) or 'failed' (reason: one sentence). "
                  "path: the product zip, .SAFE folder, or folder of per-band files.")

SOURCES = ("auto", "cdse", "aws", "dhus", "stac")


@dataclasses.dataclass
class Options:
    credentials: object = None     # catalogs.Credentials (username/password/api_key) or None
    bands: tuple = ()              # band names for per-band sources (stac), e.g. ('B04', 'B08')
    aoi_wkb: bytes = None          # stac: read only this window of each band (EPSG:4326 WKB)
    parallel: int = 4
    url: str = None                # the source's service root override

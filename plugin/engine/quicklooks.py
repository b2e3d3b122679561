"""Quicklook images of found products: where a catalogue keeps them, and a size-bounded cache on disk.

The footprints schema has no quicklook field, so the URL is looked up per product when someone wants to see
it: Copernicus Data Space OData lists it among the product's Assets, STAC APIs among the item's assets. The
image is kept in a cache folder (least recently used files go first when the cache outgrows its size), so a
product's quicklook is fetched once.
"""

import hashlib
import os
import re

from . import http
from .catalogs import cdse, default_url, stac
from .errors import ServiceError

STAC_CATALOGS = ("cdse-stac", "earth-search", "geodes")
SUPPORTED = ("cdse",) + STAC_CATALOGS
MAX_BYTES = 20_000_000  # a quicklook is a few hundred kB; anything this large is not one


def supports(catalog):
    return catalog in SUPPORTED


def quicklook_url(catalog, product_id, session, url=None):
    """The quicklook URL of a product of ``catalog`` ('' when the catalogue has none for it)."""
    root = (url or default_url(catalog)).rstrip("/")
    if catalog == "cdse":
        # One product is answered as the entity itself ("$metadata#Products/$entity"), Assets expanded.
        product = _json(session, f"{root}/Products({product_id})", {"$expand": "Assets"})
        return cdse.parse_product(product, url=root).extra.get("quicklook") or ""
    if catalog in STAC_CATALOGS:
        # Item search by id needs no collection name, which the footprints layer does not keep.
        items = _json(session, f"{root}/search", {"ids": product_id, "limit": 1}).get("features") or []
        footprint = stac.item_footprint(items[0], catalog) if items and isinstance(items[0], dict) else None
        return (footprint.extra.get("quicklook") or "") if footprint else ""
    return ""


def fetch(catalog, product_id, session, cache, url=None, is_cancelled=lambda: False):
    """The cached quicklook file of a product, fetched first when missing; None when there is none."""
    key = f"{catalog}:{product_id}"
    cached = cache.get(key)
    if cached:
        return cached
    image_url = quicklook_url(catalog, product_id, session, url)
    if not image_url or is_cancelled():
        return None
    response = http.fetch(session, "GET", image_url, "the quicklook service")
    if len(response.content) > MAX_BYTES:
        raise ServiceError(f"the quicklook at {http.redact_url(image_url)} is too large to be one.")
    return cache.put(key, response.content, _suffix(image_url, response.headers.get("Content-Type", "")))


def _json(session, url, params):
    response = http.fetch(session, "GET", url, "the catalogue", params=params)
    try:
        body = response.json()
    except ValueError:
        raise ServiceError(f"the catalogue at {http.host_of(url)} did not answer JSON for a quicklook.") from None
    return body if isinstance(body, dict) else {}


def _suffix(url, content_type):
    if "png" in content_type or url.lower().split("?")[0].endswith(".png"):
        return ".png"
    return ".jpg"


class Cache:
    """Files named after a hash of their key in ``folder``; at most ``max_bytes`` in total (0: keep nothing)."""

    def __init__(self, folder, max_bytes):
        self.folder, self.max_bytes = folder, max_bytes

    def _stem(self, key):
        return os.path.join(self.folder, hashlib.sha1(key.encode()).hexdigest())

    def get(self, key):
        for suffix in (".jpg", ".png"):
            path = self._stem(key) + suffix
            if os.path.isfile(path):
                os.utime(path)  # the modification time is the last use: pruning removes the oldest
                return path
        return None

    def put(self, key, data, suffix=".jpg"):
        """Store ``data`` (written under a temporary name, then renamed) and return its path."""
        os.makedirs(self.folder, exist_ok=True)
        path = self._stem(key) + suffix
        partial = f"{path}.{os.getpid()}.part"
        with open(partial, "wb") as stream:
            stream.write(data)
        os.replace(partial, path)
        self.prune(keep=path)
        return path

    def prune(self, keep=None):
        """Remove the least recently used files until the cache fits its size (``keep`` stays: in use)."""
        files = self._files()
        total = sum(size for _, size, _ in files)
        for path, size, _ in sorted(files, key=lambda entry: entry[2]):
            if total <= self.max_bytes:
                break
            if path != keep:
                _remove(path)
                total -= size

    def size(self):
        return sum(size for _, size, _ in self._files())

    def _files(self):
        if not os.path.isdir(self.folder):
            return []
        entries = []
        for name in os.listdir(self.folder):
            if re.fullmatch(r"[0-9a-f]{40}\.(jpg|png)", name):
                stat = os.stat(os.path.join(self.folder, name))
                entries.append((os.path.join(self.folder, name), stat.st_size, stat.st_mtime))
        return entries


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass  # another QGIS sharing the cache removed it first

"""A local STAC API replica for tests and the demo: Earth Search, CDSE STAC and GEODES styles of search.

Items are generated in the real shape of the services' answers: the real items in ``../shared/fixtures`` are the
Earth Search and PEPS templates when that folder exists (otherwise small embedded templates built from them: the
demo runs without ``../shared``); CDSE STAC items and THEIA L2A items come from the real ones the project keeps in
``tests/fixtures/services``. Each generated item gets its own id, product name, tile outline, date, platform, cloud
cover and asset URLs, consistent with each other the way the services make them.

Serving, per flavour (``StacReplica(items, flavour=...)``), on a :class:`servers.TestServer`:

- ``earth-search``: ``POST/GET {root}/search`` with ``collections``, ``intersects``/``bbox``, ``datetime``,
  ``query`` (eq, neq, lt, lte, gt, gte, in, contains) and ``limit``; results newest first; paging by a ``next``
  token (``<datetime>,<id>,<collection>`` of the last item, as Earth Search) in ``links[rel=next]``, either a
  POST link with a body (``next_method="POST"``, optionally ``merge: true`` with only the token) or a GET link
  whose URL carries the search (``next_method="GET"``); the landing page declares the query extension.
- ``cdse-stac``: the same plus CQL2 JSON ``filter`` (and, or, not, =, <>, <, <=, >, >=, in, s_intersects); paging
  by ``page`` in a POST next link; ``(page - 1) * limit > window_cap`` answers 400 as CDSE does.
- ``geodes``: POST ``page``/``limit`` paging, ``limit`` above 80 answers 400, ``context.matched``, and a next link
  that is a GET URL without the search's filters (the real one's shape: clients must not follow it).

``api_key`` makes the search refuse requests without that ``X-API-Key`` (401, the status is assumed: no real
refusal was seen). :func:`theia_downloads` adds MAJA L2A items (``THEIA_REFLECTANCE_SENTINEL2_L2A``) whose zip
asset the server really serves, a MUSCATE product made by :mod:`replicas.muscate`, behind the API key.

``max_limit`` clamps ``limit`` as servers do. Faults (429 with Retry-After, 5xx, drops, malformed bodies) come
from servers.py: ``replica.install(server)`` returns the routes, e.g. ``routes["search"].fail(faults.status(429))``.

Run ``python tests/replicas/stac.py --flavour earth-search --count 40`` to serve a replica until interrupted.
"""

import copy
import datetime as dt
import hashlib
import json
import os
import re
import urllib.parse
import uuid

GEODES_MAX_LIMIT = 80
FIXTURES = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures"))
# Real responses the project keeps (see its README): always present.
SERVICE_FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "services")
EARTH_SEARCH_ROOT = "https://earth-search.aws.element84.com/v1"
CONFORMANCE = {
    "earth-search": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                     "https://api.stacspec.org/v1.0.0/item-search#query"],
    "cdse-stac": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                  "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
                  "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"],
    "geodes": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
}


# ---- templates --------------------------------------------------------------------------------------------

def _fixture(name):
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as stream:
        data = json.load(stream)
    return data["features"][0] if "features" in data else data


def template(kind):
    """The real fixture item of ``kind`` ('earth-search-l1c', 'earth-search-l2a', 'geodes') or the embedded one."""
    files = {"earth-search-l1c": "earthsearch_v1_search_sentinel-2-l1c.json",
             "earth-search-l2a": "earthsearch_v1_sentinel-2-l2a_item_S2A_39QTA_20230628_0_L2A."
                                 "CONVERTED_from_python_literal.json",
             "geodes": "geodes_stac_search_PEPS_S2_L1C.json"}
    return _fixture(files[kind]) or copy.deepcopy(EMBEDDED[kind])


def _earth_search_embedded(level):
    """A trimmed Earth Search item (the fixtures' keys and value shapes, fewer assets)."""
    level_code = "1C" if level == "L1C" else "2A"
    item_id = f"S2B_27VWK_20240206_0_{level}"
    name = f"S2B_MSI{level}_20240206T131259_N0510_R081_T27VWK_20240206T133903.SAFE"
    base = f"{EARTH_SEARCH_ROOT}/collections/sentinel-2-{level.lower()}/items/{item_id}"
    data = ("s3://sentinel-s2-l1c/tiles/27/V/WK/2024/2/6/0" if level == "L1C" else
            f"https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/27/V/WK/2024/2/{item_id}")
    suffix, kind = (".jp2", "image/jp2") if level == "L1C" else (".tif", "image/tiff; application=geotiff")
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": f"sentinel-2-{level.lower()}",
        "properties": {
            "created": "2024-02-06T15:02:12.605Z", "platform": "sentinel-2b", "constellation": "sentinel-2",
            "instruments": ["msi"], "eo:cloud_cover": 9.93604802923519, "proj:epsg": 32627, "mgrs:utm_zone": 27,
            "mgrs:latitude_band": "V", "mgrs:grid_square": "WK", "grid:code": "MGRS-27VWK",
            "s2:product_type": f"S2MSI{level_code}", "s2:processing_baseline": "05.10", "s2:product_uri": name,
            "datetime": "2024-02-06T13:14:11.918000Z", "s2:sequence": "0", "updated": "2024-02-06T15:02:12.605Z",
        },
        "geometry": {"type": "Polygon", "coordinates": [[[-21.0004, 63.1295], [-21.0004, 62.8125],
                                                         [-20.6968, 63.1292], [-21.0004, 63.1295]]]},
        "links": [{"rel": "self", "type": "application/geo+json", "href": base},
                  {"rel": "thumbnail", "href": f"{base}/thumbnail"}],
        "bbox": [-21.0004, 62.8125, -20.6968, 63.1295],
        "assets": {
            "red": {"href": f"{data}/B04{suffix}", "type": kind, "title": "Red (band 4) - 10m",
                    "roles": ["data", "reflectance"]},
            "nir": {"href": f"{data}/B08{suffix}", "type": kind, "title": "NIR 1 (band 8) - 10m",
                    "roles": ["data", "reflectance"]},
            "thumbnail": {"href": f"{data}/preview.jpg", "type": "image/jpeg", "title": "Thumbnail image",
                          "roles": ["thumbnail"]},
            "granule_metadata": {"href": f"{data}/metadata.xml", "type": "application/xml", "roles": ["metadata"]},
        },
    }


def _geodes_embedded():
    """A trimmed GEODES PEPS_S2_L1C item (keys, description text and URL shapes of the fixture)."""
    urn = "URN:FEATURE:DATA:gdh:25416e3f-1a7f-379a-9b65-a6539b1fd95b:V1"
    name = "S2A_MSIL1C_20250402T175741_N0511_R141_T14ULD_20250403T022035"
    portal = "https://geodes-portal.cnes.fr/api"
    return {
        "stac_version": "1.0.0-beta.2", "id": urn, "type": "Feature", "collection": "PEPS_S2_L1C",
        "bbox": [-101.99523907493, 52.226210870436, -100.32145593499, 53.241963547644],
        "geometry": {"type": "Polygon", "coordinates": [[[-101.995, 53.212], [-101.928, 52.226], [-100.321, 52.255],
                                                         [-100.352, 53.242], [-101.995, 53.212]]]},
        "properties": {
            "grid:code": "T14ULD", "product:type": "S2MSI1C", "identifier": name, "sat:orbit_state": "Descending",
            "sat:relative_orbit": 141, "platform": "S2A", "dataset": "PEPS_S2_L1C", "processing:level": "L1C",
            "endpoint_url": f"https://s3.datalake.cnes.fr/sentinel2-l1c/14/U/LD/2025/04/02/{name}.zip",
            "start_datetime": "2025-04-02T17:57:41.024Z", "end_datetime": "2025-04-02T17:57:41.024Z",
            "datetime": "2025-04-03T09:00:26.809Z", "eo:cloud_cover": 67.54958344531,
        },
        "links": [{"href": f"{portal}/stac/collections/PEPS_S2_L1C/items/{urn}", "rel": "self",
                   "type": "application/geo+json"}],
        "assets": {
            f"2025/04/02/S2A/{name}_quicklook.jpg": {
                "href": f"{portal}/quicklook/{urn}/files/1003ae6b1edf05adf7c46cb759ffeaec?scope=gdh",
                "title": f"2025/04/02/S2A/{name}_quicklook.jpg", "type": "image/jpeg", "roles": ["overview"],
                "description": _geodes_description(18684, True, "QUICKLOOK_SD", "1003ae6b1edf05adf7c46cb759ffeaec")},
            f"{name}.zip": {
                "href": f"{portal}/download/{urn}/files/86f828c4c7e921615d1cd0476604f780",
                "title": f"{name}.zip", "type": "application/zip", "roles": ["data"],
                "description": _geodes_description(764210185, False, "RAWDATA", "86f828c4c7e921615d1cd0476604f780")},
        },
    }


def _geodes_description(size, online, datatype, md5):
    return (f"File size: {size} bytes\n\nIs reference: false\n\nIs online: {str(online).lower()}\n\n"
            f"Datatype: {datatype}\n\nChecksum MD5: {md5}")


EMBEDDED = {"earth-search-l1c": _earth_search_embedded("L1C"), "earth-search-l2a": _earth_search_embedded("L2A"),
            "geodes": _geodes_embedded()}


# ---- generated items --------------------------------------------------------------------------------------

class Product:
    """What one generated product is: everything else in its item derives from these."""

    def __init__(self, index, start, step, tiles, platforms, level):
        self.sensing = start + index * step
        self.tile = tiles[index % len(tiles)]
        self.platform = platforms[index % len(platforms)]
        self.level = level
        self.cloud = round((index * 37.3) % 100, 4)
        self.orbit = 1 + (index * 7) % 143
        generated = self.sensing + dt.timedelta(hours=2, minutes=25, seconds=index % 60)
        self.name = (f"{self.platform}_MSI{level}_{self.sensing:%Y%m%dT%H%M%S}_N0510_R{self.orbit:03d}_T{self.tile}_"
                     f"{generated:%Y%m%dT%H%M%S}")
        self.md5 = hashlib.md5(self.name.encode()).hexdigest()
        self.size = 500_000_000 + index * 1_000_003

    def geometry(self):
        """The tile's outline (few vertices), as the catalogues give full-tile footprints."""
        from sentinel2_pipeline.plugin.engine import grid

        lons, lats = grid.tile_outline(grid.parse_tile_id(self.tile), per_edge=2)
        ring = [[round(x, 9), round(y, 9)] for x, y in zip(lons.tolist(), lats.tolist())]
        return {"type": "Polygon", "coordinates": [ring]}

    def tile_parts(self):
        return int(self.tile[:2]), self.tile[2], self.tile[3:]


def products(count, start=dt.datetime(2023, 6, 1, 10, 30, tzinfo=dt.timezone.utc), step=dt.timedelta(hours=7),
             tiles=("31TCJ", "31TDJ", "31UDP"), platforms=("S2A", "S2B"), level="L1C"):
    return [Product(i, start, step, tiles, platforms, level) for i in range(count)]


def earth_search_item(product, collection="sentinel-2-l1c", root=EARTH_SEARCH_ROOT):
    """An Earth Search v1 item for ``product`` in the shape of the fixture of its collection."""
    kind = "earth-search-l1c" if product.level == "L1C" else "earth-search-l2a"
    item = template(kind)
    zone, band, square = product.tile_parts()
    old_id = item["id"]
    if collection == "sentinel-2-c1-l2a":
        new_id = f"{product.platform}_T{product.tile}_{product.sensing:%Y%m%dT%H%M%S}_L2A"
    else:
        new_id = f"{product.platform}_{product.tile}_{product.sensing:%Y%m%d}_0_{product.level}"
    item = _replace_text(item, _path_replacements(item, product) + [(old_id, new_id)])
    props = item["properties"]
    props.update({
        "platform": f"sentinel-2{product.platform[-1].lower()}", "eo:cloud_cover": product.cloud,
        "proj:epsg": (32600 if band >= "N" else 32700) + zone, "mgrs:utm_zone": zone, "mgrs:latitude_band": band,
        "mgrs:grid_square": square, "grid:code": f"MGRS-{product.tile}", "s2:product_uri": product.name + ".SAFE",
        "datetime": product.sensing.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    })
    item["collection"] = collection
    _place(item, product)
    item["links"] = [_rebase(link, old_collection(item), collection, root) for link in item["links"]]
    return item


def old_collection(item):
    collection_links = [link["href"] for link in item["links"] if link.get("rel") == "collection"]
    return collection_links[0].rsplit("/", 1)[-1] if collection_links else item["collection"]


def _rebase(link, old, new, root):
    link = dict(link)
    href = link.get("href", "").replace(f"/collections/{old}", f"/collections/{new}")
    link["href"] = href.replace(EARTH_SEARCH_ROOT, root) if href.startswith(EARTH_SEARCH_ROOT) else href
    return link


def _path_replacements(item, product):
    """Template tile/date folders in asset URLs ('27/V/WK/2024/2/6/0', '27/V/WK/2024/2') -> the product's."""
    props = item["properties"]
    when = _parse(props["datetime"])
    old = f"{props['mgrs:utm_zone']}/{props['mgrs:latitude_band']}/{props['mgrs:grid_square']}/{when.year}/{when.month}"
    zone, band, square = product.tile_parts()
    new = f"{zone}/{band}/{square}/{product.sensing.year}/{product.sensing.month}"
    return [(f"{old}/{when.day}/", f"{new}/{product.sensing.day}/"), (old, new)]


def geodes_item(product, collection="PEPS_S2_L1C"):
    """A GEODES item for ``product``: PEPS L1C in the shape of the PEPS_S2_L1C fixture, THEIA L2A in the shape of
    the real THEIA items (tests/fixtures/services): ``identifier`` without the version, the zip titled with it."""
    if product.level == "L1C":
        item, name = template("geodes"), product.name
    else:
        item, name = theia_template(), _theia_name(product)
    identifier = name.rsplit("_V", 1)[0] if product.level == "L2A" else name
    urn = f"URN:FEATURE:DATA:gdh:{uuid.uuid5(uuid.NAMESPACE_URL, product.name)}:V1"
    props = item["properties"]
    old_identifier, old_md5 = props["identifier"], _product_md5(item)
    old_name = geodes_name(item)
    # The whole product name first (it starts with the identifier), then the identifier alone.
    item = _replace_text(item, [(item["id"], urn), (old_name, name), (old_identifier, identifier),
                                (old_md5, product.md5)])
    when = product.sensing.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    item["properties"].update({
        # the tile code lost its 'T' on 2024-09-25: generate both forms
        "grid:code": ("T" if product.sensing < dt.datetime(2024, 9, 25, tzinfo=dt.timezone.utc) else "") + product.tile,
        "platform": product.platform, "sat:relative_orbit": product.orbit, "eo:cloud_cover": product.cloud,
        "start_datetime": when, "end_datetime": when, "processing:level": product.level, "dataset": collection,
        "datetime": (product.sensing + dt.timedelta(hours=15)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    })
    item["collection"] = collection
    for asset in item["assets"].values():
        if "zip" in asset.get("type", ""):
            online = product.cloud < 50  # about half on tape, as GEODES' archive
            asset["description"] = _geodes_description(product.size, online, "RAWDATA", product.md5)
    _place(item, product)
    return item


def geodes_name(item):
    """The product name of a GEODES item: its zip's (a THEIA ``identifier`` lacks the version)."""
    return next(a["title"][:-len(".zip")] for a in item["assets"].values() if "zip" in a.get("type", ""))


def theia_template():
    """The first real THEIA L2A item of tests/fixtures/services (a copy)."""
    with open(os.path.join(SERVICE_FIXTURES, "geodes_theia_l2a_items_T31TCH_202001.json"), encoding="utf-8") as stream:
        return json.load(stream)["features"][0]


def _theia_name(product):
    return (f"SENTINEL2{product.platform[-1]}_{product.sensing:%Y%m%d-%H%M%S}-000_L2A_T{product.tile}_C_V3-1")


def _product_md5(item):
    for asset in item["assets"].values():
        match = re.search(r"Checksum MD5: ([0-9a-f]{32})", asset.get("description", ""))
        if match and "zip" in asset.get("type", ""):
            return match.group(1)
    return "no-md5"


def cdse_item(product, collection="sentinel-2-l1c"):
    """A CDSE STAC item for ``product`` in the shape of the real item of its level (tests/fixtures/services): the
    ESA name as id, band assets on s3://eodata with https alternates, a 'Product' zip with a multihash MD5."""
    level = "L2A" if product.level == "L2A" else "L1C"
    item = cdse_template(level)
    old_id = item["id"]
    old_uuid = re.search(r"Products\(([0-9a-f-]{36})\)", item["assets"]["Product"]["href"]).group(1)
    product_id = str(uuid.uuid5(uuid.NAMESPACE_URL, product.name))
    old_tile = item["properties"]["grid:code"][len("MGRS-"):]
    item = _replace_text(item, [(old_id, product.name), (old_uuid, product_id), (f"T{old_tile}", f"T{product.tile}"),
                                (f"MGRS-{old_tile}", f"MGRS-{product.tile}")])
    when = product.sensing.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "000Z"
    item["properties"].update({
        "datetime": when, "start_datetime": when, "end_datetime": when, "eo:cloud_cover": product.cloud,
        "platform": f"sentinel-2{product.platform[-1].lower()}", "sat:relative_orbit": product.orbit,
        "sat:orbit_state": "descending"})
    item["assets"]["Product"].update({"file:size": product.size, "file:checksum": "d50110" + product.md5})
    item["collection"] = collection
    _place(item, product)
    return item


def cdse_template(level):
    names = {"L1C": "S2A_MSIL1C_20240116T000741_N0510_R130_T51CVP_20240116T010505",
             "L2A": "S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440"}
    with open(os.path.join(SERVICE_FIXTURES, f"cdse_stac_item_{names[level]}.json"), encoding="utf-8") as stream:
        return json.load(stream)


def _place(item, product):
    item["geometry"] = product.geometry()
    ring = item["geometry"]["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    item["bbox"] = [min(xs), min(ys), max(xs), max(ys)]


def _replace_text(item, pairs):
    text = json.dumps(item)
    for old, new in pairs:
        text = text.replace(old, new)
    return json.loads(text)


# ---- the server side --------------------------------------------------------------------------------------

class StacReplica:
    """Serves ``items`` (STAC item dicts) like the chosen service; see the module docstring."""

    def __init__(self, items, flavour="earth-search", max_limit=None, next_method="POST", merge=False,
                 window_cap=10_000, conformance=None, ignore_query=False, api_key=None):
        self.flavour = flavour
        self.api_key = api_key
        self.ignore_query = ignore_query  # a server without the query extension ignores the field
        self.items = sorted(items, key=_sort_key, reverse=True)  # newest first, as the services answer
        self.max_limit = max_limit or (GEODES_MAX_LIMIT if flavour == "geodes" else 10_000)
        self.next_method = next_method
        self.merge = merge
        self.window_cap = window_cap
        self.conformance = CONFORMANCE[flavour] if conformance is None else conformance
        self.root_url = ""

    def install(self, server, root="/v1"):
        """Register the routes on a :class:`servers.TestServer`; returns them by name for faults."""
        self.root_url = server.url(root)
        for item in self.items:  # links name the replica, so following them reaches it
            for link in item.get("links", []):
                if link.get("href", "").startswith(EARTH_SEARCH_ROOT):
                    link["href"] = self.root_url + link["href"][len(EARTH_SEARCH_ROOT):]
        return {
            "search": server.route(f"{root}/search", method="POST", handler=self.post),
            "search_get": server.route(f"{root}/search", handler=self.get),
            "landing": server.route(f"{root}/", handler=self.landing),
        }

    def landing(self, request):
        return _json(200, {"type": "Catalog", "id": "replica", "stac_version": "1.0.0", "conformsTo": self.conformance,
                           "links": [{"rel": "search", "href": f"{self.root_url}/search", "method": "POST"}]})

    def post(self, request):
        if not _key_accepted(request, self.api_key):
            return _error(401, "a valid X-API-Key header is needed")
        try:
            params = json.loads(request.body or b"{}")
        except ValueError:
            return _error(400, "the body is not JSON")
        return self.answer(params, "POST")

    def get(self, request):
        if not _key_accepted(request, self.api_key):
            return _error(401, "a valid X-API-Key header is needed")
        params = dict(request.query)
        for key in ("intersects", "query", "filter"):
            if key in params:
                params[key] = json.loads(params[key])
        for key in ("collections", "bbox"):
            if key in params:
                params[key] = params[key].split(",")
        if "bbox" in params:
            params["bbox"] = [float(v) for v in params["bbox"]]
        return self.answer(params, "GET")

    def answer(self, params, method):
        limit = int(params.get("limit") or 10)
        if self.flavour == "geodes" and limit > GEODES_MAX_LIMIT:
            return _error(400, f"limit must be lower or equal to {GEODES_MAX_LIMIT}")
        selection = {key: value for key, value in params.items() if not (self.ignore_query and key == "query")}
        try:
            matching = [item for item in self.items if _selected(item, selection)]
        except (KeyError, TypeError, ValueError) as error:
            return _error(400, f"unsupported search: {error}")
        limit = min(limit, self.max_limit)
        if self.flavour == "earth-search":
            return self._token_page(params, method, matching, limit)
        return self._numbered_page(params, matching, limit)

    def _token_page(self, params, method, matching, limit):
        start = _after(matching, params.get("next"))
        page = matching[start: start + limit]
        links = []
        if start + limit < len(matching) and page:
            token = f"{_when(page[-1])},{page[-1]['id']},{page[-1]['collection']}"
            links.append(self._next_link(params, method, {"next": token}))
        return self._collection(page, len(matching), limit, links)

    def _numbered_page(self, params, matching, limit):
        page_number = int(params.get("page") or 1)
        if self.flavour == "cdse-stac" and (page_number - 1) * limit > self.window_cap:
            return _error(400, f"(page - 1) * limit must be lower or equal to {self.window_cap}")
        start = (page_number - 1) * limit
        page = matching[start: start + limit]
        links = []
        if start + limit < len(matching):
            if self.flavour == "geodes":  # the real shape: a GET URL that forgot the search's filters
                collection = (params.get("collections") or ["all"])[0]
                links.append({"href": f"{self.root_url}/collections/{collection}/items?limit={limit}"
                                      f"&page={page_number + 1}", "rel": "next", "type": "application/json"})
            else:
                links.append(self._next_link(params, "POST", {"page": page_number + 1}))
        return self._collection(page, len(matching), limit, links)

    def _next_link(self, params, method, token):
        if method == "POST" and self.next_method == "POST":
            body = token if self.merge else {**params, **token}
            return {"rel": "next", "method": "POST", "href": f"{self.root_url}/search", "body": body,
                    "merge": self.merge, "type": "application/geo+json"}
        query = {**params, **token}
        encoded = {key: json.dumps(value) if isinstance(value, (dict, list)) and key not in ("collections", "bbox")
                   else ",".join(map(str, value)) if isinstance(value, list) else value for key, value in query.items()}
        return {"rel": "next", "method": "GET", "type": "application/geo+json",
                "href": f"{self.root_url}/search?{urllib.parse.urlencode(encoded)}"}

    def _collection(self, page, matched, limit, links):
        body = {"type": "FeatureCollection", "features": page, "links": links,
                "context": {"returned": len(page), "limit": limit, "matched": matched}}
        if self.flavour != "geodes":
            body.update({"stac_version": "1.0.0", "numberMatched": matched, "numberReturned": len(page)})
        return _json(200, body)


def _key_accepted(request, api_key):
    return api_key is None or request.headers.get("X-API-Key") == api_key


# ---- GEODES downloads of MAJA L2A products ------------------------------------------------------------------

THEIA_COLLECTION = "THEIA_REFLECTANCE_SENTINEL2_L2A"


def theia_downloads(server, products, api_key, folder, pixels=12, offline=()):
    """GEODES items of ``products`` (level L2A) in the THEIA collection whose zip asset is a real MUSCATE product
    (written into ``folder``) served by ``server`` at ``/api/download/<URN>/files/<md5>``, as GEODES' asset URLs
    are. Without ``X-API-Key`` the download answers 401, with another key 403 (assumed statuses). The products
    whose index is in ``offline`` are described as on tape ("Is online: false"). Returns ``(items, {product name:
    route})``; the items' descriptions carry the zips' real size and MD5."""
    from replicas import muscate

    items, routes = [], {}
    for index, product in enumerate(products):
        item = geodes_item(product, THEIA_COLLECTION)
        name = geodes_name(item)
        asset = next(a for a in item["assets"].values() if "zip" in a.get("type", ""))
        body = muscate.zip_product(muscate.write_product(folder, name, pixels))
        md5 = hashlib.md5(body).hexdigest()
        path = f"/api/download/{item['id']}/files/{md5}"
        asset.update(href=server.url(path),
                     description=_geodes_description(len(body), index not in offline, "RAWDATA", md5))
        routes[name] = server.route(path, handler=_keyed(body, api_key))
        items.append(item)
    return items, routes


def _keyed(body, api_key):
    def answer(request):
        key = request.headers.get("X-API-Key")
        if key is None:
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Missing API key"}'
        if key != api_key:
            return 403, {"Content-Type": "application/json"}, b'{"detail": "Invalid API key"}'
        return 200, {"Content-Type": "application/zip"}, body

    return answer


def _json(status, body):
    return status, {"Content-Type": "application/geo+json"}, json.dumps(body).encode()


def _error(status, message):
    return status, {"Content-Type": "application/json"}, json.dumps({"code": "BadRequest",
                                                                      "description": message}).encode()


def _when(item):
    props = item["properties"]
    return props.get("start_datetime") or props.get("datetime")


def _sort_key(item):
    return _parse(_when(item)), item["id"]


def _after(items, token):
    """Index of the first item after the one a ``next`` token names."""
    if not token:
        return 0
    when, item_id, _ = token.split(",", 2)
    key = (_parse(when), item_id)
    return next((i for i, item in enumerate(items) if _sort_key(item) < key), len(items))


# ---- selecting items ----------------------------------------------------------------------------------------

def _selected(item, params):
    checks = (
        not params.get("collections") or item.get("collection") in params["collections"],
        not params.get("ids") or item["id"] in params["ids"],
        _in_interval(item, params.get("datetime")),
        _meets_area(item, params.get("intersects"), params.get("bbox")),
        all(_query_term(item, key, ops) for key, ops in (params.get("query") or {}).items()),
        params.get("filter") is None or _cql2(item, params["filter"]),
    )
    return all(checks)


def _in_interval(item, interval):
    if not interval:
        return True
    start, _, end = interval.partition("/")
    when = _parse(_when(item))
    return (start in ("", "..") or _parse(start) <= when) and (end in ("", "..") or when <= _parse(end or start))


def _meets_area(item, intersects, bbox):
    """Bounding-box overlap: coarser than a real server, and the client refines with the exact area anyway."""
    if intersects:
        bbox = _bounds(intersects)
    if not bbox:
        return True
    west, south, east, north = item.get("bbox") or _bounds(item["geometry"])
    return not (east < bbox[0] or west > bbox[2] or north < bbox[1] or south > bbox[3])


def _bounds(geometry):
    points = list(_points(geometry["coordinates"]))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _points(coordinates):
    if coordinates and isinstance(coordinates[0], (int, float)):
        yield coordinates
        return
    for part in coordinates:
        yield from _points(part)


def _value(item, name):
    name = name[len("properties."):] if name.startswith("properties.") else name
    if name in ("id", "collection"):
        return item.get(name)
    return item["properties"].get(name)


def _query_term(item, name, ops):
    value = _value(item, name)
    return all(_compare(value, op, wanted) for op, wanted in ops.items())


def _compare(value, op, wanted):
    if value is None:
        return op == "neq"
    if op == "in":
        return value in wanted
    if op == "contains":
        return str(wanted) in value if isinstance(value, str) else wanted in value
    value, wanted = _comparable(value, wanted)
    operations = {"eq": value == wanted, "neq": value != wanted, "lt": value < wanted, "lte": value <= wanted,
                  "gt": value > wanted, "gte": value >= wanted}
    return operations[op]  # KeyError: an operator the replica does not know answers 400


def _comparable(value, wanted):
    """Dates compare as dates (GEODES sends '2023-06-01T00:00:00Z' against '...41.024Z')."""
    if isinstance(value, str) and isinstance(wanted, str) and re.match(r"^\d{4}-\d\d-\d\dT", value):
        return _parse(value), _parse(wanted)
    return value, wanted


_CQL2 = {"=": "eq", "<>": "neq", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte", "in": "in"}


def _cql2(item, node):
    op, args = node["op"].lower(), node.get("args") or []
    if op == "and":
        return all(_cql2(item, arg) for arg in args)
    if op == "or":
        return any(_cql2(item, arg) for arg in args)
    if op == "not":
        return not _cql2(item, args[0])
    if op == "s_intersects":
        return _meets_area(item, args[1], None)
    return _compare(_value(item, args[0]["property"]), _CQL2[op], args[1])


def _parse(text):
    text = text.replace("Z", "+00:00")
    if "T" not in text:
        text += "T00:00:00+00:00"
    head, _, rest = text.partition(".")
    if rest:  # fromisoformat on Python < 3.11 wants 3 or 6 fraction digits
        digits = re.match(r"\d*", rest).group(0)
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    return dt.datetime.fromisoformat(text).astimezone(dt.timezone.utc)


# ---- standalone -------------------------------------------------------------------------------------------

MAKERS = {"earth-search": earth_search_item, "cdse-stac": cdse_item, "geodes": geodes_item}


def main(argv=None):
    """Serve a replica on 127.0.0.1 until interrupted (for the demo and manual checks); prints the STAC root."""
    import argparse
    import sys
    import time

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import conftest  # noqa: F401 (makes sentinel2_pipeline importable)
    from servers import TestServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=sorted(MAKERS), default="earth-search")
    parser.add_argument("--count", type=int, default=40, help="products per level (default %(default)s)")
    parser.add_argument("--tiles", default="30TYP,31TCJ", help="comma-separated tile ids")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 6, 1))
    parser.add_argument("--url-file", help="also write the STAC root URL to this file")
    args = parser.parse_args(argv)
    start = dt.datetime.combine(args.start, dt.time(10, 30), dt.timezone.utc)
    tiles = tuple(t.strip().upper()[-5:] for t in args.tiles.split(",") if t.strip())
    items = []
    for level, collections in (("L1C", COLLECTIONS[args.flavour][0]), ("L2A", COLLECTIONS[args.flavour][1])):
        for product in products(args.count, start=start, tiles=tiles, level=level):
            items.extend(MAKERS[args.flavour](product, collection) for collection in collections)
    with TestServer() as server:
        StacReplica(items, flavour=args.flavour).install(server)
        if args.url_file:
            with open(args.url_file, "w", encoding="utf-8") as stream:
                stream.write(server.url("/v1") + "\n")
        print(server.url("/v1"), flush=True)
        while True:
            time.sleep(3600)


# level -> the collections the services file each level under (Earth Search has two for L2A)
COLLECTIONS = {"earth-search": (("sentinel-2-l1c",), ("sentinel-2-c1-l2a", "sentinel-2-l2a")),
               "cdse-stac": (("sentinel-2-l1c",), ("sentinel-2-l2a",)),
               "geodes": (("PEPS_S2_L1C",), ("THEIA_REFLECTANCE_SENTINEL2_L2A",))}


if __name__ == "__main__":
    main()

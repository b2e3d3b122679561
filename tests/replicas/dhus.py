"""A local DHuS (Data Hub Software) replica for tests, served by :class:`servers.TestServer`.

It implements what sentinelsat 1.x calls when searching:

- ``GET <root>/search?format=json&rows=<n>&start=<offset>[&orderby=beginposition asc]&q=<Solr query>`` answering
  the DHuS OpenSearch JSON (``{"feed": {"opensearch:totalResults": "N", "entry": [...]}}``, each entry with
  ``title``, ``id``, ``link``, ``summary``, ``ondemand`` and typed ``str``/``int``/``double``/``date`` arrays,
  as the real hub answered; one entry comes as an object, none leaves ``entry`` out, as DHuS does);
- ``GET <root>/api/stub/version`` (``{"value": "<version>"}``), which sentinelsat reads before downloads;
- HTTP Basic authentication: 401 with an HTML page for a wrong user or password.

And what sentinelsat and the ``dhus`` download source call for a product (services.md §2.2-2.3):

- ``GET <root>/odata/v1/Products('<uuid>')?$format=json``: the OData v2 entry (``{"d": {...}}``) with ``Id``,
  ``Name``, ``ContentLength`` (a string, as Edm.Int64 is in OData v2 JSON), ``Checksum`` (MD5, upper-case hex),
  ``Online``, ``/Date(ms)/`` dates, the GML ``ContentGeometry`` and ``__metadata.media_src``; an unknown or
  removed product answers 404 with DHuS's "Invalid key" OData error;
- ``GET <root>/odata/v1/Products('<uuid>')/$value``: the product bytes with Range support when online; for an
  offline product every GET is a retrieval request (sentinelsat's trigger sends ``Range: bytes=0-1``), answered
  as DHuS's long-term archive does: 202 accepted, 403 with a ``cause-message`` when the user's quota is used up,
  503 when it is busy (``Product.lta``). Accepted requests are recorded in ``DhusReplica.triggers``;
- ``GET <root>/odata/v1/Products('<uuid>')/Online/$value``: ``true`` or ``false``.

The Solr query is evaluated for the keys sentinelsat writes: ``key:"value"``, ``key:value`` with ``*``/``?``
wildcards, ``key:["a" TO "b"]`` ranges (numbers and ISO dates, ``*`` open), ``( ... OR ... )`` groups. The
``footprint:"Intersects(...)"`` clause is recorded but not evaluated (no geometry engine here): tests that send
an area check that the client filtered by area itself. An unknown key answers DHuS's Solr error feed.
"""

import base64
import dataclasses
import datetime as dt
import fnmatch
import functools
import hashlib
import json
import re
import uuid as uuid_module

from sentinel2_pipeline.plugin.engine import grid
from sentinel2_pipeline.plugin.engine.footprints import parse_product_name

MAX_ROWS = 100
DATE_KEYS = {"beginposition", "endposition", "ingestiondate", "date"}


@dataclasses.dataclass
class Product:
    """One product of the replica's archive; rendered as a DHuS OpenSearch entry per request."""

    name: str                 # S2B_MSIL1C_20230601T105619_N0509_R094_T31TCJ_20230601T113345
    cloud: float
    size: str = "799.87 MB"
    uuid: str = ""
    orbit_direction: str = "DESCENDING"
    footprint: str = ""       # WKT, lon/lat; default: the tile's outline
    online: bool = True       # False: in the long-term archive
    content: bytes = None     # the product zip's bytes (default: 200 kB derived from the name)
    md5: str = ""             # the checksum the OData entry gives (default: the content's true MD5)
    lta: str = "accept"       # how a retrieval request of an offline product is answered: accept, quota, busy
    removed: bool = False     # still found by search, but OData answers "Invalid key" (removed since)

    def __post_init__(self):
        self.uuid = self.uuid or str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, self.name))
        self.footprint = self.footprint or tile_footprint(parse_product_name(self.name)["tile_id"])
        if self.content is None:
            seed = hashlib.sha256(self.name.encode()).digest()
            self.content = (seed * (200_000 // len(seed) + 1))[:200_000]
        self.md5 = (self.md5 or hashlib.md5(self.content).hexdigest()).upper()  # DHuS writes upper case


@functools.cache
def tile_footprint(tile):
    return grid.tile_geometry_wkt(grid.parse_tile_id(tile))


def product_name(platform, level, sensing, orbit, tile):
    stamp = sensing.strftime("%Y%m%dT%H%M%S")
    return f"{platform}_MSI{level}_{stamp}_N0509_R{orbit:03d}_T{tile}_{stamp[:9]}235959"


def generate(count, start, tiles=("31TCJ",), level="L1C", step=dt.timedelta(hours=7)):
    """``count`` products over ``tiles`` (cycled), platforms S2A/S2B alternating, cloud cover 0..98 varying."""
    products = []
    for i in range(count):
        sensing = start + i * step
        platform = ("S2A", "S2B")[i % 2]
        name = product_name(platform, level, sensing, 1 + (i * 7) % 143, tiles[i % len(tiles)])
        products.append(Product(name=name, cloud=float((i * 37) % 99)))
    return products


class DhusReplica:
    """Register with ``DhusReplica(http_server, products, users={'alice': 'secret'})``; ``url`` is the root."""

    def __init__(self, server, products=(), users=None, root="/dhus", version="3.1.0"):
        self.server = server
        self.root = root.rstrip("/")
        self.products = list(products)
        self.users = dict(users or {"alice": "secret"})
        self.version = version
        self.triggers = []  # uuids whose retrieval from the long-term archive was accepted
        self.search_route = server.route(f"{self.root}/search", handler=self._search)
        server.route(f"{self.root}/api/stub/version", handler=self._version)
        for product in self.products:
            self._product_routes(product)

    @property
    def url(self):
        return self.server.url(self.root + "/")

    def searches(self):
        """The recorded search requests (``query`` has ``rows``, ``start``, ``q``...)."""
        return self.server.requests_to(f"{self.root}/search")

    def odata_path(self, product, suffix=""):
        return f"{self.root}/odata/v1/Products('{product.uuid}')" + suffix

    def value_requests(self, product):
        """The recorded ``$value`` requests of ``product`` (downloads and retrieval requests)."""
        return self.server.requests_to(self.odata_path(product, "/$value"))

    def _product_routes(self, product):
        self.server.route(self.odata_path(product), query={"$format": "json"},
                          handler=lambda request: self._entry_json(request, product))
        self.server.route(self.odata_path(product, "/$value"), handler=lambda request: self._value(request, product))
        self.server.route(self.odata_path(product, "/Online/$value"),
                          handler=lambda request: self._online(request, product))

    # ---- handlers ----------------------------------------------------------------------------------------

    def _entry_json(self, request, product):
        if not self._authorised(request):
            return _unauthorised()
        if product.removed:
            return _invalid_key(product)
        return 200, {"Content-Type": "application/json"}, json.dumps({"d": self._odata(product)}).encode()

    def _odata(self, product):
        p = properties(product)
        uri = self.url + self.odata_path(product)[len(self.root) + 1:]
        start = _odata_date(p["beginposition"])
        return {
            "__metadata": {"id": uri, "uri": uri, "type": "DHuS.Product", "content_type": "application/octet-stream",
                           "media_src": f"{uri}/$value", "edit_media": f"{uri}/$value"},
            "Id": product.uuid, "Name": product.name, "ContentType": "application/octet-stream",
            "ContentLength": str(len(product.content)), "ChildrenNumber": "1", "Value": None,
            "CreationDate": start, "IngestionDate": start, "ModificationDate": start, "EvictionDate": None,
            "Online": product.online, "OnDemand": not product.online,
            "ContentDate": {"__metadata": {"type": "DHuS.TimeRange"}, "Start": start, "End": start},
            "Checksum": {"__metadata": {"type": "DHuS.Checksum"}, "Algorithm": "MD5", "Value": product.md5},
            "ContentGeometry": p["gmlfootprint"],
            **{link: {"__deferred": {"uri": f"{uri}/{link}"}} for link in ("Products", "Nodes", "Attributes", "Class")},
        }

    def _value(self, request, product):
        if not self._authorised(request):
            return _unauthorised()
        if product.removed:
            return _invalid_key(product)
        if product.online:
            return 200, {"Content-Type": "application/octet-stream",
                         "Content-Disposition": f'attachment; filename="{product.name}.zip"'}, product.content
        return self._retrieval(product)

    def _retrieval(self, product):
        if product.lta == "quota":
            cause = (f"User 'alice' offline products retrieval quota exceeded (20 fetches max) trying to fetch "
                     f"product {product.name}.zip ({len(product.content)} bytes compressed)")
            return 403, {"cause-message": cause, "Content-Type": "text/plain"}, b""
        if product.lta == "busy":
            return 503, {"cause-message": "The LTA service is not available", "Content-Type": "text/plain"}, b""
        self.triggers.append(product.uuid)
        return 202, {"Content-Type": "text/plain"}, b""

    def _online(self, request, product):
        if not self._authorised(request):
            return _unauthorised()
        return 200, {"Content-Type": "application/json"}, json.dumps(product.online).encode()


    def _version(self, request):
        if not self._authorised(request):
            return _unauthorised()
        return 200, {"Content-Type": "application/json"}, json.dumps({"value": self.version}).encode()

    def _search(self, request):
        if not self._authorised(request):
            return _unauthorised()
        rows, start = int(request.query.get("rows", 10)), int(request.query.get("start", 0))
        if rows > MAX_ROWS:
            return _feed_error(f"Rows parameter must not exceed {MAX_ROWS}")
        try:
            clauses = parse_query(request.query.get("q", ""))
            found = [p for p in self.products if matches(clauses, properties(p))]
        except KeyError as unknown:
            return _feed_error(f"org.apache.solr.search.SyntaxError: undefined field {unknown.args[0]}")
        if "beginposition" in request.query.get("orderby", "").lower():
            found.sort(key=lambda p: (properties(p)["beginposition"], p.uuid),
                       reverse=request.query["orderby"].lower().endswith("desc"))
        page = [self._entry(p) for p in found[start: start + rows]]
        feed = {"opensearch:totalResults": str(len(found)), "opensearch:startIndex": str(start),
                "opensearch:itemsPerPage": str(rows), "title": "Sentinels Data Hub search results"}
        if page:
            feed["entry"] = page[0] if len(page) == 1 else page
        return 200, {"Content-Type": "application/json"}, json.dumps({"feed": feed}).encode()

    def _authorised(self, request):
        header = request.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return self.users.get(user) == password

    def _entry(self, product):
        odata = f"{self.url}odata/v1/Products('{product.uuid}')"
        p = properties(product)
        return {
            "title": p["identifier"],
            "link": [{"href": f"{odata}/$value"}, {"rel": "alternative", "href": f"{odata}/"},
                     {"rel": "icon", "href": f"{odata}/Products('Quicklook')/$value"}],
            "id": product.uuid,
            "summary": f"Date: {p['beginposition']}, Instrument: MSI, Satellite: Sentinel-2, Size: {product.size}",
            "ondemand": "false",
            "date": [{"name": k, "content": p[k]} for k in ("beginposition", "endposition", "ingestiondate")],
            "int": [{"name": "orbitnumber", "content": str(p["orbitnumber"])},
                    {"name": "relativeorbitnumber", "content": str(p["relativeorbitnumber"])}],
            "double": {"name": "cloudcoverpercentage", "content": str(product.cloud)},
            "str": [{"name": k, "content": str(p[k])} for k in STR_KEYS],
        }


STR_KEYS = ("gmlfootprint", "format", "instrumentshortname", "footprint", "orbitdirection",
            "platformserialidentifier", "processinglevel", "producttype", "platformname", "size", "tileid",
            "filename", "identifier", "uuid")


def properties(product):
    """The product's DHuS attributes (lower-case names, as Solr fields), values as DHuS shows them."""
    parsed = parse_product_name(product.name)
    sensing = parsed["sensing_start"].strftime("%Y-%m-%dT%H:%M:%S.024Z")
    level = parsed["level"]
    return {
        "identifier": product.name, "filename": product.name + ".SAFE", "uuid": product.uuid,
        "beginposition": sensing, "endposition": sensing, "ingestiondate": sensing, "date": sensing,
        "orbitnumber": 30000 + parsed["relative_orbit"], "relativeorbitnumber": parsed["relative_orbit"],
        "cloudcoverpercentage": product.cloud, "footprint": product.footprint,
        "gmlfootprint": _gml(product.footprint), "format": "SAFE", "instrumentshortname": "MSI",
        "orbitdirection": product.orbit_direction, "platformname": "Sentinel-2",
        "platformserialidentifier": "Sentinel-" + parsed["platform"][1:],
        "processinglevel": "Level-1C" if level == "L1C" else "Level-2A",
        "producttype": "S2MSI1C" if level == "L1C" else "S2MSI2A", "size": product.size,
        "tileid": parsed["tile_id"],
    }


def _gml(wkt):
    # DHuS writes lat,lon pairs in its GML footprint.
    pairs = re.findall(r"(-?[\d.]+) (-?[\d.]+)", wkt)
    coordinates = " ".join(f"{lat},{lon}" for lon, lat in pairs)
    return ('<gml:Polygon srsName="http://www.opengis.net/gml/srs/epsg.xml#4326" '
            'xmlns:gml="http://www.opengis.net/gml"><gml:outerBoundaryIs><gml:LinearRing><gml:coordinates>'
            f"{coordinates}</gml:coordinates></gml:LinearRing></gml:outerBoundaryIs></gml:Polygon>")


# ---- Solr query subset ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\(|\)|\bOR\b|\bAND\b|([A-Za-z_]+):("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^\s()]+)')


def parse_query(q):
    """A list of clause groups: the query matches when every group has a matching clause (AND of ORs)."""
    groups, current = [], None
    for match in _TOKEN.finditer(q):
        token = match.group(0)
        if token == "(":
            current = []
        elif token == ")":
            groups.append(current)
            current = None
        elif match.group(1):
            clause = (match.group(1).lower(), match.group(2))
            if current is None:
                groups.append([clause])
            else:
                current.append(clause)
    return groups


def matches(groups, props):
    return all(any(_clause_matches(key, value, props) for key, value in group) for group in groups)


def _clause_matches(key, value, props):
    if key == "footprint":
        return True  # recorded, not evaluated (see the module docstring)
    if key not in props:
        raise KeyError(key)
    actual = props[key]
    if value.startswith("["):
        low, high = (v.strip().strip('"') for v in value[1:-1].split(" TO "))
        convert = _date if key in DATE_KEYS else float
        return (low == "*" or convert(actual) >= convert(low)) and (high == "*" or convert(actual) <= convert(high))
    text = value.strip('"')
    if "*" in text or "?" in text:
        return fnmatch.fnmatch(str(actual).lower(), text.lower())
    if isinstance(actual, (int, float)):
        return float(actual) == float(text)
    return str(actual).lower() == text.lower()


def _date(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _unauthorised():
    body = b"<html><body><h1>HTTP Status 401 - Full authentication is required</h1></body></html>"
    return 401, {"Content-Type": "text/html", "WWW-Authenticate": 'Basic realm="Data Hub"'}, body


def _invalid_key(product):
    message = {"lang": "en", "value": f"Invalid key ({product.uuid}) to access Products"}
    body = {"error": {"code": None, "message": message}}
    return 404, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _odata_date(text):
    """An ISO timestamp as OData v2 JSON writes dates: ``/Date(<ms since 1970>)/``."""
    return f"/Date({round(_date(text).timestamp() * 1000)})/"


def _feed_error(message):
    body = {"feed": {"error": {"code": 400, "message": message}}}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

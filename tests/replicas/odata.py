"""A local replica of the Copernicus Data Space OData catalogue: the subset ``catalogs/cdse.py`` uses.

``GET <root>/Products`` with ``$filter`` (``and``/``or``/``not``, parentheses, comparisons on product fields,
``Attributes/OData.CSC.<Type>Attribute/any(att:...)``, ``OData.CSC.Intersects(area=geography'SRID=4326;<WKT>')``
evaluated with OGR, ``contains``/``startswith``/``endswith``), ``$orderby`` (then by Id, as the service does),
``$top`` (at most 1000), ``$skip`` (at most 10,000: larger values get the service's 422 body),
``$expand=Attributes``/``Assets`` and ``$count``. Like the service since 2024-11, ``@odata.nextLink`` is left
out once the next ``$skip`` would pass the limit. Attribute casts are not checked (the service tolerates
mixed casts, see the reference notes).

Products come from :func:`generate_products` (the exact JSON shape of the real fixture, with the real tile
outlines of ``grid.tile_outline``) or are real responses replayed as given. Used by the tests (through
:func:`odata_test_server`, which adds the faults of ``tests/servers.py``), the benchmarks and ``make demo``
(through :func:`serve` and ``scripts/replica.py``); nothing here reads ``../shared``.
"""

import datetime as dt
import functools
import hashlib
import http.server
import json
import re
import threading
import urllib.parse
import uuid

from sentinel2_pipeline.plugin.engine import grid
from sentinel2_pipeline.plugin.engine.footprints import parse_time

ROOT = "/odata/v1"
SKIP_LIMIT = 10_000
MAX_TOP = 1000
PRODUCT_TYPES = {"L1C": "S2MSI1C", "L2A": "S2MSI2A"}
SORTABLE = ("ContentDate/Start", "ContentDate/End", "PublicationDate", "ModificationDate")
EXPANDABLE = ("Attributes", "Assets")


# ---- products ----------------------------------------------------------------------------------------

def generate_products(tiles, start, end, every_days=5, levels=("L1C",), platforms=("A", "B")):
    """Products in the service's JSON shape: for every ``every_days``-th day from ``start`` to ``end`` (dates),
    one product per tile and level; platforms alternate by acquisition day. Deterministic."""
    day, step, products = _as_date(start), 0, []
    while day <= _as_date(end):
        for tile_id in tiles:
            for level in levels:
                products.append(make_product(tile_id, day, level, platforms[step % len(platforms)], step))
        day += dt.timedelta(days=every_days)
        step += 1
    products.sort(key=lambda p: (p["ContentDate"]["Start"], p["Id"]))
    return products


def make_product(tile_id, day, level, platform, step=0):
    """One product of ``tile_id`` sensed on ``day``: the keys, order and value formats of the fixture
    ``cdse_odata_products_search_S2L1C_expand_Attributes_Assets.json``."""
    tile = grid.parse_tile_id(tile_id)
    sensing = _sensing_time(tile.zone, day)
    orbit = 1 + (tile.zone * 29 + 3 * (step % 2)) % 143  # two relative orbits per tile, as in reality
    processed = sensing + dt.timedelta(hours=2, minutes=7)
    name = (f"S2{platform}_MSI{level}_{sensing:%Y%m%dT%H%M%S}_N0509_R{orbit:03d}_T{tile.tile_id}_"
            f"{processed:%Y%m%dT%H%M%S}.SAFE")
    digest = hashlib.md5(name.encode()).hexdigest()
    published = processed + dt.timedelta(minutes=40)
    s3_path = f"/eodata/Sentinel-2/MSI/{level}/{sensing:%Y/%m/%d}/{name}"
    geometry, ewkt = tile_footprint(tile.tile_id)
    return {
        "@odata.mediaContentType": "application/octet-stream",
        "Id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        "Name": name,
        "ContentType": "application/octet-stream",
        "ContentLength": 500_000_000 + int(digest[8:16], 16) % 350_000_000,
        "OriginDate": _iso(processed + dt.timedelta(minutes=30)),
        "PublicationDate": _iso(published),
        "ModificationDate": _iso(published + dt.timedelta(seconds=45)),
        "Online": True,
        "EvictionDate": "9999-12-31T23:59:59.999999Z",
        "S3Path": s3_path,
        "Checksum": [
            {"Value": hashlib.md5(name.encode() + b".zip").hexdigest(), "Algorithm": "MD5",
             "ChecksumDate": _iso(published + dt.timedelta(seconds=6))},
            {"Value": hashlib.sha256(name.encode()).hexdigest(), "Algorithm": "BLAKE3",
             "ChecksumDate": _iso(published + dt.timedelta(seconds=7))},
        ],
        "ContentDate": {"Start": _iso(sensing), "End": _iso(sensing)},
        "Footprint": ewkt,
        "GeoFootprint": geometry,
        "Attributes": _attributes(tile.tile_id, level, platform, sensing, processed, orbit, digest),
        "Assets": [{
            "Type": "QUICKLOOK",
            "Id": str(uuid.uuid5(uuid.NAMESPACE_URL, name + "/quicklook")),
            "DownloadLink": "https://catalogue.dataspace.copernicus.eu/odata/v1/Assets({})/$value".format(
                uuid.uuid5(uuid.NAMESPACE_URL, name + "/quicklook")),
            "S3Path": s3_path,
        }],
    }


def _attributes(tile_id, level, platform, sensing, processed, orbit, digest):
    absolute = int((sensing - dt.datetime(2015, 6, 23, tzinfo=dt.timezone.utc)).total_seconds() // 6036)
    product_type = PRODUCT_TYPES[level]
    values = [
        ("String", "origin", "ESA"),
        ("String", "tileId", tile_id),
        ("Double", "cloudCover", int(digest[:8], 16) % 10_000_000 / 100_000.0),  # spread over 0..100
        ("String", "datastripId", f"S2{platform}_OPER_MSI_{level}_DS_2APS_{processed:%Y%m%dT%H%M%S}_"
                                  f"S{sensing + dt.timedelta(seconds=3):%Y%m%dT%H%M%S}_N05.09"),
        ("Integer", "orbitNumber", absolute),
        ("DateTimeOffset", "processingDate", _iso(processed)),
        ("String", "productGroupId", f"GS2{platform}_{sensing:%Y%m%dT%H%M%S}_{absolute:06d}_N05.09"),
        ("String", "operationalMode", "INS-NOBS"),
        ("String", "processingLevel", product_type),
        ("String", "processorVersion", "05.09"),
        ("String", "platformShortName", "SENTINEL-2"),
        ("String", "instrumentShortName", "MSI"),
        ("Integer", "relativeOrbitNumber", orbit),
        ("String", "platformSerialIdentifier", platform),
        ("String", "productType", product_type),
        ("DateTimeOffset", "beginningDateTime", _iso(sensing)),
        ("DateTimeOffset", "endingDateTime", _iso(sensing)),
    ]
    return [{"@odata.type": f"#OData.CSC.{kind}Attribute", "Name": name, "Value": value, "ValueType": kind}
            for kind, name, value in values]


@functools.cache
def tile_footprint(tile_id):
    """(GeoJSON geometry, EWKT) of a tile's outline, split at the antimeridian like the service's footprints."""
    tile = grid.parse_tile_id(tile_id)
    lons, lats = grid.tile_outline(tile, per_edge=5)
    if -180.0 <= lons.min() and lons.max() <= 180.0:
        ring = [[round(x, 12), round(y, 12)] for x, y in zip(lons.tolist(), lats.tolist())]
        geometry = {"type": "Polygon", "coordinates": [ring]}
    else:
        from osgeo import ogr

        geometry = json.loads(ogr.CreateGeometryFromWkt(grid.tile_geometry_wkt(tile)).ExportToJson())
    return geometry, f"geography'SRID=4326;{_wkt(geometry)}'"


def _wkt(geometry):
    def ring(points):
        return "(" + ", ".join(f"{x!r} {y!r}" for x, y in points) + ")"

    def polygon(rings):
        return "(" + ", ".join(ring(r) for r in rings) + ")"

    if geometry["type"] == "Polygon":
        return "POLYGON " + polygon(geometry["coordinates"])
    return "MULTIPOLYGON (" + ", ".join(polygon(p) for p in geometry["coordinates"]) + ")"


def _sensing_time(zone, day):
    # About 10:30 local solar time on the zone's central meridian; one instant for all tiles of a zone on a
    # day, as for the tiles of one datatake (so many products share a ContentDate/Start, as on the service).
    minutes = round((10.5 - grid.central_meridian(zone) / 15.0) * 60) % (24 * 60)
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return midnight + dt.timedelta(minutes=minutes, seconds=11, milliseconds=24)


def _as_date(value):
    return value.date() if isinstance(value, dt.datetime) else value


def _iso(value):
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- the service -------------------------------------------------------------------------------------

class _Record:
    """A product with what filters need, computed once."""

    __slots__ = ("product", "start", "end", "attributes", "geometry")

    def __init__(self, product, geometries):
        self.product = product
        self.start = parse_time(product["ContentDate"]["Start"])
        self.end = parse_time(product["ContentDate"]["End"])
        self.attributes = product.get("Attributes") or []
        key = json.dumps(product.get("GeoFootprint"), sort_keys=True)
        if key not in geometries:
            from osgeo import ogr

            geometries[key] = ogr.CreateGeometryFromJson(key) if product.get("GeoFootprint") else None
        self.geometry = geometries[key]


class ODataReplica:
    """The catalogue's answers for a list of products.

    ``skip_limit``: the largest accepted ``$skip``; ``next_link_past_limit``: keep giving nextLinks past it (the
    service did before 2024-11, and a client must not follow them); ``ignore``: attribute names whose clauses
    the replica treats as always true (a server that cannot filter on them, for client-side filtering tests).
    """

    def __init__(self, products, skip_limit=SKIP_LIMIT, next_link_past_limit=False, ignore=()):
        geometries = {}
        self.records = [_Record(p, geometries) for p in products]
        self.skip_limit = skip_limit
        self.next_link_past_limit = next_link_past_limit
        self.ignore = frozenset(ignore)
        self.served = []  # Ids of the products answered, in order (what a client got before its own filtering)
        self._selected = {}
        self._lock = threading.Lock()

    def answer(self, path, pairs, host):
        """``(status, headers, body)`` for a GET of ``path`` with the query ``pairs`` ((name, value) in order)."""
        params = {}
        for name, value in pairs:
            params.setdefault(name, []).append(value)
        try:
            top = _bounded_int(params, "$top", 20, MAX_TOP)
            skip = _bounded_int(params, "$skip", 0, self.skip_limit)
            selected = self._select(_last(params, "$filter"), _last(params, "$orderby"))
        except _Invalid as error:
            return error.status, {"Content-Type": "application/json"}, json.dumps(error.body).encode()
        expand = {part.strip() for value in params.get("$expand", ()) for part in value.split(",")}
        body = {"@odata.context": _context(expand)}
        if (_last(params, "$count") or "").lower() == "true":
            body["@odata.count"] = len(selected)
        page = selected[skip: skip + top]
        body["value"] = [_shaped(record.product, expand) for record in page]
        with self._lock:
            self.served.extend(record.product["Id"] for record in page)
        next_skip = skip + top
        if top and next_skip < len(selected) and (next_skip <= self.skip_limit or self.next_link_past_limit):
            body["@odata.nextLink"] = _next_link(host, path, pairs, next_skip)
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _select(self, filter_text, orderby):
        key = (filter_text, orderby)
        with self._lock:  # evaluated once per filter: paging through 12 pages must not re-filter 12 times
            if key not in self._selected:
                predicate = parse_filter(filter_text, self.ignore) if filter_text else None
                selected = [r for r in self.records if predicate is None or predicate(r, None)]
                self._selected[key] = _ordered(selected, orderby)
            return self._selected[key]


class _Invalid(Exception):
    def __init__(self, status, body):
        super().__init__(body)
        self.status, self.body = status, body


def _last(params, name):
    values = params.get(name)
    return values[-1] if values else None


def _bounded_int(params, name, default, limit):
    """The service's (FastAPI/pydantic) validation of $top and $skip, with its 422 bodies."""
    text = _last(params, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _Invalid(422, {"detail": [{"type": "int_parsing", "loc": ["query", name],
                                         "msg": "Input should be a valid integer, unable to parse string as an "
                                                "integer", "input": text}]}) from None
    if value > limit:
        raise _Invalid(422, {"detail": [{"type": "less_than_equal", "loc": ["query", name],
                                         "msg": f"Input should be less than or equal to {limit}", "input": text,
                                         "ctx": {"le": limit}}]})
    if value < 0:
        raise _Invalid(422, {"detail": [{"type": "greater_than_equal", "loc": ["query", name],
                                         "msg": "Input should be greater than or equal to 0", "input": text,
                                         "ctx": {"ge": 0}}]})
    return value


def _ordered(records, orderby):
    if not orderby:
        return records
    field, _, direction = orderby.strip().partition(" ")
    if field not in SORTABLE or direction.strip().lower() not in ("", "asc", "desc"):
        raise _Invalid(400, {"detail": f"Invalid $orderby: {orderby}"})

    def key(record):
        if field in ("ContentDate/Start", "ContentDate/End"):
            return record.start if field.endswith("Start") else record.end, record.product["Id"]
        return parse_time(record.product[field]), record.product["Id"]

    return sorted(records, key=key, reverse=direction.strip().lower() == "desc")


def _context(expand):
    expanded = [name for name in EXPANDABLE if name in expand]
    return "$metadata#Products" + (f"({','.join(name + '()' for name in expanded)})" if expanded else "")


def _shaped(product, expand):
    return {k: v for k, v in product.items() if k not in EXPANDABLE or k in expand}


def _next_link(host, path, pairs, skip):
    """The request's own query with ``$skip`` set (after ``$top``, where the service puts it)."""
    out, placed = [], False
    for name, value in pairs:
        if name == "$skip":
            continue
        out.append((name, value))
        if name == "$top":
            out.append(("$skip", str(skip)))
            placed = True
    if not placed:
        out.append(("$skip", str(skip)))
    return f"http://{host}{path}?{urllib.parse.urlencode(out)}"


# ---- $filter -----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<geography>geography'[^']*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][\w.]*(?:/[A-Za-z_][\w.]*)*)
  | (?P<punct>[(),:=])
)""", re.VERBOSE)
_COMPARE = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
}
_TEXT_FUNCTIONS = {"contains": lambda a, b: b in a, "startswith": str.startswith, "endswith": str.endswith}


def parse_filter(text, ignore=()):
    """A predicate ``(record, attribute) -> bool`` for an OData ``$filter``; 400 on anything unsupported."""
    return _Parser(text, ignore).parse()


def _tokens(text):
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            if text[position:].strip():
                raise _bad_filter(f"unexpected text at {text[position:position + 30]!r}")
            break
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens


def _bad_filter(reason):
    return _Invalid(400, {"detail": f"Invalid $filter: {reason}"})


class _Parser:
    """Recursive descent: or > and > not/parentheses > call or comparison."""

    def __init__(self, text, ignore):
        self.tokens, self.position, self.ignore = _tokens(text), 0, ignore
        self.variables = []  # lambda variables of enclosing any(), with the attribute names compared

    def parse(self):
        node = self._or()
        if self.position != len(self.tokens):
            raise _bad_filter(f"unexpected {self.tokens[self.position][1]!r}")
        return node

    def _peek(self, kind=None, value=None):
        if self.position >= len(self.tokens):
            return None
        token = self.tokens[self.position]
        if (kind and token[0] != kind) or (value and token[1] != value):
            return None
        return token

    def _take(self, kind=None, value=None):
        token = self._peek(kind, value)
        if token is None:
            found = self.tokens[self.position][1] if self.position < len(self.tokens) else "the end"
            raise _bad_filter(f"expected {value or kind}, found {found!r}")
        self.position += 1
        return token[1]

    def _accept(self, kind, value):
        if self._peek(kind, value):
            self.position += 1
            return True
        return False

    def _or(self):
        terms = [self._and()]
        while self._accept("name", "or"):
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else (lambda r, a: any(t(r, a) for t in terms))

    def _and(self):
        factors = [self._unary()]
        while self._accept("name", "and"):
            factors.append(self._unary())
        return factors[0] if len(factors) == 1 else (lambda r, a: all(f(r, a) for f in factors))

    def _unary(self):
        if self._accept("name", "not"):
            inner = self._unary()
            return lambda r, a: not inner(r, a)
        if self._accept("punct", "("):
            inner = self._or()
            self._take("punct", ")")
            return inner
        name = self._take("name")
        if self._accept("punct", "("):
            return self._call(name)
        return self._comparison(name)

    def _call(self, name):
        if name.endswith("/any"):
            return self._any()
        if name == "OData.CSC.Intersects":
            return self._intersects()
        if name in _TEXT_FUNCTIONS:
            getter = self._getter(self._take("name"))
            self._take("punct", ",")
            literal = self._literal()
            self._take("punct", ")")
            test = _TEXT_FUNCTIONS[name]
            return lambda r, a: isinstance(getter(r, a), str) and test(getter(r, a), literal)
        raise _bad_filter(f"unsupported function {name}")

    def _any(self):
        variable = self._take("name")
        self._take("punct", ":")
        self.variables.append((variable, []))
        inner = self._or()
        _, names = self.variables.pop()
        self._take("punct", ")")
        if self.ignore.intersection(names):
            return lambda r, a: True
        return lambda r, a: any(inner(r, attribute) for attribute in r.attributes)

    def _intersects(self):
        self._take("name", "area")
        self._take("punct", "=")
        literal = self._take("geography")[len("geography'"):-1]
        srid, _, wkt = literal.partition(";")
        if srid.strip().upper() != "SRID=4326":
            raise _bad_filter(f"unsupported {srid}")
        from osgeo import ogr

        area = ogr.CreateGeometryFromWkt(wkt)
        if area is None or not area.IsValid():
            raise _bad_filter(f"invalid geometry {wkt[:60]!r}")
        self._take("punct", ")")
        return lambda r, a: r.geometry is not None and r.geometry.Intersects(area)

    def _comparison(self, path):
        operator = self._take("name")
        if operator not in _COMPARE:
            raise _bad_filter(f"unsupported operator {operator!r}")
        literal = self._literal()
        if self.variables and path == f"{self.variables[-1][0]}/Name":
            self.variables[-1][1].append(literal)
        getter, compare = self._getter(path), _COMPARE[operator]

        def test(record, attribute):
            value = getter(record, attribute)
            if value is None or literal is None:
                return compare(value, literal) if operator in ("eq", "ne") else False
            if isinstance(literal, dt.datetime) and isinstance(value, str):
                value = parse_time(value)
            try:
                return compare(value, literal)
            except TypeError:
                return False

        return test

    def _literal(self):
        token = self.tokens[self.position] if self.position < len(self.tokens) else (None, None)
        self.position += 1
        kind, text = token
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "time":
            return parse_time(text)
        if kind == "number":
            return float(text)
        if kind == "name" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        raise _bad_filter(f"expected a value, found {text!r}")

    def _getter(self, path):
        variable = self.variables[-1][0] if self.variables else None
        if variable and path.startswith(variable + "/"):
            key = path.rsplit("/", 1)[1]  # att/Name, att/OData.CSC.<Type>Attribute/Value
            return lambda r, a: a.get(key) if a else None
        fixed = {"Collection/Name": lambda r, a: "SENTINEL-2", "ContentDate/Start": lambda r, a: r.start,
                 "ContentDate/End": lambda r, a: r.end}
        if path in fixed:
            return fixed[path]
        keys = path.split("/")

        def walk(record, attribute):
            value = record.product
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            return value

        return walk


# ---- servers -----------------------------------------------------------------------------------------

def serve(replica, host="127.0.0.1", port=0, root=ROOT):
    """Serve ``replica`` at ``http://host:port<root>/Products`` from a daemon thread (no test tooling needed).
    Returns ``(server, root_url)``; stop it with ``server.shutdown(); server.server_close()``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server API name)
            parts = urllib.parse.urlsplit(self.path)
            if parts.path == root + "/Products":
                pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                status, headers, body = replica.answer(parts.path, pairs, self.headers.get("Host") or self.host)
            else:
                status, headers, body = 404, {"Content-Type": "application/json"}, b'{"detail":"Not Found"}'
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        @property
        def host(self):
            return f"{host}:{self.server.server_address[1]}"

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}{root}"


def odata_test_server(replica, root=ROOT):
    """A started ``tests/servers.py`` TestServer serving ``replica``: ``.odata_url`` is the OData root,
    ``.products`` the route (queue faults on it), ``.raw_queries`` every request's (name, value) pairs
    (``Recorded.query`` keeps one value per name, so the repeated ``$expand`` is only visible there)."""
    return _test_server_class()(replica, root).start()


@functools.lru_cache(maxsize=1)
def _test_server_class():
    from servers import TestServer  # tests/servers.py imports pytest: only the tests need it

    class ODataTestServer(TestServer):
        __test__ = False

        def __init__(self, replica, root):
            super().__init__()
            self.replica, self.root = replica, root
            self.raw_queries = []
            self._local = threading.local()
            self.products = self.route(root + "/Products", handler=self._answer)

        @property
        def odata_url(self):
            return self.url(self.root)

        def serve(self, handler):
            pairs = urllib.parse.parse_qsl(urllib.parse.urlsplit(handler.path).query, keep_blank_values=True)
            self._local.pairs = pairs
            with self._lock:
                self.raw_queries.append(pairs)
            super().serve(handler)

        def _answer(self, request):
            return self.replica.answer(request.path, self._local.pairs, request.headers.get("Host") or self.host)

    return ODataTestServer


# ---- product downloads -------------------------------------------------------------------------------

def with_content(product, body):
    """``product`` as the catalogue lists it when its zip is ``body``: ContentLength and MD5 of those bytes (the
    generated values describe no real bytes). Returns a copy."""
    product = json.loads(json.dumps(product))
    product["ContentLength"] = len(body)
    for entry in product["Checksum"]:
        if entry["Algorithm"] == "MD5":
            entry["Value"] = hashlib.md5(body).hexdigest()
    product["Checksum"] = [entry for entry in product["Checksum"] if entry["Algorithm"] == "MD5"]
    return product


def value_path(product, root=ROOT):
    """The path of a product's zip, ``<root>/Products(<Id>)/$value`` (the Id unquoted, as on the service)."""
    return f"{root}/Products({product['Id']})/$value"

"""A local Sentinel Hub replica for tests (served by :class:`servers.TestServer`): what sentinelhub-py's
``SentinelHubCatalog.search`` uses.

- ``POST <token path>`` (default Sentinel Hub's ``/auth/realms/main/protocol/openid-connect/token``): OAuth2 client
  credentials grant (form body with ``client_id``/``client_secret``, or HTTP Basic) answering Keycloak's JSON
  (``access_token``, ``expires_in``, ``token_type``); 401 ``{"error": "unauthorized_client", ...}`` for a bad client.
- ``POST /api/v1/catalog/1.0.0/search``: Bearer token required; JSON body with ``collections``, ``datetime``
  (``start/end``), ``bbox`` or ``intersects`` (recorded, not evaluated: tests check the client's own area
  filter), ``filter`` in CQL2 text (``property op value`` joined by ``AND``; an unknown property is a 400),
  ``limit`` (1..100) and ``next`` (offset). The answer is a FeatureCollection with
  ``"context": {"next": n, "limit": l, "returned": k}``; ``next`` is left out on the last page.

Features have the shape of the real CDSE answer (``fixture_feature()`` is that answer, replayed verbatim).
"""

import ast
import base64
import datetime as dt
import json
import operator
import re
import secrets
import urllib.parse

from servers import fixture_path

from sentinel2_pipeline.plugin.engine import grid
from sentinel2_pipeline.plugin.engine.footprints import parse_product_name, parse_time

SEARCH_PATH = "/api/v1/catalog/1.0.0/search"
TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"
QUERYABLES = {"eo:cloud_cover", "platform"}
OPERATORS = {"<=": operator.le, ">=": operator.ge, "<>": operator.ne, "<": operator.lt, ">": operator.gt,
             "=": operator.eq}


def fixture_feature():
    """The real feature of ``sentinelhub_cdse_catalog_get_feature_S2L2A.pyrepr.txt`` (a Python repr)."""
    with open(fixture_path("sentinelhub_cdse_catalog_get_feature_S2L2A.pyrepr.txt"), encoding="utf-8") as f:
        text = "\n".join(line for line in f if not line.startswith("#"))
    return ast.literal_eval(text)


def feature(name, cloud):
    """A feature in the CDSE Catalog shape for product ``name`` (tile outline as its footprint)."""
    from osgeo import ogr

    parsed = parse_product_name(name)
    tile = grid.parse_tile_id(parsed["tile_id"])
    geometry = json.loads(ogr.CreateGeometryFromWkt(grid.tile_geometry_wkt(tile)).ExportToJson())
    geometry["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC::CRS84"}}
    sensing = parsed["sensing_start"]
    level = parsed["level"]
    return {
        "stac_version": "1.0.0", "id": f"{name}.SAFE", "type": "Feature", "geometry": geometry,
        "properties": {"datetime": sensing.strftime("%Y-%m-%dT%H:%M:%S.123Z"),
                       "platform": f"sentinel-{parsed['platform'][1:].lower()}", "instruments": ["msi"],
                       "constellation": "sentinel-2", "gsd": 10, "eo:cloud_cover": cloud, "proj:epsg": tile.epsg},
        "assets": {"data": {"href": f"s3://EODATA/Sentinel-2/MSI/{level}_N0509/{sensing:%Y/%m/%d}/{name}.SAFE",
                            "title": "s3", "type": "inode/directory"}},
        "collection": f"sentinel-2-{level.lower()}",
    }


def generate(count, start, tiles=("31TCJ",), level="L2A", step=dt.timedelta(hours=7)):
    """``count`` features over ``tiles`` (cycled), S2A/S2B alternating, orbits and cloud cover varying."""
    out = []
    for i in range(count):
        sensing = start + i * step
        stamp = sensing.strftime("%Y%m%dT%H%M%S")
        name = (f"{('S2A', 'S2B')[i % 2]}_MSI{level}_{stamp}_N0509_R{1 + (i * 7) % 143:03d}_"
                f"T{tiles[i % len(tiles)]}_{stamp[:9]}235959")
        out.append(feature(name, float((i * 37) % 99)))
    return out


class SentinelHubReplica:
    """``SentinelHubReplica(http_server, features, clients={'client-1': 's3cret'})``; ``url`` is the base URL."""

    def __init__(self, server, features=(), clients=None, token_path=TOKEN_PATH):
        self.server = server
        self.features = list(features)
        self.clients = dict(clients or {"client-1": "s3cret"})
        self.token_path = token_path
        self.tokens = {}
        self.token_route = server.route(token_path, method="POST", handler=self._token)
        self.search_route = server.route(SEARCH_PATH, method="POST", handler=self._search)

    @property
    def url(self):
        return self.server.url("").rstrip("/")

    @property
    def token_url(self):
        return self.server.url(self.token_path)

    def searches(self):
        """The JSON bodies of the recorded search requests."""
        return [json.loads(r.body) for r in self.server.requests_to(SEARCH_PATH, "POST")]

    def _token(self, request):
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization") or ""
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials" or self.clients.get(client_id) != secret:
            return _json(401, {"error": "unauthorized_client",
                               "error_description": "Invalid client or Invalid client credentials"})
        token = _jwt({"azp": client_id, "exp": int(dt.datetime.now().timestamp()) + 600})
        self.tokens[token] = client_id
        return _json(200, {"access_token": token, "expires_in": 600, "refresh_expires_in": 0,
                           "token_type": "Bearer", "not-before-policy": 0, "scope": "email profile"})

    def _search(self, request):
        header = request.headers.get("Authorization") or ""
        if not header.startswith("Bearer ") or header[7:] not in self.tokens:
            return _json(401, {"error": {"status": 401, "reason": "Unauthorized", "message": "Invalid token"}})
        body = json.loads(request.body)
        limit, offset = int(body.get("limit", 10)), int(body.get("next", 0))
        if not 1 <= limit <= 100:
            return _json(400, {"error": {"status": 400, "reason": "Bad Request",
                                         "message": "limit must be between 1 and 100"}})
        try:
            chosen = [f for f in self.features if _selected(f, body)]
        except KeyError as unknown:
            return _json(400, {"error": {"status": 400, "reason": "Bad Request",
                                         "message": f"Unknown queryable {unknown.args[0]}"}})
        page = chosen[offset: offset + limit]
        context = {"limit": limit, "returned": len(page)}
        if offset + limit < len(chosen):
            context["next"] = offset + limit
        return _json(200, {"type": "FeatureCollection", "features": page, "links": [], "context": context})


def _selected(feature, body):
    if feature["collection"] not in body.get("collections", []):
        return False
    if body.get("datetime"):
        start, end = (parse_time(t) for t in body["datetime"].split("/"))
        if not start <= parse_time(feature["properties"]["datetime"]) <= end:
            return False
    return all(_condition(feature["properties"], c) for c in re.split(r"\s+AND\s+", body.get("filter") or "")
               if c.strip())


def _condition(properties, condition):
    match = re.match(r"^\s*([\w:]+)\s*(<=|>=|<>|<|>|=)\s*(.+?)\s*$", condition)
    name, op, value = match.groups()
    if name not in QUERYABLES:
        raise KeyError(name)
    value = value.strip("'") if value.startswith("'") else float(value)
    return OPERATORS[op](properties.get(name), value)


def _jwt(claims):
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.{secrets.token_urlsafe(16)}"


def _json(status, body):
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

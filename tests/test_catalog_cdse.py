"""The `cdse` catalogue (Copernicus Data Space OData) against the real fixture responses and the local replica.

Everything goes over real sockets on 127.0.0.1 (tests/servers.py, tests/replicas/odata.py); nothing patches
requests.
"""

import copy
import datetime as dt
import json
import re
import socket
import sys

import pytest
from conftest import tracked_session
from replicas import odata
from servers import faults, fixture_path, http_server  # noqa: F401 (fixtures are used by name)

from sentinel2_pipeline.plugin.engine.catalogs import cdse
from sentinel2_pipeline.plugin.engine.catalogs import search as catalog_search
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ServiceError
from sentinel2_pipeline.plugin.engine.query import Query
from sentinel2_pipeline.plugin.engine.version import plugin_version

SEARCH_FIXTURE = fixture_path("cdse_odata_products_search_S2L1C_expand_Attributes_Assets.json")
SINGLE_FIXTURE = fixture_path("cdse_odata_single_product_S2B_MSIL1C_docs_releasenotes.json.txt")
SKIP_422_FIXTURE = fixture_path("cdse_odata_error_422_skip_over_10000_docs.json")
UTC = dt.timezone.utc
# 30 tiles around Toulouse and the Massif Central (zones 30 and 31).
TILES = ("30TYN 30TYP 30TYQ 30TYR 30TYS 30TYT 31TFH 31TFJ 31TFK 31TFL 31TFM 31TFN 31TCH 31TCJ 31TCK 31TCL 31TCM "
         "31TCN 31TDH 31TDJ 31TDK 31TDL 31TDM 31TDN 31TEH 31TEJ 31TEK 31TEL 31TEM 31TEN").split()

def session():
    return tracked_session(timeout=10, max_backoff=2)


@pytest.fixture
def replica_server(request):
    """``replica_server(products, **options)`` starts an OData replica; all are stopped after the test."""
    started = []

    def start(products, **options):
        server = odata.odata_test_server(odata.ODataReplica(products, **options))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def products_for(count_days, tiles=TILES[:10], start=dt.date(2022, 1, 1), every_days=1, levels=("L1C",)):
    return odata.generate_products(tiles, start, start + dt.timedelta(days=count_days - 1), every_days, levels)


def run(server_or_url, query, **kwargs):
    """Search through the public catalogue entry point; returns (results, log lines, progress reports)."""
    lines, reports = [], []
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.odata_url
    kwargs.setdefault("session", session())
    results = catalog_search("cdse", query, url=url, log=lines.append,
                             progress=lambda fraction, message="": reports.append(fraction), **kwargs)
    return results, lines, reports


def period_query(**filters):
    filters.setdefault("start", dt.datetime(2022, 1, 1, tzinfo=UTC))
    filters.setdefault("end", dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC))
    return Query(**filters)


def odata_products(server):
    return [record.product for record in server.replica.records]


def skips(server):
    """The $skip of every page request (the $count request that follows a capped search is not a page)."""
    return [int(dict(pairs).get("$skip", 0)) for pairs in server.raw_queries if "$count" not in dict(pairs)]


def assert_one_sentence(message):
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message


# ---- parsing the real responses ------------------------------------------------------------------------

@pytest.fixture
def without_blake3(monkeypatch):
    monkeypatch.setitem(sys.modules, "blake3", None)  # a QGIS whose Python lacks the package


def test_parses_the_real_search_fixture(without_blake3):
    with open(SEARCH_FIXTURE, encoding="utf-8") as stream:
        document = json.load(stream)
    first, second = (cdse.parse_product(p) for p in document["value"])
    assert first.id == "05edf2bb-d103-49f1-a677-9e474138d84f"
    assert first.name == "S2A_MSIL1C_20200808T010311_N0500_R045_T54PXA_20230413T212505.SAFE"
    assert (first.provider, first.platform, first.level, first.tile_id) == ("cdse", "S2A", "L1C", "54PXA")
    assert first.relative_orbit == 45 and first.orbit_direction == "DESCENDING"
    assert first.cloud_cover == pytest.approx(95.136736479015)
    assert first.sensing_start == dt.datetime(2020, 8, 8, 1, 3, 11, 24000, tzinfo=UTC)
    assert first.size_bytes == 224105657 and first.online is True
    assert first.checksum == "MD5:923ac4992d90b57d41e7ace4d9d90757"
    assert first.geometry == document["value"][0]["GeoFootprint"]  # kept exactly, all 21 vertices
    assert first.download_url == ("https://download.dataspace.copernicus.eu/odata/v1/Products("
                                  "05edf2bb-d103-49f1-a677-9e474138d84f)/$value")
    assert first.extra == {
        "quicklook": "https://catalogue.dataspace.copernicus.eu/odata/v1/Assets("
                     "385d0a62-ec57-413b-a8b8-12c0e79848f6)/$value",
        "s3_path": "/eodata/Sentinel-2/MSI/L1C_N0500/2020/08/08/"
                   "S2A_MSIL1C_20200808T010311_N0500_R045_T54PXA_20230413T212505.SAFE"}
    assert second.tile_id == "55PBR" and second.checksum == "MD5:9d22f81af1320e17fa38449195a73772"
    assert len(second.geometry["coordinates"][0]) == 39


def test_parses_the_single_product_of_the_docs_from_its_wkt_footprint(without_blake3):
    # The docs shorten GeoFootprint to "[...]" and cut the document after it: without it the parser falls
    # back to the EWKT Footprint.
    with open(SINGLE_FIXTURE, encoding="utf-8") as stream:
        text = re.sub(r',\s*"GeoFootprint":.*\Z', "\n}", stream.read(), flags=re.S)
    footprint = cdse.parse_product(json.loads(text))
    assert footprint.id == "02807be7-482e-460e-8a29-7e4ab2320758"
    assert (footprint.platform, footprint.level, footprint.tile_id, footprint.relative_orbit) == \
        ("S2B", "L1C", "40XFF", 135)  # no Attributes in this answer: taken from the name
    assert footprint.checksum == "MD5:3b44d7346a9e8c2e59487f8a9cb86a3f" and footprint.size_bytes == 28102178
    assert footprint.cloud_cover is None
    assert footprint.geometry["type"] == "Polygon"
    assert footprint.geometry["coordinates"][0][0] == pytest.approx([62.65582103662547, 71.92607834342967])
    assert len(footprint.geometry["coordinates"][0]) == 7


def test_unknown_size_and_missing_checksums():
    with open(SEARCH_FIXTURE, encoding="utf-8") as stream:
        product = copy.deepcopy(json.load(stream)["value"][0])
    product["ContentLength"] = 0
    product["Checksum"] = [c for c in product["Checksum"] if c["Algorithm"] == "BLAKE3"]
    footprint = cdse.parse_product(product, download_root="http://mirror.example/odata/v1/")
    assert footprint.size_bytes is None
    assert footprint.checksum == "BLAKE3:2f787caed527ffeb3245594a465abd127da5ee7eaeb974f9a9ab4342f2fba7cf"
    assert footprint.download_url == f"http://mirror.example/odata/v1/Products({product['Id']})/$value"
    product["Checksum"] = []
    assert cdse.parse_product(product).checksum == ""


def test_blake3_is_preferred_when_the_package_can_check_it(without_blake3, monkeypatch):
    with open(SEARCH_FIXTURE, encoding="utf-8") as stream:
        product = json.load(stream)["value"][0]
    listed = {c["Algorithm"]: c["Value"] for c in product["Checksum"]}
    assert cdse.parse_product(product).checksum == "MD5:" + listed["MD5"]
    monkeypatch.delitem(sys.modules, "blake3")
    assert cdse.parse_product(product).checksum == "BLAKE3:" + listed["BLAKE3"]


def test_replays_the_real_response_and_stops_at_max_results(http_server):
    route = http_server.route("/odata/v1/Products", file=SEARCH_FIXTURE, headers={"Content-Type": "application/json"})
    query = Query(dt.datetime(2020, 8, 8, tzinfo=UTC), dt.datetime(2020, 8, 16, tzinfo=UTC), max_results=2)
    results, _, _ = run(http_server.url("/odata/v1"), query)
    assert [f.name[:60] for f in results] == [
        "S2A_MSIL1C_20200808T010311_N0500_R045_T54PXA_20230413T212505",
        "S2A_MSIL1C_20200808T010311_N0500_R045_T55PBR_20230413T212505"]
    # The fixture's nextLink points at the real service: with MAX_RESULTS reached it must not be followed.
    # Then one $count request says how many match: the fixture (an answer without $count) has no number.
    requests = http_server.requests_to(route.path)
    assert [(r.query["$top"], r.query.get("$count")) for r in requests] == [("2", None), ("1", "True")]
    assert (results.capped, results.matched) == (True, None)


def test_download_url_follows_the_environment(replica_server, monkeypatch):
    server = replica_server(products_for(2, tiles=TILES[:1]))
    monkeypatch.setenv("SENTINEL2_CDSE_DOWNLOAD_URL", "http://127.0.0.1:9/mirror/odata/v1")
    results, _, _ = run(server, period_query())
    assert len(results) == 2
    assert all(f.download_url == f"http://127.0.0.1:9/mirror/odata/v1/Products({f.id})/$value" for f in results)


# ---- the request ---------------------------------------------------------------------------------------

def test_full_query_sends_this_exact_filter(replica_server):
    server = replica_server(products_for(30, tiles=("31TCJ", "30TYP", "31TCH", "30TYN"), levels=("L1C", "L2A")))
    query = Query(start=dt.datetime(2022, 1, 3, 12, 0, 0, 123456, tzinfo=UTC), end=dt.date(2022, 1, 20), level="L2A",
                  aoi=[[(0.5, 43.5), (1.0, 43.5), (1.0, 43.8), (0.5, 43.8), (0.5, 43.5)]],
                  max_cloud=60, platform="S2B", relative_orbit=45, tiles=("T31TCJ", "30typ"))
    results, lines, _ = run(server, query)
    sent = dict(server.raw_queries[0])
    assert sent["$filter"] == (
        "Collection/Name eq 'SENTINEL-2' "
        "and ContentDate/Start ge 2022-01-03T12:00:00.123Z "
        "and ContentDate/Start le 2022-01-20T00:00:00.000Z "
        "and OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((0.500000 43.500000,1.000000 43.500000,"
        "1.000000 43.800000,0.500000 43.800000,0.500000 43.500000))') "
        "and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and "
        "att/OData.CSC.StringAttribute/Value eq 'S2MSI2A') "
        "and Attributes/OData.CSC.DoubleAttribute/any(att:att/Name eq 'cloudCover' and "
        "att/OData.CSC.DoubleAttribute/Value le 60.0) "
        "and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'platformSerialIdentifier' and "
        "att/OData.CSC.StringAttribute/Value eq 'B') "
        "and Attributes/OData.CSC.IntegerAttribute/any(att:att/Name eq 'relativeOrbitNumber' and "
        "att/OData.CSC.IntegerAttribute/Value eq 45) "
        "and (Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'tileId' and "
        "att/OData.CSC.StringAttribute/Value eq '31TCJ') "
        "or Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'tileId' and "
        "att/OData.CSC.StringAttribute/Value eq '30TYP'))")
    assert [(k, v) for k, v in server.raw_queries[0] if k != "$filter"] == [
        ("$orderby", "ContentDate/Start asc"), ("$top", "1000"), ("$expand", "Attributes"), ("$expand", "Assets")]
    assert sent["$filter"] in lines[0]  # the log says what was sent, AOI included
    # The replica applied all of it: every result satisfies each filter, and some exist.
    assert results and all(f.level == "L2A" and f.platform == "S2B" and f.relative_orbit == 45
                           and f.cloud_cover <= 60 and f.tile_id in ("31TCJ", "30TYP") for f in results)


def test_odata_time_rounds_outwards():
    value = dt.datetime(2022, 5, 3, 23, 59, 59, 999500, tzinfo=UTC)
    assert cdse.odata_time(value) == "2022-05-03T23:59:59.999Z"
    assert cdse.odata_time(value, round_up=True) == "2022-05-04T00:00:00.000Z"
    assert cdse.odata_time(dt.datetime(2022, 5, 3, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == \
        "2022-05-03T00:00:00.000Z"


def test_many_tiles_are_split_into_several_requests(replica_server):
    server = replica_server(products_for(3, tiles=TILES))
    results, _, _ = run(server, period_query(tiles=TILES))
    assert len(results) == 90 and len({f.id for f in results}) == 90
    filters = [dict(pairs)["$filter"] for pairs in server.raw_queries]
    assert [f.count("'tileId'") for f in filters] == [20, 10]
    assert [f.sensing_start for f in results] == sorted(f.sensing_start for f in results)


def test_antimeridian_area_as_multipolygon(replica_server):
    server = replica_server(products_for(2, tiles=("01KAB", "01KBB", "60KYG", "60KXG", "31TCJ")))
    query = period_query(aoi=[[(179.6, -16.9), (180, -16.9), (180, -16.6), (179.6, -16.6), (179.6, -16.9)],
                              [(-180, -16.9), (-179.7, -16.9), (-179.7, -16.6), (-180, -16.6), (-180, -16.9)]])
    results, _, _ = run(server, query)
    assert "SRID=4326;MULTIPOLYGON(((179.600000 -16.900000," in dict(server.raw_queries[0])["$filter"]
    assert sorted({f.tile_id for f in results}) == ["01KAB", "01KBB", "60KYG"]
    assert {f.geometry["type"] for f in results if f.tile_id == "01KAB"} == {"MultiPolygon"}  # across 180°


# ---- paging ----------------------------------------------------------------------------------------------

def test_pages_to_the_end(replica_server):
    products = products_for(500)  # 10 tiles x 500 days
    server = replica_server(products)
    results, lines, reports = run(server, period_query())
    assert len(results) == 5000 and {f.id for f in results} == {p["Id"] for p in products}
    assert skips(server) == [0, 1000, 2000, 3000, 4000]
    assert [f.sensing_start for f in results] == sorted(f.sensing_start for f in results)
    assert sum(line.startswith("page ") for line in lines) == 5
    assert reports == sorted(reports) and reports[-1] == 1.0 and 0 < reports[0] < 0.5


@pytest.mark.parametrize("next_link_past_limit", [False, True], ids=["link-left-out", "link-given"])
def test_crosses_the_skip_limit_without_losing_or_repeating(replica_server, next_link_past_limit):
    products = products_for(400, tiles=TILES)  # 12,000 products, 30 sharing each sensing time
    server = replica_server(products, next_link_past_limit=next_link_past_limit)
    results, lines, _ = run(server, period_query())
    assert len(results) == 12_000 and {f.id for f in results} == {p["Id"] for p in products}
    assert max(skips(server)) == 10_000 and len(server.raw_queries) == 13  # 11 pages, then 2 from the restart
    last_seen = products[10_999]["ContentDate"]["Start"][:23] + "Z"  # of the 11,000 first, in sensing order
    restart = dict(server.raw_queries[11])
    assert f"ContentDate/Start ge {last_seen}" in restart["$filter"] and "$skip" not in restart
    assert any(f"continuing from {last_seen}" in line for line in lines)


def test_recovers_when_the_server_refuses_a_skip_with_422(replica_server):
    # A server whose limit is lower than documented answers 422 (the fixture's body) for a skip it refuses.
    products = products_for(250, tiles=TILES[:24])  # 6,000 products
    server = replica_server(products, skip_limit=2500, next_link_past_limit=True)
    results, lines, _ = run(server, period_query())
    assert len(results) == 6000 and {f.id for f in results} == {p["Id"] for p in products}
    assert 3000 in skips(server)  # asked, refused, recovered
    assert any("continuing from" in line for line in lines)


def test_replica_answers_the_fixture_422_body(replica_server):
    server = replica_server(products_for(1, tiles=TILES[:1]))
    response = session().get(server.odata_url + "/Products", params={"$skip": "10001"})
    with open(SKIP_422_FIXTURE, encoding="utf-8") as stream:
        assert response.status_code == 422 and response.json() == json.load(stream)


def test_too_many_products_at_one_instant_is_one_sentence(replica_server, monkeypatch):
    # Scaled down: pages of 4 and a server limit of 5, with 12 products sensed at one instant (one datatake).
    monkeypatch.setattr(cdse, "PAGE_SIZE", 4)
    server = replica_server(products_for(1, tiles=TILES[6:18]), skip_limit=5, next_link_past_limit=True)
    with pytest.raises(ServiceError) as error:
        run(server, period_query())
    assert "Copernicus Data Space holds more than" in str(error.value)
    assert_one_sentence(str(error.value))


def test_max_results_is_honoured(replica_server):
    products = products_for(500)
    server = replica_server(products)
    results, _, _ = run(server, period_query(max_results=2500))
    assert {f.id for f in results} == {p["Id"] for p in products[:2500]}  # the earliest ones
    assert skips(server) == [0, 1000, 2000]
    assert (results.capped, results.matched) == (True, 5000)  # 500 a day for ten days
    results, _, _ = run(server, period_query(max_results=300))
    assert len(results) == 300 and dict(server.raw_queries[-2])["$top"] == "300" and len(server.raw_queries) == 6
    assert dict(server.raw_queries[-1])["$count"] == "True" and results.matched == 5000
    complete, _, _ = run(server, period_query(max_results=6000))
    assert (complete.capped, complete.matched, len(complete)) == (False, None, 5000)


def test_cancel_between_pages(replica_server):
    server = replica_server(products_for(500))
    with pytest.raises(Cancelled):
        run(server, period_query(), is_cancelled=lambda: len(server.raw_queries) >= 2)
    assert len(server.raw_queries) == 2


# ---- client-side filtering ---------------------------------------------------------------------------------

def test_filters_a_server_ignores_are_applied_client_side(replica_server):
    products = products_for(40)
    server = replica_server(products, ignore={"platformSerialIdentifier", "relativeOrbitNumber"})
    results, _, _ = run(server, period_query(platform="S2B", relative_orbit=45))
    assert len(server.replica.served) == len(products)  # the server ignored both filters
    expected = [p["Name"] for p in products if p["Name"].startswith("S2B_") and "_R045_" in p["Name"]]
    assert expected and sorted(f.name for f in results) == sorted(expected)


def test_orbit_direction_is_applied_client_side(replica_server):
    server = replica_server(products_for(5))
    results, lines, _ = run(server, period_query(orbit_direction="ASCENDING"))
    assert results == [] and "orbitDirection" not in dict(server.raw_queries[0])["$filter"]
    assert any("ORBIT_DIRECTION is applied" in line for line in lines)
    results, _, _ = run(server, period_query(orbit_direction="DESCENDING"))
    assert len(results) == 50


def test_area_is_refined_client_side_with_the_exact_shape(replica_server):
    from osgeo import ogr

    server = replica_server(products_for(2, tiles=TILES))
    # An L-shaped area whose covering (convex) polygon meets tiles the area itself does not.
    area = ogr.CreateGeometryFromWkt("POLYGON((0.1 43.3,3.9 43.3,3.9 43.4,0.2 43.4,0.2 46.8,0.1 46.8,0.1 43.3))")
    results, _, _ = run(server, period_query(aoi_wkb=area.ExportToWkb()))
    served = set(server.replica.served)
    served_tiles = {p["Attributes"][1]["Value"] for p in odata_products(server) if p["Id"] in served}
    assert {f.tile_id for f in results} < served_tiles  # the client kept only what meets the area itself
    assert all(area.Intersects(ogr.CreateGeometryFromJson(json.dumps(f.geometry))) for f in results)


# ---- failures --------------------------------------------------------------------------------------------

def test_429_with_retry_after_then_success(replica_server):
    server = replica_server(products_for(150))
    server.products.fail(faults.status(429, retry_after=1))
    results, _, _ = run(server, period_query())
    assert len(results) == 1500
    first, second = server.requests_to(server.products.path)[:2]
    assert second.time - first.time >= 0.9  # Retry-After honoured


def test_503_then_success(replica_server):
    server = replica_server(products_for(150))
    server.products.fail(faults.status(503), faults.drop())
    results, _, _ = run(server, period_query())
    assert len(results) == 1500 and len(server.requests_to(server.products.path)) == 4


def test_5xx_after_retries_is_one_sentence(replica_server):
    server = replica_server(products_for(1))
    server.products.fail(*[faults.status(503)] * 10)
    with pytest.raises(ServiceError) as error:
        run(server, period_query())
    message = str(error.value)
    assert message.startswith("Copernicus Data Space (127.0.0.1) is unavailable (HTTP 503")
    assert_one_sentence(message)


def test_malformed_json_is_one_sentence(replica_server):
    server = replica_server(products_for(1))
    server.products.fail(faults.status(200, body=b"<html><body>Maintenance</body></html>"))
    with pytest.raises(ServiceError) as error:
        run(server, period_query())
    assert "Copernicus Data Space (127.0.0.1) answered something that is not JSON" in str(error.value)
    assert_one_sentence(str(error.value))


def test_json_without_products_is_one_sentence(http_server):
    http_server.route("/odata/v1/Products", b'{"detail": "Not Found"}', headers={"Content-Type": "application/json"})
    with pytest.raises(ServiceError) as error:
        run(http_server.url("/odata/v1"), period_query())
    assert "answered JSON without a product list" in str(error.value)
    assert_one_sentence(str(error.value))


def test_unreachable_url_names_the_service():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceError) as error:
        run(f"http://127.0.0.1:{port}/odata/v1", period_query())
    assert str(error.value) == ("Copernicus Data Space (127.0.0.1) refused the connection; check the URL or "
                                "try again later.")


def test_sends_the_plugin_user_agent(replica_server):
    server = replica_server(products_for(1))
    run(server, period_query())
    agent = server.requests_to(server.products.path)[0].headers["User-Agent"]
    assert "sentinel2_pipeline" in agent and plugin_version() in agent


def test_works_without_a_session(replica_server):
    server = replica_server(products_for(3))
    results, _, _ = run(server, period_query(), session=None)
    assert len(results) == 30

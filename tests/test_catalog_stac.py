"""The STAC catalogues (Earth Search, CDSE STAC, GEODES) against the local replica and the real fixture items."""

import copy
import dataclasses
import datetime as dt
import json
import os
import time

import pytest
from replicas import stac as replica
from servers import faults, http_server  # noqa: F401 (the fixture is used by name)

from sentinel2_pipeline.plugin.engine import http
from sentinel2_pipeline.plugin.engine.catalogs import Credentials, stac
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ServiceError
from sentinel2_pipeline.plugin.engine.query import Query

FIXTURES = replica.FIXTURES
UTC = dt.timezone.utc
START, END = dt.datetime(2023, 5, 1, tzinfo=UTC), dt.datetime(2023, 9, 1, tzinfo=UTC)


def fixture_item(name):
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing (../shared/fixtures holds the real responses)")
    with open(path, encoding="utf-8") as stream:
        data = json.load(stream)
    return data["features"][0] if "features" in data else data


@pytest.fixture
def session():
    """Retries POST like the search algorithm's session, with tiny waits."""
    made = http.new_session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"}, backoff=0.01, timeout=5)
    yield made
    made.close()


class Run:
    """One search with its log lines."""

    def __init__(self, server, session, catalog, root="/v1"):
        self.url, self.session, self.catalog, self.lines = server.url(root), session, catalog, []

    def __call__(self, query, credentials=None, is_cancelled=lambda: False, **kwargs):
        return stac.search(query, self.url, credentials, self.session, lambda f, m="": None, is_cancelled,
                           self.lines.append, catalog=self.catalog, **kwargs)


def serve(server, items, **options):
    rep = replica.StacReplica(items, **options)
    return rep, rep.install(server)


def bodies(server):
    return [json.loads(r.body) for r in server.requests_to("/v1/search", "POST")]


# ---- real items -------------------------------------------------------------------------------------------

def test_earth_search_l1c_fixture_item_maps_to_the_schema():
    item = fixture_item("earthsearch_v1_search_sentinel-2-l1c.json")
    footprint = stac.item_footprint(copy.deepcopy(item), "earth-search", "L1C")
    assert footprint.id == "S2B_27VWK_20240206_0_L1C"
    assert footprint.name == "S2B_MSIL1C_20240206T131259_N0510_R081_T27VWK_20240206T133903.SAFE"
    assert (footprint.platform, footprint.level, footprint.tile_id) == ("S2B", "L1C", "27VWK")
    assert footprint.relative_orbit == 81  # only in the product name at Earth Search
    assert footprint.cloud_cover == pytest.approx(9.93604802923519)
    assert footprint.sensing_start == dt.datetime(2024, 2, 6, 13, 14, 11, 918000, tzinfo=UTC)
    assert footprint.geometry == item["geometry"]  # untouched, vertex for vertex
    assert footprint.download_url.endswith("/collections/sentinel-2-l1c/items/S2B_27VWK_20240206_0_L1C")
    assert (footprint.checksum, footprint.size_bytes, footprint.online) == ("", None, True)
    assert footprint.extra["assets"]["red"] == "s3://sentinel-s2-l1c/tiles/27/V/WK/2024/2/6/0/B04.jp2"
    # the https thumbnail link, not the requester-pays s3:// asset
    assert footprint.extra["quicklook"].startswith("https://earth-search.aws.element84.com/")


def test_earth_search_l2a_fixture_item_maps_to_the_schema():
    item = fixture_item("earthsearch_v1_sentinel-2-l2a_item_S2A_39QTA_20230628_0_L2A."
                        "CONVERTED_from_python_literal.json")
    footprint = stac.item_footprint(item, "earth-search")
    assert (footprint.id, footprint.platform, footprint.level, footprint.tile_id) == (
        "S2A_39QTA_20230628_0_L2A", "S2A", "L2A", "39QTA")
    assert footprint.name.startswith("S2A_MSIL2A_20230628T070631_N0509_R106_T39QTA")
    assert footprint.relative_orbit == 106 and footprint.cloud_cover == pytest.approx(4.025136)
    assert footprint.extra["quicklook"].endswith("/thumbnail.jpg")
    assert len(footprint.extra["assets"]) == len(item["assets"])


def test_geodes_fixture_item_maps_online_checksum_and_size():
    item = fixture_item("geodes_stac_search_PEPS_S2_L1C.json")
    footprint = stac.item_footprint(item, "geodes", "L1C")
    assert footprint.id == "URN:FEATURE:DATA:gdh:25416e3f-1a7f-379a-9b65-a6539b1fd95b:V1"
    assert footprint.name == "S2A_MSIL1C_20250402T175741_N0511_R141_T14ULD_20250403T022035"
    assert (footprint.platform, footprint.tile_id, footprint.relative_orbit) == ("S2A", "14ULD", 141)
    assert footprint.orbit_direction == "DESCENDING"
    assert footprint.sensing_start == dt.datetime(2025, 4, 2, 17, 57, 41, 24000, tzinfo=UTC)  # not publication
    assert footprint.online is False  # "Is online: false": on tape
    assert footprint.checksum == "MD5:86f828c4c7e921615d1cd0476604f780"
    assert footprint.size_bytes == 764210185
    assert footprint.download_url == ("https://geodes-portal.cnes.fr/api/download/URN:FEATURE:DATA:gdh:"
                                      "25416e3f-1a7f-379a-9b65-a6539b1fd95b:V1/files/86f828c4c7e921615d1cd0476604f780")
    assert "/api/quicklook/" in footprint.extra["quicklook"]
    assert footprint.geometry == item["geometry"]


def service_fixture(name):
    with open(os.path.join(replica.SERVICE_FIXTURES, name), encoding="utf-8") as stream:
        return json.load(stream)


def test_real_theia_items_give_the_versioned_product_name_and_the_acquisition_time():
    items = service_fixture("geodes_theia_l2a_items_T31TCH_202001.json")["features"]
    footprints = [stac.item_footprint(item, "geodes", "L2A") for item in items]
    # identifier says '..._T31TCH_C'; the product (folder, zip) is '..._T31TCH_C_V4-0'
    assert [f.name for f in footprints] == ["SENTINEL2B_20200106-105907-758_L2A_T31TCH_C_V4-0",
                                            "SENTINEL2A_20200108-104910-179_L2A_T31TCH_C_V4-0",
                                            "SENTINEL2A_20200118-104909-598_L2A_T31TCH_C_V4-0"]
    first = footprints[0]
    assert first.sensing_start == dt.datetime(2020, 1, 6, 10, 59, 7, 758000, tzinfo=UTC)  # not 2025's publication
    assert (first.platform, first.tile_id, first.relative_orbit, first.level) == ("S2B", "31TCH", 51, "L2A")
    assert [f.relative_orbit for f in footprints] == [51, 8, 8] and [f.cloud_cover for f in footprints] == [0, 26, 84]
    assert first.online is True and first.size_bytes == 2156675448
    assert first.checksum == "MD5:a18fe21fae17a026b81c8e4e5fd3af48"
    assert first.download_url.endswith("/files/a18fe21fae17a026b81c8e4e5fd3af48")
    assert "/api/quicklook/" in first.extra["quicklook"]


def test_real_theia_names_let_maja_keep_the_newest_version_of_a_date():
    from sentinel2_pipeline.plugin.engine import maja

    item = service_fixture("geodes_theia_l2a_items_T31TCH_202001.json")["features"][0]
    older = json.loads(json.dumps(item).replace("_C_V4-0", "_C_V3-1").replace(item["id"], "URN:older"))
    kept = maja._newest_versions([stac.item_footprint(i, "geodes", "L2A") for i in (older, item)], lambda _: None)
    assert [f.name for f in kept] == ["SENTINEL2B_20200106-105907-758_L2A_T31TCH_C_V4-0"]


@pytest.mark.parametrize("name, level, tile, orbit, md5", [
    ("S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440", "L2A", "13VEK", 27,
     "3ae2f90d5e19911094dafdc192fe86ad"),
    ("S2A_MSIL1C_20240116T000741_N0510_R130_T51CVP_20240116T010505", "L1C", "51CVP", 130,
     "9cd16654f41f4f7161ed82dd6a72b9b8"),
])
def test_real_cdse_stac_items_map_to_the_schema(name, level, tile, orbit, md5):
    item = service_fixture(f"cdse_stac_item_{name}.json")
    for given in (level, ""):  # the collection's level, or the item's own fields ('L2', 'S2MSI2A')
        footprint = stac.item_footprint(item, "cdse-stac", given)
        assert (footprint.name, footprint.level, footprint.tile_id) == (name, level, tile)
        assert (footprint.platform, footprint.relative_orbit, footprint.orbit_direction) == ("S2A", orbit,
                                                                                             "DESCENDING")
        # 'd50110' + 32 hex digits: a multihash of MD5 (code 0xd5, 16 bytes)
        assert footprint.checksum == f"MD5:{md5}"
        assert footprint.size_bytes == item["assets"]["Product"]["file:size"]
        assert footprint.download_url == item["assets"]["Product"]["href"]
        assert footprint.cloud_cover == item["properties"]["eo:cloud_cover"]


def test_checksum_is_kept_only_for_a_whole_product_asset():
    item = replica.earth_search_item(replica.products(1, level="L2A")[0], "sentinel-2-c1-l2a")
    sha = "1220" + "ab" * 32
    for asset in item["assets"].values():  # c1-l2a: every band has a checksum and a size
        asset.update({"file:checksum": sha, "file:size": 1000})
    footprint = stac.item_footprint(item, "earth-search")
    assert footprint.checksum == ""  # a band's checksum cannot verify a product download
    assert footprint.size_bytes == 1000 * len(item["assets"])
    item["assets"]["product"] = {"href": "https://example.test/p.zip", "type": "application/zip",
                                 "file:checksum": sha, "file:size": 12345}
    footprint = stac.item_footprint(item, "earth-search")
    assert (footprint.checksum, footprint.size_bytes) == ("SHA256:" + "ab" * 32, 12345)
    assert footprint.download_url == "https://example.test/p.zip"


# ---- requests -----------------------------------------------------------------------------------------------

def test_earth_search_body_carries_area_dates_and_query_filters(http_server, session):
    serve(http_server, [replica.earth_search_item(p) for p in replica.products(12)])
    ring = [(1.0, 43.0), (2.0, 43.0), (2.0, 44.0), (1.0, 44.0), (1.0, 43.0)]
    query = Query(START, END, level="L1C", aoi=[ring], max_cloud=40, platform="S2B", tiles=("31TCJ", "T31TDJ"))
    search = Run(http_server, session, "earth-search")
    search(query)
    body, second = bodies(http_server)  # one search per tile: the query extension's "in" is not universal
    assert body["collections"] == ["sentinel-2-l1c"]
    assert body["intersects"] == query.aoi_geojson()
    assert body["datetime"] == "2023-05-01T00:00:00Z/2023-09-01T00:00:00Z"
    assert body["query"] == {"eo:cloud_cover": {"lte": 40}, "platform": {"eq": "sentinel-2b"},
                             "grid:code": {"eq": "MGRS-31TCJ"}}
    assert second["query"]["grid:code"] == {"eq": "MGRS-31TDJ"}
    assert body["limit"] <= 500
    assert sum("POST" in line and '"intersects"' in line for line in search.lines) == 1


@pytest.mark.parametrize("merge", [False, True])
def test_paging_follows_post_next_links_to_the_end(http_server, session, merge):
    items = [replica.earth_search_item(p) for p in replica.products(60)]
    serve(http_server, items, next_method="POST", merge=merge)
    results = Run(http_server, session, "earth-search")(Query(START, END, max_cloud=100), page_size=25)
    assert sorted(f.id for f in results) == sorted(item["id"] for item in items)
    sent = bodies(http_server)
    assert len(sent) == 3 and "next" not in sent[0]
    assert all(b["query"] == sent[0]["query"] and b["datetime"] == sent[0]["datetime"] for b in sent[1:])
    assert sent[1]["next"] != sent[2]["next"]


def test_paging_follows_get_next_links_to_the_end(http_server, session):
    items = [replica.earth_search_item(p) for p in replica.products(60)]
    serve(http_server, items, next_method="GET")
    results = Run(http_server, session, "earth-search")(Query(START, END), page_size=25)
    assert len(results) == 60 and len({f.name for f in results}) == 60
    gets = http_server.requests_to("/v1/search", "GET")
    assert len(bodies(http_server)) == 1 and len(gets) == 2
    assert all("next" in r.query for r in gets)


def test_geodes_pages_with_page_and_limit_80(http_server, session):
    items = [replica.geodes_item(p) for p in replica.products(200)]
    serve(http_server, items, flavour="geodes")
    search = Run(http_server, session, "geodes")
    results = search(Query(START, END), credentials=Credentials(api_key="secret-key"))
    assert len(results) == 200
    sent = bodies(http_server)
    assert [b["page"] for b in sent] == [1, 2, 3] and {b["limit"] for b in sent} == {80}
    assert sent[0]["collections"] == ["PEPS_S2_L1C"]
    assert sent[0]["query"]["start_datetime"] == {"lte": "2023-09-01T00:00:00Z"}
    assert not http_server.requests_to("/v1/collections/PEPS_S2_L1C/items")  # its next link drops the filters
    assert {r.headers["X-API-Key"] for r in http_server.requests} == {"secret-key"}
    assert not any("secret-key" in line for line in search.lines)


def test_geodes_searches_each_tile_and_maps_online_state(http_server, session):
    items = [replica.geodes_item(p) for p in replica.products(30)]
    serve(http_server, items, flavour="geodes")
    results = Run(http_server, session, "geodes")(Query(START, END, tiles=("31TCJ", "31UDP")))
    assert [b["query"]["grid:code"] for b in bodies(http_server)] == [{"contains": "31TCJ"}, {"contains": "31UDP"}]
    assert len(results) == 20 and {f.tile_id for f in results} == {"31TCJ", "31UDP"}
    assert {f.online for f in results} == {True, False}
    assert all(f.checksum.startswith("MD5:") and f.size_bytes for f in results)
    assert "X-API-Key" not in http_server.requests[0].headers  # no key: none sent, search works anonymously


def test_l2a_products_in_both_earth_search_collections_are_kept_once(http_server, session):
    both = replica.products(20, level="L2A")
    c1 = [replica.earth_search_item(p, "sentinel-2-c1-l2a") for p in both[:15]]
    old = [replica.earth_search_item(p, "sentinel-2-l2a") for p in both]
    serve(http_server, c1 + old)
    results = Run(http_server, session, "earth-search")(Query(START, END, level="L2A"))
    assert [b["collections"] for b in bodies(http_server)] == [["sentinel-2-c1-l2a"], ["sentinel-2-l2a"]]
    assert len(results) == 20
    by_name = {f.name: f for f in results}
    assert all(by_name[p.name + ".SAFE"].id.startswith(f"{p.platform}_T") for p in both[:15])  # c1 wins
    assert [f.sensing_start for f in results] == sorted(f.sensing_start for f in results)


def test_filters_the_service_ignores_are_applied_here(http_server, session):
    items = [replica.earth_search_item(p) for p in replica.products(40)]
    serve(http_server, items, ignore_query=True)
    orbit = replica.products(40)[3].orbit
    query = Query(START, END, max_cloud=50, relative_orbit=orbit, orbit_direction="DESCENDING")
    search = Run(http_server, session, "earth-search")
    results = search(query)
    expected = [p for p in replica.products(40) if p.cloud <= 50 and p.orbit == orbit]
    assert expected and sorted(f.name for f in results) == sorted(p.name + ".SAFE" for p in expected)
    assert any("ORBIT_DIRECTION" in line for line in search.lines)


def test_max_results_stops_paging(http_server, session):
    serve(http_server, [replica.earth_search_item(p) for p in replica.products(60)])
    results = Run(http_server, session, "earth-search")(Query(START, END, max_results=10), page_size=25)
    assert len(bodies(http_server)) == 1 and len(results) >= 10
    assert (results.capped, results.matched) == (True, 60)  # numberMatched of the first page
    everything = Run(http_server, session, "earth-search")(Query(START, END), page_size=25)
    assert len(everything) == 60 and not everything.capped


def test_cdse_sends_cql2_and_splits_the_period_past_the_page_cap(http_server, session, monkeypatch):
    capped = dataclasses.replace(stac.CATALOGUES["cdse-stac"], window_cap=40)
    monkeypatch.setitem(stac.CATALOGUES, "cdse-stac", capped)
    items = [replica.cdse_item(p) for p in replica.products(100)]
    serve(http_server, items, flavour="cdse-stac", window_cap=40)
    search = Run(http_server, session, "cdse-stac")
    results = search(Query(START, END, max_cloud=100, platform="S2A", relative_orbit=None), page_size=10)
    assert sorted(f.id for f in results) == sorted(i["id"] for i in items if i["properties"]["platform"] ==
                                                   "sentinel-2a")
    sent = bodies(http_server)
    assert sent[0]["filter-lang"] == "cql2-json" and "query" not in sent[0]
    assert sent[0]["filter"]["op"] == "and"
    assert len({b["datetime"] for b in sent}) > 1  # the period was split
    assert all((b.get("page", 1) - 1) * b["limit"] <= 40 for b in sent)
    assert len(http_server.requests_to("/v1/")) == 1
    assert all(f.checksum.startswith("MD5:") and f.online is None for f in results)


def test_cdse_window_too_short_to_split_stops_at_the_cap_and_says_so(http_server, session, monkeypatch):
    monkeypatch.setitem(stac.CATALOGUES, "cdse-stac", dataclasses.replace(stac.CATALOGUES["cdse-stac"],
                                                                          window_cap=40))
    burst = replica.products(200, step=dt.timedelta(milliseconds=50))  # 200 products within 10 s
    serve(http_server, [replica.cdse_item(p) for p in burst], flavour="cdse-stac", window_cap=40)
    search = Run(http_server, session, "cdse-stac")
    results = search(Query(START, END), page_size=10)
    assert 50 <= len(results) <= 100  # at most two windows under a minute, each cut after 5 pages
    assert all(r.path == "/v1/" or json.loads(r.body).get("page", 1) <= 5 for r in http_server.requests)
    assert any("stopped at the service's limit of 40" in line for line in search.lines)


def test_cdse_falls_back_to_the_query_extension(http_server, session):
    serve(http_server, [replica.cdse_item(p) for p in replica.products(10)], flavour="cdse-stac",
          conformance=replica.CONFORMANCE["earth-search"])
    orbit = replica.products(10)[2].orbit
    results = Run(http_server, session, "cdse-stac")(Query(START, END, relative_orbit=orbit,
                                                           orbit_direction="DESCENDING"))
    (body,) = bodies(http_server)
    assert body["query"] == {"sat:relative_orbit": {"eq": orbit}, "sat:orbit_state": {"eq": "descending"}}
    assert [f.relative_orbit for f in results] == [orbit]


# ---- failures -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, key, says", [(401, None, "needs the GEODES API key"),
                                               (403, "revoked", "needs a valid GEODES API key")])
def test_geodes_refusal_says_auth_needs_the_api_key(http_server, session, status, key, says):
    _, routes = serve(http_server, [], flavour="geodes")
    routes["search"].fail(faults.status(status, body=b'{"detail": "Unauthorized"}'))
    with pytest.raises(ServiceError) as error:
        Run(http_server, session, "geodes")(Query(START, END), credentials=Credentials(api_key=key))
    message = str(error.value)
    assert message.startswith("GEODES (127.0.0.1)") and f"HTTP {status}" in message
    assert "authentication configuration (AUTH)" in message and says in message
    assert "revoked" not in message


def test_malformed_json_is_one_sentence_naming_the_service(http_server, session):
    _, routes = serve(http_server, [])
    routes["search"].fail(faults.status(200, body=b'{"type": "FeatureCollection", "feat',
                                        headers={"Content-Type": "application/geo+json"}))
    with pytest.raises(ServiceError, match=r"^Earth Search \(127\.0\.0\.1\) answered .* not a STAC search result"):
        Run(http_server, session, "earth-search")(Query(START, END))


def test_429_with_retry_after_is_waited_out(http_server, session):
    _, routes = serve(http_server, [replica.earth_search_item(p) for p in replica.products(5)])
    routes["search"].fail(faults.status(429, retry_after=1))
    began = time.monotonic()
    results = Run(http_server, session, "earth-search")(Query(START, END))
    assert len(results) == 5 and len(bodies(http_server)) == 2
    assert time.monotonic() - began >= 0.9


def test_5xx_that_persists_names_the_catalogue(http_server):
    _, routes = serve(http_server, [])
    routes["search"].fail(*[faults.status(503)] * 3)
    one_retry = http.new_session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"}, retries=1, backoff=0.01)
    with one_retry, pytest.raises(ServiceError, match=r"^CDSE STAC \(127\.0\.0\.1\) is unavailable"):
        Run(http_server, one_retry, "cdse-stac")(Query(START, END))


def test_cancel_stops_between_pages(http_server, session):
    serve(http_server, [replica.earth_search_item(p) for p in replica.products(60)])
    with pytest.raises(Cancelled):
        Run(http_server, session, "earth-search")(Query(START, END), page_size=25,
                                                  is_cancelled=lambda: len(http_server.requests) >= 1)
    assert len(http_server.requests) == 1


# ---- the replica itself -------------------------------------------------------------------------------------

def test_replica_runs_without_shared_fixtures(http_server, session, monkeypatch):
    monkeypatch.setattr(replica, "FIXTURES", "/nonexistent")  # as in the demo, without ../shared
    items = [replica.earth_search_item(p) for p in replica.products(6)]
    serve(http_server, items)
    results = Run(http_server, session, "earth-search")(Query(START, END))
    assert [f.name for f in results] == [p.name + ".SAFE" for p in replica.products(6)]
    assert all(f.download_url.startswith(http_server.url("/v1/collections/sentinel-2-l1c/items/")) for f in results)


@pytest.mark.parametrize("kind, name", [
    ("earth-search-l1c", "earthsearch_v1_search_sentinel-2-l1c.json"),
    ("geodes", "geodes_stac_search_PEPS_S2_L1C.json"),
])
def test_embedded_templates_use_the_real_items_keys(kind, name):
    real, embedded = fixture_item(name), replica.EMBEDDED[kind]
    assert set(embedded["properties"]) <= set(real["properties"])
    for key in ("id", "geometry", "links", "assets", "bbox", "collection"):
        assert type(embedded[key]) is type(real[key])
    real_shapes = {(a.get("type"), tuple(a.get("roles", []))) for a in real["assets"].values()}
    assert {(a.get("type"), tuple(a.get("roles", []))) for a in embedded["assets"].values()} <= real_shapes

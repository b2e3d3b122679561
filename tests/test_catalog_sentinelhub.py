"""The ``sentinelhub`` catalogue: the real sentinelhub-py against a local Sentinel Hub replica
(tests/replicas/sentinelhub.py): OAuth client credentials, Catalog search with ``next`` paging."""

import datetime as dt
import os
import socket
import subprocess
import sys

import pytest
from conftest import PLUGIN_PATH
from replicas.sentinelhub import SentinelHubReplica, feature, fixture_feature, generate
from servers import faults, http_proxy, http_server  # noqa: F401 (fixtures are used by name)

from sentinel2_pipeline.plugin.engine import http
from sentinel2_pipeline.plugin.engine.catalogs import Credentials, sentinelhub
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, ServiceError
from sentinel2_pipeline.plugin.engine.query import Query

CLIENT = Credentials("client-1", "s3cret")
START = dt.datetime(2023, 6, 1, tzinfo=dt.timezone.utc)
TOULOUSE = "POLYGON((1.30 43.55,1.50 43.55,1.50 43.68,1.30 43.68,1.30 43.55))"  # in 31TCJ, far from 33UUP


@pytest.fixture(autouse=True)
def no_ambient_settings(monkeypatch):
    """Tests decide credentials, token URL and proxies: nothing from the environment."""
    for name in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SENTINEL2_SH_TOKEN_URL", "HTTP_PROXY", "http_proxy",
                 "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    # The replica speaks plain http on 127.0.0.1; oauthlib sends client secrets over http only when told to.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    # Logins are cached per token URL: a later test's server may get an earlier one's port.
    sentinelhub._LOGINS.clear()


@pytest.fixture
def session():
    session = http.new_session(backoff=0.01, retries=1, timeout=5)
    yield session
    session.close()


def run(query, url, credentials=CLIENT, session=None, is_cancelled=lambda: False):
    lines, fractions = [], []
    results = sentinelhub.search(query, url, credentials, session, lambda f, m="": fractions.append(f),
                                 is_cancelled, lines.append)
    return results, lines, fractions


def summer(**filters):
    filters.setdefault("level", "L2A")
    return Query(start=START, end=START + dt.timedelta(days=120), **filters)


def area(wkt):
    from osgeo import ogr

    return bytes(ogr.CreateGeometryFromWkt(wkt).ExportToWkb())


def test_the_real_cdse_feature_is_parsed_into_the_footprint_schema(http_server, session):
    real = fixture_feature()
    replica = SentinelHubReplica(http_server, [real])
    query = Query(start=dt.date(2021, 1, 1), end=dt.date(2021, 1, 31), level="L2A")

    results, _, _ = run(query, replica.url, session=session)

    assert len(results) == 1
    f = results[0]
    assert (f.id, f.name, f.provider) == (real["id"], real["id"], "sentinelhub")
    assert (f.platform, f.level, f.tile_id, f.relative_orbit) == ("S2A", "L2A", "39TWK", 49)
    assert f.sensing_start == dt.datetime(2021, 1, 25, 7, 37, 20, 296000, tzinfo=dt.timezone.utc)
    assert f.cloud_cover == 1.18 and f.orbit_direction == "DESCENDING"
    assert f.size_bytes is None and f.online is None and f.download_url == "" and f.checksum == ""
    assert f.geometry == {"type": "MultiPolygon", "coordinates": real["geometry"]["coordinates"]}
    assert f.extra == {"s3_href": real["assets"]["data"]["href"], "epsg": 32639}


def test_pages_follow_context_next_to_the_end(http_server, session):
    replica = SentinelHubReplica(http_server, generate(250, START + dt.timedelta(hours=1)))

    results, lines, fractions = run(summer(), replica.url, session=session)

    assert len(results) == 250 and len({f.id for f in results}) == 250
    assert [body.get("next") for body in replica.searches()] == [None, 100, 200]
    assert all(body["limit"] == 100 for body in replica.searches())
    assert len(http_server.requests_to(replica.token_path, "POST")) == 1  # one login for all pages
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any("250 products in 3 page(s)" in line for line in lines)


def test_time_area_and_cloud_cover_are_sent_and_every_filter_is_applied(http_server, session):
    day = START + dt.timedelta(days=3, hours=10)
    wanted = feature(f"S2A_MSIL2A_{day:%Y%m%dT%H%M%S}_N0509_R051_T31TCJ_{day:%Y%m%d}T235959", 10.0)
    decoys = [feature(f"S2B_MSIL2A_{day:%Y%m%dT%H%M%S}_N0509_R051_T31TCJ_{day:%Y%m%d}T235959", 10.0),
              feature(f"S2A_MSIL2A_{day:%Y%m%dT%H%M%S}_N0509_R052_T31TCJ_{day:%Y%m%d}T235959", 10.0),
              feature(f"S2A_MSIL2A_{day:%Y%m%dT%H%M%S}_N0509_R051_T31TCH_{day:%Y%m%d}T235959", 10.0),
              feature(f"S2A_MSIL2A_{day:%Y%m%dT%H%M%S}_N0509_R051_T33UUP_{day:%Y%m%d}T235959", 10.0),
              feature(f"S2A_MSIL2A_{day:%Y%m%dT%H%M%S}_N0509_R051_T31TCJ_{day:%Y%m%d}T235958", 30.5),
              feature(f"S2A_MSIL1C_{day:%Y%m%dT%H%M%S}_N0509_R051_T31TCJ_{day:%Y%m%d}T235959", 10.0)]
    replica = SentinelHubReplica(http_server, [wanted] + decoys)
    query = summer(aoi_wkb=area(TOULOUSE), max_cloud=30, platform="S2A", relative_orbit=51,
                   orbit_direction="DESCENDING", tiles=("31TCJ", "31TCH"))

    results, lines, _ = run(query, replica.url, session=session)

    body = replica.searches()[0]
    assert body["collections"] == ["sentinel-2-l2a"]
    assert body["datetime"] == "2023-06-01T00:00:00Z/2023-09-29T00:00:00Z"
    assert body["filter"] == "eo:cloud_cover <= 30" and body["filter-lang"] == "cql2-text"
    assert body["intersects"]["type"] == "Polygon" and body["intersects"]["coordinates"][0][0] == [1.3, 43.55]
    # The replica applied time, collection and cloud cover; platform, orbit, tiles and area were the client's job
    # (the replica does not evaluate the area: 31TCH, next to 31TCJ, does not reach Toulouse).
    assert [f.id for f in results] == [wanted["id"]]
    assert any("5 products in 1 page(s); 4 did not meet every filter" in line for line in lines)


def test_ascending_orbits_find_nothing_as_sentinel2_images_on_descending_passes(http_server, session):
    replica = SentinelHubReplica(http_server, generate(5, START + dt.timedelta(hours=1)))
    assert run(summer(orbit_direction="ASCENDING"), replica.url, session=session)[0] == []
    assert len(run(summer(orbit_direction="DESCENDING"), replica.url, session=session)[0]) == 5


def test_max_results_is_the_page_size_and_stops_paging(http_server, session):
    replica = SentinelHubReplica(http_server, generate(250, START + dt.timedelta(hours=1)))

    results, _, _ = run(summer(max_results=50), replica.url, session=session)

    assert len(results) == 50 and (results.capped, results.matched) == (True, None)  # the API gives no total
    assert [(body["limit"], body.get("next")) for body in replica.searches()] == [(50, None)]


def test_cancel_stops_before_the_next_page(http_server, session):
    replica = SentinelHubReplica(http_server, generate(250, START + dt.timedelta(hours=1)))
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 100

    with pytest.raises(Cancelled):
        run(summer(), replica.url, session=session, is_cancelled=cancelled)
    assert len(replica.searches()) == 1  # cancelled after page one's 100 features, before asking for page two


def test_missing_credentials_name_auth(http_server, session):
    replica = SentinelHubReplica(http_server, [])
    with pytest.raises(ParameterError) as raised:
        run(summer(), replica.url, credentials=None, session=session)
    assert str(raised.value) == (
        "AUTH: the sentinelhub catalogue needs an OAuth client of the Sentinel Hub deployment: choose an "
        "authentication configuration (user name = client id, password = client secret) or set SH_CLIENT_ID and "
        "SH_CLIENT_SECRET.")
    assert http_server.requests == []


def test_client_from_sentinelhub_py_environment_variables(http_server, session, monkeypatch):
    replica = SentinelHubReplica(http_server, generate(3, START + dt.timedelta(hours=1)), clients={"env-id": "env-s"})
    monkeypatch.setenv("SH_CLIENT_ID", "env-id")
    monkeypatch.setenv("SH_CLIENT_SECRET", "env-s")

    assert len(run(summer(), replica.url, credentials=None, session=session)[0]) == 3
    assert set(replica.tokens.values()) == {"env-id"}


def test_bad_secret_is_one_sentence_about_auth(http_server, session):
    replica = SentinelHubReplica(http_server, generate(3, START))
    with pytest.raises(ParameterError) as raised:
        run(summer(), replica.url, credentials=Credentials("client-1", "not-the-secret"), session=session)
    message = str(raised.value)
    assert message.startswith("AUTH: Sentinel Hub (127.0.0.1) refused the OAuth client (unauthorized_client)")
    assert "not-the-secret" not in message and "\n" not in message and message.endswith(".")
    assert replica.searches() == []


def test_one_login_serves_later_searches_and_a_changed_secret_logs_in_again(http_server, session):
    replica = SentinelHubReplica(http_server, generate(3, START + dt.timedelta(hours=1)))

    def logins():
        return len(http_server.requests_to(replica.token_path, "POST"))

    run(summer(), replica.url, session=session)
    run(summer(), replica.url, session=session)
    assert logins() == 1 and len(replica.searches()) == 2

    with pytest.raises(ParameterError):  # not served by the cached login of the right secret
        run(summer(), replica.url, credentials=Credentials("client-1", "changed"), session=session)
    assert logins() == 2


def test_token_url_override_for_mirrors(http_server, session, monkeypatch):
    replica = SentinelHubReplica(http_server, generate(2, START + dt.timedelta(hours=1)), token_path="/idp/token")
    monkeypatch.setenv("SENTINEL2_SH_TOKEN_URL", replica.token_url)

    results, lines, _ = run(summer(), replica.url, session=session)

    assert len(results) == 2 and len(http_server.requests_to("/idp/token", "POST")) == 1
    assert any(f"token from {replica.token_url}" in line for line in lines)


@pytest.mark.parametrize("base,expected", [
    ("https://sh.dataspace.copernicus.eu", sentinelhub.CDSE_TOKEN_URL),
    ("https://services.sentinel-hub.com", sentinelhub.COMMERCIAL_TOKEN_URL),
    ("https://services-uswest2.sentinel-hub.com", sentinelhub.COMMERCIAL_TOKEN_URL),
    ("https://sh.example.org/mirror", "https://sh.example.org/mirror/auth/realms/main/protocol/openid-connect/token"),
])
def test_token_url_follows_the_deployment(base, expected):
    assert sentinelhub.token_url(base) == expected


def test_a_plain_http_token_url_is_refused_before_sending_the_secret(http_server, session, monkeypatch):
    replica = SentinelHubReplica(http_server, [])
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")
    with pytest.raises(ParameterError) as raised:
        run(summer(), replica.url, session=session)
    assert str(raised.value) == (f"URL: the token URL of Sentinel Hub (127.0.0.1), {replica.token_url}, is not "
                                 f"https; use the https address (or set SENTINEL2_SH_TOKEN_URL).")
    assert http_server.requests == []


def test_expired_or_refused_token_on_search_is_one_sentence(http_server, session):
    replica = SentinelHubReplica(http_server, generate(3, START + dt.timedelta(hours=1)))
    replica.search_route.fail(faults.status(403, body=b'{"error": {"status": 403, "reason": "Forbidden"}}',
                                            headers={"Content-Type": "application/json"}))
    with pytest.raises(ServiceError) as raised:
        run(summer(), replica.url, session=session)
    assert str(raised.value).startswith("Sentinel Hub (127.0.0.1) refused access (HTTP 403")


def test_unreachable_host_names_the_host(session):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceError) as raised:
        run(summer(), f"http://127.0.0.1:{port}", session=session)
    assert str(raised.value) == "Sentinel Hub (127.0.0.1) refused the connection; check the URL or try again later."


def test_server_error_after_retries_is_one_sentence(http_server, session):
    replica = SentinelHubReplica(http_server, generate(3, START))
    replica.search_route.fail(*[faults.status(503)] * 2)
    with pytest.raises(ServiceError) as raised:
        run(summer(), replica.url, session=session)
    assert str(raised.value).startswith("Sentinel Hub (127.0.0.1) is unavailable (HTTP 503")
    assert len(replica.searches()) == 2  # the session's policy (one retry) was handed to sentinelhub-py


def test_an_answer_that_is_not_catalog_json_names_the_url(http_server, session):
    replica = SentinelHubReplica(http_server, [])
    http_server.route("/api/v1/catalog/1.0.0/search", b"<html>portal</html>", method="POST",
                      headers={"Content-Type": "application/json"})
    with pytest.raises(ServiceError) as raised:
        run(summer(), replica.url, session=session)
    assert "did not answer with Catalog search results; check that URL is the base URL" in str(raised.value)


def test_sentinelhub_py_goes_through_the_qgis_proxy(http_server, http_proxy):  # noqa: F811
    replica = SentinelHubReplica(http_server, generate(2, START + dt.timedelta(hours=1)))
    qgis_like = http.new_session(proxies={"http": http_proxy.url}, backoff=0.01, retries=1, timeout=5)

    results, lines, _ = run(summer(), replica.url, session=qgis_like)

    assert len(results) == 2
    relayed = [r.url for r in http_proxy.requests]  # the sign-in and the search, both relayed
    assert any(url.endswith(replica.token_path) for url in relayed) and any("/search" in url for url in relayed)
    assert any("go through the QGIS proxy" in line for line in lines)
    qgis_like.close()


def test_sentinelhub_py_skips_the_qgis_proxy_for_no_proxy_hosts(http_server, http_proxy, monkeypatch):  # noqa: F811
    replica = SentinelHubReplica(http_server, generate(2, START + dt.timedelta(hours=1)))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the environment's proxy must not take over either
    qgis_like = http.new_session(proxies={"http": http_proxy.url, "no_proxy": "127.0.0.1"}, backoff=0.01,
                                 retries=1, timeout=5)

    results, _, _ = run(summer(), replica.url, session=qgis_like)

    assert len(results) == 2 and http_proxy.requests == []
    qgis_like.close()


def test_sentinelhub_py_without_a_qgis_proxy_follows_the_environment(http_server, http_proxy, monkeypatch):  # noqa: F811
    replica = SentinelHubReplica(http_server, generate(2, START + dt.timedelta(hours=1)))
    monkeypatch.setenv("HTTP_PROXY", http_proxy.url)
    plain = http.new_session(backoff=0.01, retries=1, timeout=5)

    results, _, _ = run(summer(), replica.url, session=plain)

    assert len(results) == 2 and any("/search" in r.url for r in http_proxy.requests)
    plain.close()


def test_missing_sentinelhub_is_one_sentence_with_the_install_command():
    script = f"""
import datetime, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "sentinelhub":
            raise ModuleNotFoundError("No module named 'sentinelhub'", name=name)
sys.meta_path.insert(0, Blocker())
sys.path.insert(0, {PLUGIN_PATH!r})
from sentinel2_pipeline.plugin.engine.catalogs import Credentials, search
from sentinel2_pipeline.plugin.engine.errors import MissingDependency
from sentinel2_pipeline.plugin.engine.query import Query
try:
    search("sentinelhub", Query(start=datetime.date(2023, 6, 1), end=datetime.date(2023, 6, 2)),
           "http://127.0.0.1:9", Credentials("id", "secret"))
except MissingDependency as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("The Python package 'sentinelhub' is needed for the sentinelhub catalogue but is "
                              "not installed")
    assert message.endswith("pip install --user --break-system-packages sentinelhub")

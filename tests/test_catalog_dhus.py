"""The ``dhus`` catalogue: the real sentinelsat searching a local DHuS replica (tests/replicas/dhus.py)."""

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys

import pytest
from conftest import PLUGIN_PATH
from replicas.dhus import DhusReplica, Product, generate, product_name
from servers import faults, http_proxy, http_server  # noqa: F401 (fixtures are used by name)

from sentinel2_pipeline.plugin.engine import http
from sentinel2_pipeline.plugin.engine.catalogs import Credentials, dhus
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, ServiceError
from sentinel2_pipeline.plugin.engine.query import Query

ALICE = Credentials("alice", "secret")
START = dt.datetime(2023, 6, 1, tzinfo=dt.timezone.utc)
# Around Toulouse: inside tile 31TCJ, far from 33UUP (Austria).
TOULOUSE = "POLYGON((1.30 43.55,1.50 43.55,1.50 43.68,1.30 43.68,1.30 43.55))"


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch, tmp_path):
    """Tests decide where credentials come from: none from the environment or a real ~/.netrc."""
    for name in ("DHUS_USER", "DHUS_PASSWORD", "DHUS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.fixture
def session():
    session = http.new_session(backoff=0.01, retries=1, timeout=5)
    yield session
    session.close()


def run(query, url, credentials=ALICE, session=None, is_cancelled=lambda: False):
    lines, fractions = [], []
    results = dhus.search(query, url, credentials, session, lambda f, m="": fractions.append(f), is_cancelled,
                          lines.append)
    return results, lines, fractions


def june(**filters):
    return Query(start=START, end=START + dt.timedelta(days=120), **filters)


def area(wkt):
    from osgeo import ogr

    return bytes(ogr.CreateGeometryFromWkt(wkt).ExportToWkb())


def q_of(request):
    return request.query["q"]


def test_results_are_parsed_into_the_footprint_schema(http_server, session):
    product = Product(name="S2B_MSIL1C_20230603T105619_N0509_R094_T31TCJ_20230603T113345", cloud=12.5,
                      size="799.87 MB")
    replica = DhusReplica(http_server, [product])

    results, lines, _ = run(june(), replica.url, session=session)

    assert len(results) == 1
    f = results[0]
    assert (f.id, f.name, f.provider) == (product.uuid, product.name, "dhus")
    assert (f.platform, f.level, f.tile_id, f.relative_orbit) == ("S2B", "L1C", "31TCJ", 94)
    assert f.orbit_direction == "DESCENDING" and f.cloud_cover == 12.5
    assert f.sensing_start == dt.datetime(2023, 6, 3, 10, 56, 19, 24000, tzinfo=dt.timezone.utc)
    assert f.size_bytes == 838_724_485  # 799.87 MiB: DHuS sizes are binary
    assert f.online is None and f.checksum == ""
    assert f.download_url == f"{replica.url}odata/v1/Products('{product.uuid}')/$value"
    assert f.extra["quicklook_url"].endswith("/Products('Quicklook')/$value")
    # The footprint is the catalogue's polygon, coordinate for coordinate.
    given = [float(v) for v in re.findall(r"-?\d+\.\d+", product.footprint)]
    assert f.geometry["type"] == "MultiPolygon"
    assert [v for point in f.geometry["coordinates"][0][0] for v in point] == given
    assert any("DHuS search at" in line and 'producttype:"S2MSI1C"' in line for line in lines)


def test_a_single_result_and_no_result_are_both_understood(http_server, session):
    # DHuS sends one entry as an object and leaves "entry" out when nothing matches.
    replica = DhusReplica(http_server, generate(1, START + dt.timedelta(days=1)))
    assert len(run(june(), replica.url, session=session)[0]) == 1
    replica.products = []
    assert run(june(), replica.url, session=session)[0] == []


def test_pages_of_100_to_the_end_in_sensing_order(http_server, session):
    replica = DhusReplica(http_server, generate(250, START + dt.timedelta(hours=1)))

    results, lines, fractions = run(june(), replica.url, session=session)

    assert len(results) == 250 and len({f.id for f in results}) == 250
    assert [f.sensing_start for f in results] == sorted(f.sensing_start for f in results)
    pages = [r.query for r in replica.searches() if r.query["rows"] != "0"]
    assert [(p["start"], p["rows"]) for p in pages] == [("0", "100"), ("100", "100"), ("200", "100")]
    assert all(p["orderby"] == "beginposition asc" for p in pages)
    assert fractions[-1] == 1.0
    assert any("250 products match; fetching 3 page(s)" in line for line in lines)


def test_filters_are_sent_in_dhus_query_language_and_applied(http_server, session):
    day = START + dt.timedelta(days=3, hours=10)
    wanted = [Product(product_name("S2A", "L1C", day, 15, "31TCJ"), cloud=10.0),
              Product(product_name("S2A", "L1C", day, 15, "31TCH"), cloud=30.0)]
    decoys = [Product(product_name("S2B", "L1C", day, 15, "31TCJ"), cloud=10.0),
              Product(product_name("S2A", "L2A", day, 15, "31TCJ"), cloud=10.0),
              Product(product_name("S2A", "L1C", day, 16, "31TCJ"), cloud=10.0),
              Product(product_name("S2A", "L1C", day, 15, "33UUP"), cloud=10.0),
              Product(product_name("S2A", "L1C", day, 15, "31TCJ"), cloud=30.5, uuid="cloudy"),
              Product(product_name("S2A", "L1C", day, 15, "31TCJ"), cloud=1.0, uuid="up", orbit_direction="ASCENDING"),
              Product(product_name("S2A", "L1C", START - dt.timedelta(days=1), 15, "31TCJ"), cloud=1.0)]
    replica = DhusReplica(http_server, wanted + decoys)
    query = june(level="L1C", max_cloud=30, platform="S2A", relative_orbit=15, orbit_direction="DESCENDING",
                 tiles=("31TCJ", "T31TCH"))

    results, _, _ = run(query, replica.url, session=session)

    q = q_of(replica.searches()[-1])
    for clause in ('producttype:"S2MSI1C"', 'platformname:"Sentinel-2"', 'cloudcoverpercentage:["0" TO "30"]',
                   'platformserialidentifier:"Sentinel-2A"', "relativeorbitnumber:15",
                   'orbitdirection:"DESCENDING"', "(filename:*_T31TCH_* OR filename:*_T31TCJ_*)",
                   'beginPosition:["2023-06-01T00:00:00Z" TO "2023-09-29T00:00:00Z"]'):
        assert clause in q
    assert {f.id for f in results} == {p.uuid for p in wanted}


def test_filters_dhus_ignores_are_applied_on_the_client(http_server, session):
    # A mirror that drops the filters (here: it answers every product whatever the query) must not leak them.
    day = START + dt.timedelta(days=3, hours=10)
    products = [Product(product_name("S2A", "L1C", day, 15, "31TCJ"), cloud=10.0),
                Product(product_name("S2B", "L1C", day, 15, "31TCJ"), cloud=10.0),
                Product(product_name("S2A", "L1C", day, 16, "31TCJ"), cloud=70.0)]
    replica = DhusReplica(http_server, products)
    everything = json.dumps({"feed": {"opensearch:totalResults": "3",
                                      "entry": [replica._entry(p) for p in products]}}).encode()
    http_server.route("/dhus/search", everything, headers={"Content-Type": "application/json"})

    results, lines, _ = run(june(max_cloud=30, platform="S2A", relative_orbit=15), replica.url, session=session)

    assert [f.id for f in results] == [products[0].uuid]
    assert any("2 products did not meet every filter" in line for line in lines)


def test_area_is_sent_and_checked_on_the_client(http_server, session):
    # The replica ignores the footprint clause and returns both tiles: only the client can drop 33UUP.
    products = generate(20, START + dt.timedelta(hours=1), tiles=("31TCJ", "33UUP"))
    replica = DhusReplica(http_server, products)

    results, lines, _ = run(june(aoi_wkb=area(TOULOUSE)), replica.url, session=session)

    assert 'footprint:"Intersects(POLYGON((1.300000 43.550000,' in q_of(replica.searches()[-1])
    assert len(results) == 10 and {f.tile_id for f in results} == {"31TCJ"}
    assert any("10 products did not meet every filter" in line for line in lines)


def test_area_in_two_parts_is_an_or_of_footprint_clauses(http_server, session):
    replica = DhusReplica(http_server, generate(2, START + dt.timedelta(hours=1), tiles=("01KAB",)))
    crossing = "POLYGON((179.5 -17.5,180.5 -17.5,180.5 -16.5,179.5 -16.5,179.5 -17.5))"

    run(june(aoi_wkb=area(crossing)), replica.url, session=session)

    q = q_of(replica.searches()[-1])
    assert re.search(r'\(footprint:"Intersects\(POLYGON\(\(.*\)\)\)" OR footprint:"Intersects\(POLYGON', q)


def test_max_results_stops_paging(http_server, session):
    replica = DhusReplica(http_server, generate(250, START + dt.timedelta(hours=1)))

    results, _, _ = run(june(max_results=120), replica.url, session=session)

    assert len(results) == 120 and (results.capped, results.matched) == (True, 250)
    assert [r.query["start"] for r in replica.searches() if r.query["rows"] != "0"] == ["0", "100"]


def test_cancel_between_pages(http_server, session):
    replica = DhusReplica(http_server, generate(250, START + dt.timedelta(hours=1)))
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        run(june(), replica.url, session=session, is_cancelled=cancelled)
    assert len([r for r in replica.searches() if r.query["rows"] != "0"]) == 1


def test_sentinelsat_runs_on_our_session_proxies_and_user_agent(http_server, http_proxy):  # noqa: F811
    replica = DhusReplica(http_server, generate(3, START + dt.timedelta(hours=1)))
    session = http.new_session(proxies={"http": http_proxy.url}, backoff=0.01, retries=1, timeout=5)

    results, _, _ = run(june(), replica.url, session=session)

    assert len(results) == 3
    assert any("/dhus/search" in r.url for r in http_proxy.requests)
    agent = replica.searches()[-1].headers["User-Agent"]
    assert agent.startswith("QGIS-sentinel2_pipeline/") and "sentinelsat/" in agent
    assert session.auth is None  # the password stayed on sentinelsat's own session
    session.close()


def test_credentials_and_url_from_sentinelsat_environment_variables(http_server, session, monkeypatch):
    replica = DhusReplica(http_server, generate(2, START + dt.timedelta(hours=1)), users={"bob": "pw-of-bob"})
    monkeypatch.setenv("DHUS_URL", replica.url)
    monkeypatch.setenv("DHUS_USER", "bob")
    monkeypatch.setenv("DHUS_PASSWORD", "pw-of-bob")

    results, _, _ = run(june(), None, credentials=None, session=session)

    assert len(results) == 2
    assert replica.searches()[-1].headers["Authorization"].startswith("Basic ")


def test_credentials_from_netrc_like_sentinelsat(http_server, session, monkeypatch, tmp_path):
    replica = DhusReplica(http_server, generate(2, START + dt.timedelta(hours=1)), users={"carol": "n3trc"})
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login carol password n3trc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    assert len(run(june(), replica.url, credentials=None, session=session)[0]) == 2


def test_missing_credentials_name_auth(http_server, session):
    replica = DhusReplica(http_server, [])
    with pytest.raises(ParameterError) as raised:
        run(june(), replica.url, credentials=None, session=session)
    assert str(raised.value) == ("AUTH: the dhus catalogue needs a user name and password: choose an "
                                 "authentication configuration or set DHUS_USER and DHUS_PASSWORD.")
    assert replica.searches() == []  # validated before any request


def test_missing_url_names_url(session):
    with pytest.raises(ParameterError) as raised:
        run(june(), None, session=session)
    assert str(raised.value).startswith("URL: the dhus catalogue needs the root URL of a DHuS mirror")


def test_bad_credentials_are_one_sentence_without_the_password(http_server, session):
    replica = DhusReplica(http_server, generate(2, START))
    with pytest.raises(ParameterError) as raised:
        run(june(), replica.url, credentials=Credentials("alice", "wrong-pass"), session=session)
    message = str(raised.value)
    assert message.startswith("AUTH: DHuS (127.0.0.1) refused the user name and password (HTTP 401)")
    assert "wrong-pass" not in message and "\n" not in message and message.endswith(".")


def test_unreachable_host_names_the_host(session):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceError) as raised:
        run(june(), f"http://127.0.0.1:{port}/dhus/", session=session)
    assert str(raised.value) == "DHuS (127.0.0.1) refused the connection; check the URL or try again later."


def test_server_error_after_retries_is_one_sentence(http_server, session):
    replica = DhusReplica(http_server, generate(2, START))
    replica.search_route.fail(*[faults.status(503, body=b"<html>maintenance</html>")] * 2)
    with pytest.raises(ServiceError) as raised:
        run(june(), replica.url, session=session)
    assert str(raised.value).startswith("DHuS (127.0.0.1) is unavailable (HTTP 503")
    assert len(replica.searches()) == 2  # the first try and one retry (the session's policy)


def test_an_answer_that_is_not_dhus_json_names_the_url_parameter(http_server, session):
    http_server.route("/portal/search", b"<html>a web portal</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(ServiceError) as raised:
        run(june(), http_server.url("/portal/"), session=session)
    assert str(raised.value) == ("DHuS (127.0.0.1) did not answer with DHuS search results ('a web portal'); "
                                 "check that URL is the root of a DHuS mirror (the address that ends before "
                                 "'search').")


def test_malformed_json_names_the_url_parameter(http_server, session):
    replica = DhusReplica(http_server, [])
    http_server.route("/dhus/search", b'{"feed": {"entry": [', headers={"Content-Type": "application/json"})
    with pytest.raises(ServiceError) as raised:
        run(june(), replica.url, session=session)
    assert str(raised.value).startswith("DHuS (127.0.0.1) did not answer with DHuS search results; check")


def test_missing_sentinelsat_is_one_sentence_with_the_install_command():
    script = f"""
import datetime, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "sentinelsat":
            raise ModuleNotFoundError("No module named 'sentinelsat'", name=name)
sys.meta_path.insert(0, Blocker())
sys.path.insert(0, {PLUGIN_PATH!r})
from sentinel2_pipeline.plugin.engine.catalogs import search
from sentinel2_pipeline.plugin.engine.errors import MissingDependency
from sentinel2_pipeline.plugin.engine.query import Query
try:
    search("dhus", Query(start=datetime.date(2023, 6, 1), end=datetime.date(2023, 6, 2)), "http://127.0.0.1:9/")
except MissingDependency as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("The Python package 'sentinelsat' is needed for the dhus catalogue but is not "
                              "installed")
    assert "pip install" in message and "sentinelsat" in message.rsplit(":", 1)[1]


@pytest.mark.parametrize("text,expected", [("799.87 MB", 838_724_485), ("1.02 GB", 1_095_216_660),
                                           ("512 KB", 524_288), ("unknown", None), (None, None)])
def test_size_strings_become_bytes(text, expected):
    assert dhus.parse_size(text) == expected

"""The STAC client against a real STAC API implementation: stac-fastapi-pgstac on PostgreSQL/PostGIS.

The module starts a throwaway PostgreSQL cluster in a temporary folder (as the ``postgres`` user when run as root),
installs pgstac into it with pypgstac, loads Earth Search-style collections with the real fixture items (plus
generated ones for paging), serves them with uvicorn on 127.0.0.1 and searches them through ``catalogs.stac``.
Everything is stopped and removed afterwards. Needs the Debian packages ``postgresql-15`` and
``postgresql-15-postgis-3`` and the Python packages of requirements-dev.txt (``make deps`` installs them).
"""

import contextlib
import copy
import datetime as dt
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import requests
from replicas import stac as replica

from sentinel2_pipeline.plugin.engine import http
from sentinel2_pipeline.plugin.engine.catalogs import stac
from sentinel2_pipeline.plugin.engine.query import Query


def _postgresql_version():
    """The newest PostgreSQL with PostGIS installed (15 on Debian 12, 18 on testing), as a string."""
    found = [os.path.basename(os.path.dirname(os.path.dirname(path)))
             for path in glob.glob("/usr/share/postgresql/*/extension/postgis.control")]
    return max(found, key=int) if found else "15"


PG_VERSION = _postgresql_version()
PG_BIN = f"/usr/lib/postgresql/{PG_VERSION}/bin"
POSTGIS = f"/usr/share/postgresql/{PG_VERSION}/extension/postgis.control"
MODULES = ("stac_fastapi.pgstac", "pypgstac", "uvicorn", "psycopg")
UTC = dt.timezone.utc
EVERYTHING = (dt.datetime(2015, 6, 23, tzinfo=UTC), dt.datetime(2030, 1, 1, tzinfo=UTC))


def _missing():
    missing = [path for path in (f"{PG_BIN}/initdb", POSTGIS) if not os.path.exists(path)]
    missing += [name for name in MODULES if importlib.util.find_spec(name.split(".")[0]) is None
                or importlib.util.find_spec(name) is None]
    return missing


if _missing() and os.geteuid() != 0:
    pytest.skip(f"not root and missing {', '.join(_missing())}: run `make deps` as root to install PostgreSQL, "
                "PostGIS and stac-fastapi-pgstac", allow_module_level=True)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster in a temporary folder, owned by ``postgres`` when we are root (initdb refuses root)."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="s2-pgstac-")
        self.data = os.path.join(self.folder, "data")
        self.port = _free_port()
        self.as_owner = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self):
        return f"postgresql://postgres:unused@127.0.0.1:{self.port}/postgres"

    def start(self):
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.folder, "log"), "-w", "start")

    def stop(self):
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program, *args):
        subprocess.run([*self.as_owner, f"{PG_BIN}/{program}", *args], check=True, capture_output=True,
                       cwd=self.folder, timeout=120)


def _collection(collection_id):
    return {"type": "Collection", "stac_version": "1.0.0", "id": collection_id, "license": "proprietary",
            "description": f"Sentinel-2 {collection_id} (Earth Search layout)", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [["2015-06-27T10:25:31Z", None]]}}}


def _items():
    """The real fixture items, the L2A one also as a c1-l2a item (same product), and 30 generated L1C items."""
    l1c, l2a = replica.template("earth-search-l1c"), replica.template("earth-search-l2a")
    c1 = copy.deepcopy(l2a)
    c1.update({"id": "S2A_T39QTA_20230628T070631_L2A", "collection": "sentinel-2-c1-l2a"})
    generated = [replica.earth_search_item(p) for p in replica.products(30)]
    return [l1c, l2a, c1, *generated]


def _load(dsn, items):
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods
    from pypgstac.migrate import Migrate

    with PgstacDB(dsn=dsn) as db:
        Migrate(db).run_migration()
        loader = Loader(db=db)
        loader.load_collections(iter([_collection(c) for c in ("sentinel-2-l1c", "sentinel-2-l2a",
                                                               "sentinel-2-c1-l2a")]), Methods.insert)
        loader.load_items(iter(copy.deepcopy(items)), Methods.insert)


def _serve(cluster, log_path):
    port = _free_port()
    env = dict(os.environ, PGUSER="postgres", PGPASSWORD="unused", PGHOST="127.0.0.1", PGPORT=str(cluster.port),
               PGDATABASE="postgres")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
                                    "--host",
                                    "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/", timeout=2).ok:
                return process, url
        time.sleep(0.2)
    process.kill()
    with open(log_path, encoding="utf-8", errors="replace") as log:
        raise RuntimeError(f"stac-fastapi-pgstac did not start:\n{log.read()[-3000:]}")


@pytest.fixture(scope="module")
def pgstac_server():
    """(url, items, seconds the set-up took) of a running stac-fastapi-pgstac loaded with the items."""
    began = time.monotonic()
    cluster, items, process = Cluster(), _items(), None
    try:
        cluster.start()
        _load(cluster.dsn, items)
        process, url = _serve(cluster, os.path.join(cluster.folder, "uvicorn.log"))
        yield url, items, time.monotonic() - began
    finally:
        if process is not None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        cluster.stop()


@pytest.fixture
def session():
    made = http.new_session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"}, backoff=0.01, timeout=30)
    yield made
    made.close()


def run(url, session, query, catalog="earth-search", **kwargs):
    lines = []
    results = stac.search(query, url, None, session, lambda f, m="": None, lambda: False, lines.append,
                          catalog=catalog, **kwargs)
    return results, lines


def test_pages_through_a_real_stac_api_with_post_next_links(pgstac_server, session):
    url, items, setup_seconds = pgstac_server
    print(f"stac-fastapi-pgstac set-up took {setup_seconds:.1f} s")
    first = session.post(url + "/search", json={"collections": ["sentinel-2-l1c"], "limit": 7}).json()
    (link,) = [link for link in first["links"] if link["rel"] == "next"]
    assert link["method"] == "POST" and "token" in link["body"]  # what the search below has to follow
    results, lines = run(url, session, Query(*EVERYTHING, level="L1C"), page_size=7)
    expected = {i["id"] for i in items if i["collection"] == "sentinel-2-l1c"}
    assert {f.id for f in results} == expected and len(results) == 31
    assert sum(": page " in line for line in lines) == 5  # 31 items, 7 per page, through pgstac's tokens


def test_real_fixture_item_comes_back_unchanged_through_the_server(pgstac_server, session):
    url, items, _ = pgstac_server
    results, _ = run(url, session, Query(*EVERYTHING, level="L1C", tiles=("27VWK",)))
    (footprint,) = results
    fixture = items[0]
    assert footprint.id == fixture["id"] and footprint.geometry == fixture["geometry"]
    assert footprint.name == "S2B_MSIL1C_20240206T131259_N0510_R081_T27VWK_20240206T133903.SAFE"
    assert (footprint.platform, footprint.tile_id, footprint.relative_orbit) == ("S2B", "27VWK", 81)


def test_query_extension_filters_match_a_local_evaluation(pgstac_server, session):
    url, items, _ = pgstac_server
    query = Query(*EVERYTHING, level="L1C", max_cloud=50, platform="S2B")
    results, _ = run(url, session, query)
    expected = {i["id"] for i in items if i["collection"] == "sentinel-2-l1c"
                and i["properties"]["eo:cloud_cover"] <= 50 and i["properties"]["platform"] == "sentinel-2b"}
    assert expected and {f.id for f in results} == expected


def test_cql2_filter_gives_the_same_answer(pgstac_server, session):
    url, items, _ = pgstac_server
    query = Query(*EVERYTHING, level="L1C", max_cloud=50, platform="S2B", tiles=("31TCJ", "31TDJ"))
    results, lines = run(url, session, query, catalog="cdse-stac", page_size=4)
    expected = {i["id"] for i in items if i["collection"] == "sentinel-2-l1c"
                and i["properties"]["eo:cloud_cover"] <= 50 and i["properties"]["platform"] == "sentinel-2b"
                and i["properties"]["grid:code"] in ("MGRS-31TCJ", "MGRS-31TDJ")}
    assert expected and {f.id for f in results} == expected
    assert any("cql2-json" in line for line in lines)


def test_l2a_area_search_keeps_the_c1_product_once(pgstac_server, session):
    url, _, _ = pgstac_server
    ring = [(48.5, 18.4), (48.7, 18.4), (48.7, 18.6), (48.5, 18.6), (48.5, 18.4)]
    results, _ = run(url, session, Query(*EVERYTHING, level="L2A", aoi=[ring]))
    (footprint,) = results
    assert footprint.id == "S2A_T39QTA_20230628T070631_L2A"  # sentinel-2-c1-l2a is preferred
    assert footprint.name == "S2A_MSIL2A_20230628T070631_N0509_R106_T39QTA_20230628T113955.SAFE"

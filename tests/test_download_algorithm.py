"""sentinel2:download through QGIS Processing and qgis_process: footprints from sentinel2:search against the OData
replica, the products' zips from a download host that wants a live token from a local identity service."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from osgeo import ogr
from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant
from replicas import cogs, odata
from replicas import stac as stac_replica
from replicas.identity import Identity
from servers import faults, http_server  # noqa: F401  (the fixture is found by name)
from test_download import safe_zip, utm_square
from test_transfer import CountingServer

from sentinel2_pipeline.plugin.engine import footprints as footprints_module
from sentinel2_pipeline.plugin.engine import safe
from sentinel2_pipeline.plugin.engine.catalogs import cdse as cdse_catalogue
from sentinel2_pipeline.plugin.engine.catalogs import stac as stac_catalogue
from sentinel2_pipeline.plugin.engine.transfer import CHUNK

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import ROOT, QgisProcess, find_qgis_process, qgis_process  # noqa: E402, F401

USER, PASSWORD = "bob@example.org", "s3cret-CDSE-pw"
MASTER = "master password for the tests"
TILE = "31TCJ"


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """Three L1C products of one tile, listed with the size and MD5 of real zips of synthetic SAFEs."""
    folder = tmp_path_factory.mktemp("zips")
    listed = odata.generate_products([TILE], dt.date(2023, 6, 1), dt.date(2023, 6, 11), every_days=5)
    made = []
    for product in listed:
        body = safe_zip(folder, product["Name"], strip=True)
        made.append((odata.with_content(product, body), body))
    return made


@pytest.fixture(scope="module")
def services(products):
    """The OData replica (search, and the $value zips, which need a live token) and the identity service."""
    replica = odata.odata_test_server(odata.ODataReplica([p for p, _ in products]))
    identity_server = CountingServer().start()
    identity = Identity(identity_server, USER, PASSWORD)
    for product, body in products:
        def answer(request, body=body):
            if identity.check(request.headers.get("Authorization")):
                return 401, {"Content-Type": "application/json"}, b'{"detail": "Expired signature!"}'
            return 200, {"Content-Type": "application/zip"}, body

        replica.route(odata.value_path(product), handler=answer)
    yield replica, identity
    replica.stop()
    identity_server.stop()


@pytest.fixture
def env(services, monkeypatch):
    replica, identity = services
    monkeypatch.setenv("SENTINEL2_CDSE_DOWNLOAD_URL", replica.odata_url)
    monkeypatch.setenv("SENTINEL2_CDSE_TOKEN_URL", identity.url)
    return services


@pytest.fixture(scope="module")
def authcfg(qgis_app):
    """A Basic configuration with the account, in pytest-qgis's temporary profile."""
    manager = QgsApplication.authManager()
    # One master password per test session: reuse the one an earlier test module set.
    assert manager.masterPasswordIsSet() or manager.setMasterPassword(MASTER, True)
    config = QgsAuthMethodConfig()
    config.setName("CDSE test account")
    config.setMethod("Basic")
    config.setConfig("username", USER)
    config.setConfig("password", PASSWORD)
    ok, config = manager.storeAuthenticationConfig(config)
    assert ok
    return config.id()


class Log(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.lines, self.warnings, self.errors = [], [], []

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        self.lines.append(info)

    def pushWarning(self, warning):  # noqa: N802 (QGIS API name)
        self.warnings.append(warning)

    def reportError(self, error, fatalError=False):  # noqa: N802,N803 (QGIS API names)
        self.errors.append(error)


def _run(algorithm, params, feedback=None):
    import processing

    return processing.run(algorithm, params, feedback=feedback or QgsProcessingFeedback())


def _search(replica, geojson=None):
    params = {"CATALOG": "cdse", "URL": replica.odata_url, "TILES": TILE, "START": "2023-06-01",
              "END": "2023-06-30", "LEVEL": "L1C", "OUTPUT": "memory:"}
    if geojson:
        params["GEOJSON"] = str(geojson)
    return _run("sentinel2:search", params)["OUTPUT"]


def test_selected_footprints_are_downloaded_extracted_and_rerun_skips(provider, env, authcfg, products, tmp_path):
    replica, identity = env
    layer = _search(replica)
    assert layer.featureCount() == 3
    layer.selectByIds([f.id() for f in layer.getFeatures()][1:])  # the last two only
    log = Log()
    params = {"INPUT": layer, "SOURCE": "auto", "AUTH": authcfg, "OUTPUT_FOLDER": str(tmp_path)}
    result = _run("sentinel2:download", params, log)
    names = [p["Name"] for p, _ in products[1:]]
    assert result["PRODUCTS"] == ";".join(str(tmp_path / name) for name in names)
    assert (result["DOWNLOADED"], result["SKIPPED"], result["FAILED_COUNT"]) == (2, 0, 0)
    assert result["OUTPUT_FOLDER"] == str(tmp_path) and sorted(os.listdir(tmp_path)) == sorted(names)
    assert all(safe.check(str(tmp_path / name)) == [] for name in names)
    assert any("created the empty folders Sen2Cor needs: AUX_DATA, HTML, rep_info" in line for line in log.lines)
    assert not any(PASSWORD in line or "eyJ-" in line for line in log.lines)

    again = _run("sentinel2:download", params)
    assert (again["DOWNLOADED"], again["SKIPPED"], again["FAILED_COUNT"]) == (0, 2, 0)
    assert again["PRODUCTS"] == result["PRODUCTS"]


def test_a_corrupt_product_is_one_failed_line_and_the_others_arrive(provider, env, authcfg, products, tmp_path):
    replica, _ = env
    damaged, body = products[0]
    corrupt = replica.route(odata.value_path(damaged), body=body[:-10] + b"0123456789")  # same size, other MD5
    log = Log()
    try:
        result = _run("sentinel2:download", {"INPUT": _search(replica), "SOURCE": "cdse", "AUTH": authcfg,
                                             "UNZIP": False, "OUTPUT_FOLDER": str(tmp_path)}, log)
    finally:
        replica.unroute(corrupt)
    assert (result["DOWNLOADED"], result["FAILED_COUNT"]) == (2, 1)
    [line] = result["FAILED"].splitlines()
    assert line.startswith(damaged["Name"][:-5] + ": ") and "MD5" in line, line
    assert log.warnings == [line]  # told once, as a warning: the other products are fine
    assert sorted(os.listdir(tmp_path)) == sorted(p["Name"][:-5] + ".zip" for p, _ in products[1:])


def test_geojson_footprints_without_unzip_give_verified_zips(provider, env, authcfg, products, tmp_path):
    replica, _ = env
    geojson = tmp_path / "footprints.geojson"
    _search(replica, geojson)
    out = tmp_path / "zips"
    result = _run("sentinel2:download", {"INPUT": str(geojson), "SOURCE": "cdse", "AUTH": authcfg, "UNZIP": False,
                                         "PARALLEL": 2, "OUTPUT_FOLDER": str(out)})
    assert result["DOWNLOADED"] == 3 and (result["FAILED"], result["FAILED_COUNT"]) == ("", 0)
    for (product, body), path in zip(products, result["PRODUCTS"].split(";")):
        assert path == str(out / (product["Name"][:-5] + ".zip"))
        with open(path, "rb") as stream:
            assert stream.read() == body


def _memory_layer(fields=(), features=0):
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "layer", "memory")
    layer.dataProvider().addAttributes([QgsField(name, QVariant.String) for name in fields])
    layer.updateFields()
    for _ in range(features):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt("POLYGON((1 43,2 43,2 44,1 44,1 43))"))
        layer.dataProvider().addFeature(feature)
    return layer


@pytest.mark.parametrize("case, message", [
    ("empty", "INPUT: there are no footprints to download (the layer is empty, or its selection is)."),
    ("not footprints", "INPUT: this is not a footprints layer: it has no 'name' field; use the footprints written "
                       "by sentinel2:search or their GeoJSON file."),
    ("no account", "AUTH: downloads from the Copernicus Data Space need an account: choose an authentication "
                   "configuration of type Basic with its username and password."),
    ("unwritable", "OUTPUT_FOLDER: cannot create the folder {folder} (Not a directory)."),
])
def test_bad_input_is_one_sentence_before_any_request(provider, env, authcfg, tmp_path, case, message):
    replica, identity = env
    (tmp_path / "a file").write_text("not a folder")
    folder = tmp_path / "a file" / "out" if case == "unwritable" else tmp_path / "out"
    layer = {"empty": _memory_layer(footprints_module.FIELDS), "not footprints": _memory_layer(["tile_id"], 2)}.get(
        case) or _search(replica)
    before = (len(replica.requests), len(identity.grants))
    params = {"INPUT": layer, "SOURCE": "auto", "AUTH": None if case == "no account" else authcfg,
              "OUTPUT_FOLDER": str(folder)}
    with pytest.raises(QgsProcessingException) as raised:
        _run("sentinel2:download", params)
    assert str(raised.value) == message.format(folder=folder)
    assert (len(replica.requests), len(identity.grants)) == before and not (tmp_path / "out").exists()


# ---- headless: killed mid-transfer, then run again ---------------------------------------------------------------

CREATE_AUTH = """
import json, os
from qgis.core import QgsApplication, QgsAuthMethodConfig
app = QgsApplication([], False)
app.initQgis()
manager = QgsApplication.authManager()
assert manager.setMasterPassword(os.environ["TEST_MASTER"], True)
config = QgsAuthMethodConfig()
config.setName("CDSE")
config.setMethod("Basic")
config.setConfig("username", os.environ["TEST_USER"])
config.setConfig("password", os.environ["TEST_PASSWORD"])
ok, config = manager.storeAuthenticationConfig(config)
assert ok
print("AUTHCFG=" + config.id())
app.exitQgis()
"""


def _headless_profile(base, download_root, token_url):
    """A qgis_process profile with the plugin enabled and an auth database holding the account."""
    (base / "auth").mkdir(parents=True)
    (base / "master.txt").write_text(MASTER + "\n")
    env = {"QGIS_AUTH_DB_DIR_PATH": str(base / "auth"), "QGIS_AUTH_PASSWORD_FILE": str(base / "master.txt"),
           "SENTINEL2_CDSE_DOWNLOAD_URL": download_root, "SENTINEL2_CDSE_TOKEN_URL": token_url}
    created = subprocess.run([sys.executable, "-c", CREATE_AUTH], capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env, "TEST_MASTER": MASTER, "TEST_USER": USER,
                                  "TEST_PASSWORD": PASSWORD, "QT_QPA_PLATFORM": "offscreen"})
    assert created.returncode == 0, created.stderr
    authcfg = next(line[len("AUTHCFG="):] for line in created.stdout.splitlines() if line.startswith("AUTHCFG="))
    return QgisProcess.prepared(base=str(base / "qgis"), plugin_source=ROOT, env=env), authcfg


@pytest.mark.headless
@pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")
def test_headless_download_killed_mid_transfer_completes_on_the_next_run(products, tmp_path):
    product, _ = products[0]
    body = safe_zip(tmp_path, product["Name"], pad=4_000_000, seed=9)  # ~4 MB: long enough to be killed
    product = odata.with_content(product, body)
    with CountingServer() as host, CountingServer() as identity_host:
        identity = Identity(identity_host, USER, PASSWORD)
        host.route(odata.value_path(product), body).fail(faults.slow(0.05, 64 * 1024))  # ~3 s for the first run
        qp, authcfg = _headless_profile(tmp_path / "headless", host.url(odata.ROOT), identity.url)
        fp_file = tmp_path / "footprints.geojson"
        footprints_module.write_geojson([cdse_catalogue.parse_product(product, host.url(odata.ROOT))], str(fp_file))
        out = tmp_path / "out"
        params = ["INPUT=" + str(fp_file), "SOURCE=auto", "AUTH=" + authcfg, "OUTPUT_FOLDER=" + str(out)]
        part = out / (product["Name"][:-5] + ".zip.part")

        output = tmp_path / "killed-run.txt"
        with open(output, "wb") as stream:
            child = subprocess.Popen([qp.executable, "run", "sentinel2:download", "--", *params], env=qp.env(),
                                     stdout=stream, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not (part.exists() and part.stat().st_size >= CHUNK) and time.monotonic() < deadline:
            assert child.poll() is None, f"qgis_process ended before it could be killed:\n{output.read_text()}"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        kept = part.stat().st_size
        assert 0 < kept < len(body) and not (out / product["Name"]).exists()

        second_run = time.monotonic()
        result = qp.run_alg("sentinel2:download", dict(p.split("=", 1) for p in params)).check()
        assert result.results["DOWNLOADED"] == 1 and result.results["FAILED_COUNT"] == 0
        assert result.results["PRODUCTS"] == str(out / product["Name"])
        assert safe.check(str(out / product["Name"])) == [] and os.listdir(out) == [product["Name"]]
        assert host.served[-1].range == f"bytes={kept}-"  # resumed where the killed run stopped writing
        assert host.body_bytes(since=second_run) == len(body) - kept  # no byte fetched twice in the second run
        assert identity.grants == ["password", "password"]  # one sign-in per run
        assert PASSWORD not in result.output and not any(token in result.output for token in identity.tokens())


@pytest.mark.headless
@pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")
def test_headless_stac_bands_clipped_to_an_aoi(qgis_process, http_server, tmp_path):
    from osgeo import gdal

    gdal.VSICurlClearCache()
    cog = cogs.band_cog("B04")
    served = tmp_path / "cogs"
    served.mkdir()
    for band in ("B04", "B08"):
        os.symlink(cog, served / f"{band}.tif")
    product = stac_replica.products(1, tiles=(TILE,), level="L2A")[0]
    with cogs.RangeFileServer(str(served)) as files:
        item = stac_replica.earth_search_item(product, "sentinel-2-c1-l2a")
        item["assets"] = {"red": {"href": files.url("B04.tif")}, "nir": {"href": files.url("B08.tif")}}
        http_server.route("/item", json.dumps(item), headers={"Content-Type": "application/geo+json"})
        footprint = stac_catalogue.item_footprint(item, "earth-search", "L2A")
        footprint.download_url = http_server.url("/item")
        footprints_module.write_geojson([footprint], str(tmp_path / "footprints.geojson"))
        aoi = tmp_path / "aoi.geojson"
        aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                   "geometry": json.loads(ogr.CreateGeometryFromWkb(utm_square(
                                       340_000, 4_850_000, 10_000)).ExportToJson())}]}))
        result = qgis_process.run_alg("sentinel2:download", {
            "INPUT": str(tmp_path / "footprints.geojson"), "SOURCE": "stac", "BANDS": ["B4", "B8"],
            "AOI": str(aoi), "OUTPUT_FOLDER": str(tmp_path / "out")}).check()
        assert files.sent < 0.05 * 2 * os.path.getsize(cog)
    folder = tmp_path / "out" / product.name
    assert result.results["PRODUCTS"] == str(folder) and result.results["DOWNLOADED"] == 1
    assert sorted(os.listdir(folder)) == ["B04.tif", "B08.tif", "item.json"]  # item.json: for biophysical

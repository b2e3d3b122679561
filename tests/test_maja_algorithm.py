"""sentinel2:maja through QGIS Processing (pytest-qgis) and qgis_process: MODE=local with the stand-in ``maja``,
MODE=geodes against the GEODES replica with the API key from the QGIS authentication database."""

import datetime as dt
import os
import sys

import pytest
from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
)
from replicas import stac as replica
from servers import http_server  # noqa: F401 (fixture)
from test_maja import KEY, STANDIN, TILE, Site, records, series, site, theia_products  # noqa: F401 (site: fixture)

from sentinel2_pipeline.plugin.engine import maja

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import find_qgis_process, qgis_process  # noqa: E402, F401

PARAMETERS = ["MODE", "TILE", "START", "END", "RELATIVE_ORBIT", "AUTH", "INPUT_FOLDER", "DTM_FOLDER", "GIPP_FOLDER",
              "EXECUTABLE", "MAX_CLOUD", "EXECUTOR", "SLURM_OPTIONS", "WAIT", "OUTPUT_AUTH", "OUTPUT_FOLDER"]
MASTER = "test master password"  # the other algorithm tests' choice: one session, one authentication database


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


def _run(params, context=None, feedback=None):
    import processing

    return processing.run("sentinel2:maja", params, context=context or QgsProcessingContext(),
                          feedback=feedback or QgsProcessingFeedback())


def local_params(site, **changes):
    return {"MODE": "local", "TILE": TILE, "START": "2023-06-01", "END": "2023-06-30", "INPUT_FOLDER": site.input,
            "DTM_FOLDER": site.dtm, "GIPP_FOLDER": site.gipp, "EXECUTABLE": STANDIN, "OUTPUT_FOLDER": site.output,
            **changes}


def test_parameters_are_the_public_interface(provider):
    algorithm = provider.algorithm("maja")
    assert [p.name() for p in algorithm.parameterDefinitions()] == PARAMETERS
    mode = algorithm.parameterDefinition("MODE")
    assert mode.options() == ["geodes", "local"] and mode.usesStaticStrings()
    assert sorted(o.name() for o in algorithm.outputDefinitions()) == [
        "FAILED", "FAILED_COUNT", "JOB_ID", "OUTPUT_FOLDER", "OUTPUT_LAYERS", "PRODUCTS"]
    assert "DTMCreation.py" in algorithm.shortHelpString() and "SENTINEL2_GEODES_URL" in algorithm.shortHelpString()


def test_local_run_makes_products_and_styled_layers_grouped_per_date(provider, site):
    series(site.input, dt.date(2023, 6, 1), 3)
    context, project, feedback = QgsProcessingContext(), QgsProject(), Log()
    context.setProject(project)
    result = _run(local_params(site), context, feedback)
    products = result["PRODUCTS"].split(";")
    assert [maja.l2_product(p).date.day for p in products] == [1, 6, 11] and result["FAILED"] == ""
    assert [r["mode"] for r in records(site.record)] == ["L2INIT", "L2NOMINAL", "L2NOMINAL"]
    assert len(result["OUTPUT_LAYERS"]) == 6 and all(os.path.exists(p) for p in result["OUTPUT_LAYERS"])
    loads = context.layersToLoadOnCompletion()
    assert sorted(details.name for details in loads.values())[:2] == ["2023-06-01 cloud mask (CLM)",
                                                                      "2023-06-01 true colour (FRE)"]
    fre, clm = (next(p for p in result["OUTPUT_LAYERS"] if p.endswith(end)) for end in ("_B432.vrt", "_CLM_R1.tif"))
    true_colour = _loaded(project, context, loads, fre)
    renderer = true_colour.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert renderer.redContrastEnhancement().maximumValue() == pytest.approx(2000)  # 20 % of 10000
    mask = _loaded(project, context, loads, clm)
    assert isinstance(mask.renderer(), QgsSingleBandPseudoColorRenderer)
    assert mask.renderer().shader().rasterShaderFunction().shade(33)[1:4] == (64, 64, 64)  # shadows
    group = project.layerTreeRoot().findGroup("MAJA T31TCJ 2023-06-01")
    assert {node.layer().id() for node in group.findLayers()} == {true_colour.id(), mask.id()}
    assert any("3 date(s) made" in line for line in feedback.lines)


def _loaded(project, context, loads, path):
    """What the Processing toolbox does on completion: add the layer, then run its post-processor."""
    layer = QgsRasterLayer(path, loads[path].name)
    assert layer.isValid()
    project.addMapLayer(layer)
    loads[path].postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
    return layer


def test_a_failed_date_is_listed_and_other_tiles_are_said(provider, site, monkeypatch):
    series(site.input, dt.date(2023, 6, 1), 3)
    series(site.input, dt.date(2023, 6, 2), 1, tile="31TDJ")
    monkeypatch.setenv("STANDIN_MAJA_FAIL", "20230606")
    feedback = Log()
    result = _run(local_params(site), feedback=feedback)
    assert len(result["PRODUCTS"].split(";")) == 2 and "2023-06-06 exited with code 1" in result["FAILED"]
    assert any("other tiles (31TDJ: 1)" in warning for warning in feedback.warnings)
    assert any("2023-06-06" in warning for warning in feedback.warnings) and result["FAILED_COUNT"] == 1


@pytest.mark.parametrize("changes, message", [
    ({"TILE": "31TZZ"}, "TILE: '31TZZ' is not a Sentinel-2 tile id"),
    ({"END": "2023-05-01"}, "END: the end (2023-05-01) is before the start (2023-06-01)."),
    ({"DTM_FOLDER": "{empty}"}, "DTM_FOLDER: there is no MAJA DTM for tile 31TCJ in {empty}: expected "
                                "S2__TEST_AUX_REFDE2_T31TCJ_0001.HDR with its S2__TEST_AUX_REFDE2_T31TCJ_0001.DBL.DIR "
                                "folder"),
    ({"MODE": "geodes"}, "AUTH: MODE=geodes downloads need a GEODES API key"),
])
def test_bad_input_is_one_sentence_before_any_work(provider, site, tmp_path, changes, message):
    series(site.input, dt.date(2023, 6, 1), 1)
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    changes = {key: value.format(empty=empty) for key, value in changes.items()}
    with pytest.raises(QgsProcessingException) as error:
        _run(local_params(site, **changes))
    assert str(error.value).startswith(message.format(empty=empty)) and "\n" not in str(error.value)
    assert not records(site.record) and not os.path.exists(site.output)


@pytest.fixture(scope="module")
def authcfg(qgis_app):
    """The GEODES key in a Basic configuration (key in the password field), in pytest-qgis's profile."""
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword(MASTER, True)
    config = QgsAuthMethodConfig()
    config.setName("GEODES")
    config.setMethod("Basic")
    config.setConfig("username", "")
    config.setConfig("password", KEY)
    ok, config = manager.storeAuthenticationConfig(config)
    assert ok
    return config.id()


def test_geodes_run_downloads_with_the_key_from_auth(provider, authcfg, http_server, tmp_path, monkeypatch):
    items, _ = replica.theia_downloads(http_server, theia_products(4, skip=(2,)), KEY, str(tmp_path / "served"))
    replica.StacReplica(items, flavour="geodes").install(http_server, "/api/stac")
    monkeypatch.setenv(maja.GEODES_URL_VARIABLE, http_server.url("/api/stac"))
    context, feedback = QgsProcessingContext(), Log()
    result = _run({"MODE": "geodes", "TILE": TILE, "START": "2023-06-01", "END": "2023-06-20", "AUTH": authcfg,
                   "OUTPUT_FOLDER": str(tmp_path / "out")}, context, feedback)
    assert [maja.l2_product(p).date.day for p in result["PRODUCTS"].split(";")] == [1, 6, 16]
    assert len(result["OUTPUT_LAYERS"]) == 6 and len(context.layersToLoadOnCompletion()) == 6
    assert "No product between 2023-06-07 and 2023-06-15 (9 days)." in feedback.lines
    downloads = [r for r in http_server.requests if r.path.startswith("/api/download/")]
    assert len(downloads) == 3 and all(r.headers.get("X-API-Key") == KEY for r in downloads)
    assert not any(KEY in line for line in feedback.lines + feedback.warnings + feedback.errors)


@pytest.mark.headless
@pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")
def test_headless_local_run(qgis_process, site, monkeypatch):
    assert "sentinel2:maja" in qgis_process.algorithms(), (
        "sentinel2:maja is not registered: add MajaAlgorithm to processing_provider/provider.py")
    series(site.input, dt.date(2023, 6, 1), 4)
    monkeypatch.setenv("STANDIN_MAJA_FAIL", "20230611")  # qgis_process passes the environment on to MAJA
    result = qgis_process.run_alg("sentinel2:maja", local_params(site)).check()
    products = result.results["PRODUCTS"].split(";")
    assert [maja.l2_product(p).date.day for p in products] == [1, 6, 16]
    assert "2023-06-11" in result.results["FAILED"]
    assert [r["mode"] for r in records(site.record)] == ["L2INIT", "L2NOMINAL", "L2NOMINAL", "L2INIT"]
    assert len(result.results["OUTPUT_LAYERS"]) == 6
    assert all(os.path.dirname(p) == site.output for p in products)
    failed_log = next(name for name in os.listdir(site.output) if "20230611" in name and name.endswith(".maja.log"))
    with open(os.path.join(site.output, failed_log)) as handle:
        assert "=== exit code 1" in handle.read()

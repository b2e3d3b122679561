"""The shipped graphical model (models/search_download_sen2cor.model3): listed with the algorithms, and run
headless by file against the local catalogue replica, the token-protected download host and stand-in Sen2Cor."""

import datetime as dt
import os
import shutil
import sys

import pytest
from replicas import odata
from replicas.identity import Identity
from test_download import safe_zip
from test_download_algorithm import PASSWORD, TILE, USER, _headless_profile
from test_sen2cor import GIPP_210
from test_transfer import CountingServer

from sentinel2_pipeline import classFactory
from sentinel2_pipeline.plugin.engine import safe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import ROOT, find_qgis_process  # noqa: E402

MODEL = os.path.join(ROOT, "models", "search_download_sen2cor.model3")
BIOPHYSICAL_MODEL = os.path.join(ROOT, "models", "search_download_sen2cor_biophysical.model3")
STANDIN = os.path.join(ROOT, "tests", "standins", "L2A_Process")
DEMO_AREA = os.path.join(ROOT, "data", "demo", "gers_toulouse.geojson")


def test_model_is_listed_with_the_algorithms(qgis_processing):
    plugin = classFactory(None)
    plugin.initProcessing()
    try:
        model = plugin.provider.algorithm("search_download_sen2cor")
        assert model is not None and model.sourceFilePath().endswith("search_download_sen2cor.model3")
        children = sorted(c.algorithmId() for c in model.childAlgorithms().values())
        assert children == ["sentinel2:download", "sentinel2:search", "sentinel2:sen2cor"]
        assert {p.name() for p in model.parameterDefinitions() if not p.isDestination()} == {
            "area", "start", "end", "max_cloud", "auth", "catalogue_url", "sen2cor"}
        # The toolbox shows a title, a group and help, not the file name; the id stays what scripts type.
        assert model.id() == "sentinel2:search_download_sen2cor"
        assert model.displayName() == "Search, download and Sen2Cor (Level-1C to Level-2A)"
        assert model.group() == "Workflows"
        assert "<p>From an area and dates to Level-2A products in one run" in model.shortHelpString()
        assert all(model.helpContent().get(p.name()) for p in model.parameterDefinitions()
                   if not p.isDestination())
        copy = model.create({})
        assert copy.displayName() == model.displayName() and copy.helpUrl().endswith("#shipped-model")
    finally:
        plugin.unload()


def _inside(path):
    """(EPSG, x, y) in UTM 31N of a point well inside the area (the stand-in writes 1.2 km images from there)."""
    from osgeo import ogr, osr

    source = ogr.Open(path)
    layer = source.GetLayer()
    feature = layer.GetNextFeature()
    point = feature.GetGeometryRef().Clone().PointOnSurface()
    wgs, utm = osr.SpatialReference(), osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    utm.ImportFromEPSG(32631)
    point.Transform(osr.CoordinateTransformation(wgs, utm))
    return 32631, point.GetX() - point.GetX() % 60, point.GetY() - point.GetY() % 60 + 600


def test_the_biophysical_model_chains_the_variables_after_sen2cor(qgis_processing):
    plugin = classFactory(None)
    plugin.initProcessing()
    try:
        model = plugin.provider.algorithm("search_download_sen2cor_biophysical")
        assert model.displayName() == "Search, download, Sen2Cor and biophysical variables"
        children = sorted(c.algorithmId() for c in model.childAlgorithms().values())
        assert children == ["sentinel2:biophysical", "sentinel2:download", "sentinel2:search", "sentinel2:sen2cor"]
        assert {p.name() for p in model.parameterDefinitions() if not p.isDestination()} == {
            "area", "start", "end", "max_cloud", "auth", "catalogue_url", "sen2cor", "variables"}
        estimate = model.childAlgorithm("biophysical")
        assert estimate.parameterSources()["INPUT_FOLDER"][0].outputChildId() == "sen2cor"
        assert all(model.helpContent().get(p.name()) for p in model.parameterDefinitions()
                   if not p.isDestination())
    finally:
        plugin.unload()


@pytest.mark.headless
@pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")
@pytest.mark.parametrize("biophysical", [False, True], ids=["sen2cor model", "biophysical model"])
def test_model_runs_headless_from_search_to_level_2a(tmp_path, biophysical):
    (tmp_path / "zips").mkdir()
    listed = odata.generate_products([TILE], dt.date(2023, 6, 1), dt.date(2023, 6, 11), every_days=5)
    origin = _inside(DEMO_AREA) if biophysical else None  # the stand-in's small images inside the area
    made = [(odata.with_content(p, body), body)
            for p in listed for body in [safe_zip(tmp_path / "zips", p["Name"], strip=True, origin=origin)]]
    replica = odata.odata_test_server(odata.ODataReplica([p for p, _ in made]))
    identity_server = CountingServer().start()
    identity = Identity(identity_server, USER, PASSWORD)
    for product, body in made:
        def answer(request, body=body):
            if identity.check(request.headers.get("Authorization")):
                return 401, {"Content-Type": "application/json"}, b'{"detail": "Expired signature!"}'
            return 200, {"Content-Type": "application/zip"}, body

        replica.route(odata.value_path(product), handler=answer)
    try:
        qp, authcfg = _headless_profile(tmp_path / "headless", replica.odata_url, identity.url)
        sen2cor_home = tmp_path / "sen2cor"  # the stand-in's "installation": where its own GIPP lives
        (sen2cor_home / "cfg").mkdir(parents=True)
        shutil.copy(GIPP_210, sen2cor_home / "cfg" / "L2A_GIPP.xml")
        qp.extra_env.update({"SEN2COR_HOME": str(sen2cor_home), "STANDIN_SEN2COR_SECONDS": "0.2",
                             "STANDIN_SEN2COR_PIXELS": "30"})
        extra = [f"biophysical:biophysical={tmp_path / 'bio'}", "variables=LAI", "variables=FCOVER"]
        result = qp.call(["--json", "run", BIOPHYSICAL_MODEL if biophysical else MODEL, "--",
                          f"area={DEMO_AREA}", "start=2023-06-01", "end=2023-06-30", "max_cloud=100",
                          f"auth={authcfg}", f"catalogue_url={replica.odata_url}", f"sen2cor={STANDIN}",
                          f"download:downloads={tmp_path / 'l1c'}", f"sen2cor:l2a={tmp_path / 'l2a'}",
                          *(extra if biophysical else [])],
                         json_output=False, timeout=600)
    finally:
        replica.stop()
        identity_server.stop()
    assert result.ok, result.describe()
    downloaded = sorted(n for n in os.listdir(tmp_path / "l1c") if n.endswith(".SAFE"))
    assert downloaded == sorted(p["Name"] for p, _ in made)
    made_l2a = sorted(n for n in os.listdir(tmp_path / "l2a") if n.endswith(".SAFE"))
    assert len(made_l2a) == len(made), result.describe()
    assert all(safe.inspect(str(tmp_path / "l2a" / name)).level == "L2A" for name in made_l2a)
    assert identity.grants == ["password"]  # one sign-in for the whole model run
    if biophysical:
        written = sorted(os.listdir(tmp_path / "bio"))
        assert written == sorted(f"{name[:-5]}_{v}_20m.tif" for name in made_l2a for v in ("LAI", "FCOVER",
                                                                                         "QUALITY")), written

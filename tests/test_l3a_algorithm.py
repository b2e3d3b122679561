"""sentinel2:l3amosaic through QGIS Processing (pytest-qgis) and qgis_process, against the DLR replica."""

import datetime as dt
import json
import os
import sys

import pytest
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from replicas import dlr

from sentinel2_pipeline.plugin.engine import l3a
from sentinel2_pipeline.processing_provider.l3amosaic import GROUP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import find_qgis_process, qgis_process  # noqa: E402, F401
from test_l3a import ACROSS, lonlat_rectangle  # noqa: E402

LAYOUT = dlr.Layout(tiles=("32UQB", "32UQC"), months=("2021-04", "2021-05", "2021-06"), bands=("B2", "B3", "B4"),
                    clouds=(("2021-05", 2),))
PARAMETERS = ["AOI", "START_MONTH", "END_MONTH", "BANDS", "URL", "MAX_MASKED", "STACK", "OUTPUT_AUTH",
              "OUTPUT_FOLDER"]


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    server = dlr.dlr_test_server(dlr.DlrReplica(dlr.build(str(tmp_path_factory.mktemp("dlr") / "tree"), LAYOUT)))
    yield server
    server.stop()


def _area(wkt):
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt(wkt))
    layer.dataProvider().addFeature(feature)
    return layer


def _json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def _run(params, context=None):
    import processing

    return processing.run("sentinel2:l3amosaic", params, context=context, feedback=QgsProcessingFeedback())


def _params(replica, folder, **extra):
    return {"AOI": _area(lonlat_rectangle(ACROSS)), "START_MONTH": "2021-04", "END_MONTH": "2021-06",
            "BANDS": ["B2", "B3", "B4"], "URL": replica.root_url, "MAX_MASKED": 30, "STACK": False,
            "OUTPUT_FOLDER": str(folder), **extra}


def test_parameters_and_outputs_are_the_documented_ones(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById("sentinel2:l3amosaic")
    assert [p.name() for p in algorithm.parameterDefinitions()] == PARAMETERS
    assert [o.name() for o in algorithm.outputDefinitions()] == ["OUTPUT_FOLDER", "OUTPUT_LAYERS", "REPORT",
                                                                 "FAILED", "FAILED_COUNT"]
    bands = algorithm.parameterDefinition("BANDS")
    assert bands.options() == list(l3a.BANDS) and bands.usesStaticStrings() and bands.allowMultiple()
    assert algorithm.parameterDefinition("MAX_MASKED").defaultValue() == 100
    assert "MAX_MASKED" in algorithm.shortHelpString() and l3a.DEFAULT_URL in algorithm.shortHelpString()


def test_run_writes_mosaics_report_and_true_colour_layers(provider, replica, tmp_path):
    context = QgsProcessingContext()
    project = QgsProject()
    context.setProject(project)
    result = _run(_params(replica, tmp_path), context)
    assert result["OUTPUT_FOLDER"] == str(tmp_path)
    assert [os.path.basename(p) for p in result["OUTPUT_LAYERS"]] == [
        "s2_l3a_202104_truecolour.vrt", "s2_l3a_202106_truecolour.vrt"]  # 2021-05 is half cloud: excluded
    report = _json(result["REPORT"])
    assert report["excluded"][0]["month"] == "2021-05" and report["stage"] == "complete"
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".tif")) == [
        f"s2_l3a_2021{m}_{b}.tif" for m in ("04", "06") for b in ("B2", "B3", "B4")]
    loads = context.layersToLoadOnCompletion()
    assert sorted(details.name for details in loads.values()) == ["L3A 2021-04 true colour",
                                                                  "L3A 2021-06 true colour"]
    _check_loaded_layer(project, context, loads, result["OUTPUT_LAYERS"][0], report["months"][0]["stretch"])


def _check_loaded_layer(project, context, loads, path, stretch):
    """What the Processing toolbox does on completion: add the layer, then run its post-processor."""
    layer = QgsRasterLayer(path, loads[path].name)
    assert layer.isValid() and layer.bandCount() == 3
    project.addMapLayer(layer)
    loads[path].postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
    renderer = layer.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)
    red = renderer.redContrastEnhancement()
    assert (red.minimumValue(), red.maximumValue()) == tuple(stretch["B4"])
    assert renderer.blueContrastEnhancement().minimumValue() == stretch["B2"][0]
    assert project.layerTreeRoot().findGroup(GROUP).findLayer(layer.id()) is not None


def test_stack_gives_one_file_per_month(provider, replica, tmp_path):
    result = _run(_params(replica, tmp_path, STACK=True, MAX_MASKED=100))
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".tif")) == [
        "s2_l3a_202104_stack.tif", "s2_l3a_202105_stack.tif", "s2_l3a_202106_stack.tif"]
    assert len(result["OUTPUT_LAYERS"]) == 3


def _future_month():
    today = dt.date.today()
    return f"{today.year + 1}-01"


@pytest.mark.parametrize("extra, message", [
    ({"START_MONTH": "2021-4"}, "START_MONTH: '2021-4' is not a month written YYYY-MM (e.g. 2021-05)."),
    ({"START_MONTH": "2021-07"}, "END_MONTH: 2021-06 is before START_MONTH 2021-07."),
    ({"START_MONTH": "2016-06"}, "START_MONTH: 2016-06 is before the DLR L3A composites start (2017-01)."),
    ({"END_MONTH": _future_month()}, f"END_MONTH: {_future_month()} is in the future (composites exist up to "),
    ({"URL": None, "AOI": "POLYGON((1.2 43.4,1.8 43.4,1.8 43.8,1.2 43.8,1.2 43.4))"},
     "AOI: the area lies outside Germany, the only area the DLR L3A composites cover"),
    ({"AOI": "POLYGON((9.9 53.5,10.1 53.5,10.1 53.6,9.9 53.6,9.9 53.5))"},
     "AOI: the server has no composites of the tiles covering the area (32UNE) in 2021; the DLR L3A composites "
     "cover Germany only."),
])
def test_bad_input_is_one_sentence_naming_the_parameter(provider, replica, tmp_path, extra, message):
    params = _params(replica, tmp_path, **extra)
    if isinstance(params["AOI"], str):
        params["AOI"] = _area(params["AOI"])
    with pytest.raises(QgsProcessingException) as error:
        _run(params)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tif")]


def test_no_bands_is_refused_by_processing_naming_the_parameter(provider, replica, tmp_path):
    # QGIS checks a mandatory multiple choice before the algorithm runs (its own wording).
    with pytest.raises(QgsProcessingException, match="Incorrect parameter value for BANDS"):
        _run(_params(replica, tmp_path, BANDS=[]))


def test_empty_area_is_one_sentence(provider, replica, tmp_path):
    empty = QgsVectorLayer("Polygon?crs=EPSG:4326", "empty", "memory")
    with pytest.raises(QgsProcessingException, match="^AOI: the layer has no features with a geometry.$"):
        _run(_params(replica, tmp_path, AOI=empty))


@pytest.mark.headless
@pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")
def test_headless_run_writes_the_files(qgis_process, replica, tmp_path):
    assert "sentinel2:l3amosaic" in qgis_process.algorithms(), (
        "sentinel2:l3amosaic is not registered: add L3AMosaicAlgorithm to processing_provider/provider.py")
    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": json.loads(
        QgsGeometry.fromWkt(lonlat_rectangle(ACROSS)).asJson())}))
    out = tmp_path / "out"
    result = qgis_process.run_alg("sentinel2:l3amosaic", {
        "AOI": str(area), "START_MONTH": "2021-05", "END_MONTH": "2021-06", "BANDS": ["B4", "B3", "B2"],
        "URL": replica.root_url, "STACK": True, "OUTPUT_FOLDER": str(out)}).check()
    assert [os.path.basename(p) for p in result.results["OUTPUT_LAYERS"]] == [
        "s2_l3a_202105_truecolour.vrt", "s2_l3a_202106_truecolour.vrt"]
    report = _json(result.results["REPORT"])
    assert [m["status"] for m in report["months"]] == ["written", "written"]
    assert (out / "s2_l3a_202106_stack.tif").exists()

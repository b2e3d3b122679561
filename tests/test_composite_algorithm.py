"""sentinel2:composite through QGIS Processing and headless, against the local STAC API and COG server of
tests/composite_scenes.py."""

import json
import os

import composite_scenes as scenes_data
import pytest
from headless import qgis_process  # noqa: F401 (fixture)
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from test_composite import services  # noqa: F401 (fixture)

ALGORITHM = "sentinel2:composite"


def _run(params, context=None):
    import processing

    return processing.run(ALGORITHM, params, context=context, feedback=QgsProcessingFeedback())


def area_layer():
    layer = QgsVectorLayer(f"Polygon?crs=EPSG:{scenes_data.EPSG}", "area", "memory")
    xmin, ymin, xmax, ymax = scenes_data.AREA
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({xmin} {ymin}, {xmax} {ymin}, {xmax} {ymax}, {xmin} {ymax}, "
                                            f"{xmin} {ymin}))"))
    layer.dataProvider().addFeatures([feature])
    return layer


def params(url, out, **change):
    values = {"AOI": area_layer(), "START": "2023-06-01", "END": "2023-07-15", "PERIOD": "month",
              "BANDS": ["B2", "B3", "B4", "B8"], "CATALOG": "earth-search", "URL": url, "MAX_CLOUD": 100,
              "OUTPUT_FOLDER": str(out)}
    values.update(change)
    return values


def test_parameters_are_the_public_interface(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    assert [p.name() for p in algorithm.parameterDefinitions()] == [
        "AOI", "START", "END", "PERIOD", "BANDS", "CATALOG", "URL", "AUTH", "MAX_CLOUD", "METHOD", "RESOLUTION", "CRS",
        "KEEP_SNOW", "PARALLEL", "OUTPUT_AUTH", "OUTPUT_FOLDER"]
    assert [o.name() for o in algorithm.outputDefinitions()] == ["OUTPUT_FOLDER", "OUTPUT_LAYERS", "REPORT"]
    assert algorithm.parameterDefinition("METHOD").options() == ["median", "medoid", "best-pixel"]
    assert "best-pixel" in algorithm.shortHelpString() and "SCL" in algorithm.shortHelpString()


def test_composites_load_styled_with_their_report(provider, services, tmp_path):  # noqa: F811
    url, _ = services
    project = QgsProject()
    context = QgsProcessingContext()
    context.setProject(project)
    result = _run(params(url, tmp_path), context)
    assert result["OUTPUT_FOLDER"] == str(tmp_path) and result["REPORT"].endswith("composite_report.json")
    with open(result["REPORT"], encoding="utf-8") as handle:
        assert [p["period"] for p in json.load(handle)["periods"]] == ["2023-06", "2023-07"]
    assert sorted(os.path.basename(p) for p in result["OUTPUT_LAYERS"]) == sorted(
        f"composite_{m}_{kind}" for m in ("2023-06", "2023-07") for kind in ("truecolour.vrt", "count.tif"))
    for path, details in context.layersToLoadOnCompletion().items():
        layer = QgsRasterLayer(path, details.name)
        assert layer.isValid(), path
        project.addMapLayer(layer)
        details.postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
        expected = "multibandcolor" if path.endswith(".vrt") else "singlebandpseudocolor"
        assert layer.renderer().type() == expected
    assert [g.name() for g in project.layerTreeRoot().findGroups()] == ["Sentinel-2 composites"]


@pytest.mark.parametrize("change, words", [
    ({"PERIOD": "fortnight"}, "PERIOD: 'fortnight' is not month, 10days, all or a number of days."),
    ({"END": "2023-05-01"}, "END: the end (2023-05-01) is before the start (2023-06-01)."),
])
def test_bad_input_is_one_sentence_naming_the_parameter(provider, services, tmp_path, change, words):  # noqa: F811
    url, _ = services
    with pytest.raises(QgsProcessingException) as raised:
        _run(params(url, tmp_path / "out", **change))
    assert str(raised.value) == words and not os.path.exists(tmp_path / "out")


@pytest.mark.headless
def test_one_line_headless_run(qgis_process, services, tmp_path):  # noqa: F811
    url, _ = services
    area = tmp_path / "area.geojson"
    from osgeo import ogr

    area.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                    "geometry": json.loads(ogr.CreateGeometryFromWkb(scenes_data.area_wkb()).ExportToJson())}]}))
    result = qgis_process.run_alg(ALGORITHM, {"AOI": str(area), "START": "2023-06-01", "END": "2023-06-30",
                                              "METHOD": "best-pixel", "BANDS": ["B4", "B8"], "URL": url,
                                              "MAX_CLOUD": 100, "OUTPUT_FOLDER": str(tmp_path / "out")}).check()
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [f"composite_2023-06_{k}.tif" for k in ("B04", "B08", "count", "date")]
        + ["composite_report.json", "composite_report.html"])
    assert result.results["REPORT"] == str(tmp_path / "out" / "composite_report.json")

"""sentinel2:tiles through QGIS Processing (pytest-qgis)."""

import pytest
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
)


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.messages = []

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        self.messages.append(info)
        super().pushInfo(info)


def _layer(crs, *wkts):
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "aoi", "memory")
    features = []
    for wkt in wkts:
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def _run(params, feedback=None):
    import processing

    return processing.run("sentinel2:tiles", params, feedback=feedback or QgsProcessingFeedback())


def test_tiles_are_written_with_ids_and_epsg(provider, tmp_path):
    output = str(tmp_path / "tiles.gpkg")
    area = _layer("EPSG:4326", "POLYGON((1.2 43.4,1.8 43.4,1.8 43.8,1.2 43.8,1.2 43.4))")  # Toulouse
    result = _run({"AOI": area, "MINIMAL": False, "OUTPUT": output})
    written = QgsVectorLayer(result["OUTPUT"], "tiles", "ogr")
    assert written.isValid()
    rows = sorted((f["tile_id"], f["epsg"]) for f in written.getFeatures())
    assert ("31TCJ", 32631) in rows
    assert result["TILE_IDS"] == ",".join(tile_id for tile_id, _ in rows)
    assert written.crs().authid() == "EPSG:4326"


def test_area_in_a_projected_crs_is_reprojected(provider):
    # The same Toulouse box, in Web Mercator.
    area = _layer("EPSG:3857", "POLYGON((133583 5375000,200375 5375000,200375 5436000,133583 5436000,"
                               "133583 5375000))")
    result = _run({"AOI": area, "MINIMAL": True, "OUTPUT": "memory:"})
    assert result["TILE_IDS"] == "31TCJ"


def test_only_selected_features_count_when_there_is_a_selection(provider):
    area = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    for wkt in ("POINT(1.44 43.6)", "POINT(116.381 39.977)"):
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        area.dataProvider().addFeature(feature)
    assert _run({"AOI": area, "OUTPUT": "memory:"})["TILE_IDS"] == "31TCJ,50TMK"
    area.selectByIds([2])
    assert _run({"AOI": area, "OUTPUT": "memory:"})["TILE_IDS"] == "50TMK"


def test_invalid_geometry_is_repaired_and_said_so(provider):
    bowtie = _layer("EPSG:4326", "POLYGON((1.2 43.4,1.8 43.8,1.8 43.4,1.2 43.8,1.2 43.4))")
    feedback = RecordingFeedback()
    result = _run({"AOI": bowtie, "MINIMAL": True, "OUTPUT": "memory:"}, feedback)
    assert result["TILE_IDS"] == "31TCJ"
    assert "AOI: repaired 1 invalid geometry." in feedback.messages


def test_antimeridian_area_in_a_pacific_crs(provider):
    # PDC Mercator (EPSG:3832) is continuous across 180°: the box spans 178°E to 178°W around Fiji.
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject

    to_pacific = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"),
                                        QgsCoordinateReferenceSystem("EPSG:3832"), QgsProject.instance())
    x0 = to_pacific.transform(178, -18).x()
    x1 = x0 + (to_pacific.transform(179, -18).x() - x0) * 4
    y0, y1 = to_pacific.transform(178, -18).y(), to_pacific.transform(178, -17).y()
    area = _layer("EPSG:3832", f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))")
    ids = _run({"AOI": area, "MINIMAL": True, "OUTPUT": "memory:"})["TILE_IDS"].split(",")
    assert {i[:2] for i in ids} == {"60", "01"}


@pytest.mark.parametrize("wkts, message", [
    ((), "AOI: the layer has no features with a geometry."),
    (("POLYGON((0 85,1 85,1 86,0 86,0 85))",),
     "AOI: the area (85.00° to 86.00° latitude) lies outside the Sentinel-2 tiling grid, whose tiles reach from "
     "83.8°S to 84.7°N."),
])
def test_bad_areas_fail_with_one_sentence(provider, wkts, message):
    with pytest.raises(QgsProcessingException) as error:
        _run({"AOI": _layer("EPSG:4326", *wkts), "OUTPUT": "memory:"})
    assert str(error.value) == message


def test_provider_lists_the_algorithm_with_help(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById("sentinel2:tiles")
    assert algorithm is not None
    assert "MINIMAL" in algorithm.shortHelpString()
    assert [p.name() for p in algorithm.parameterDefinitions()] == ["AOI", "MINIMAL", "OUTPUT"]
    assert [o.name() for o in algorithm.outputDefinitions()] == ["OUTPUT", "TILE_IDS"]

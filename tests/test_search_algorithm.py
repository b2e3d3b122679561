"""sentinel2:search through QGIS Processing and qgis_process, against the local OData replica."""

import datetime as dt
import json
import os
import sys

import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer
from replicas import odata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import ROOT, find_qgis_process, qgis_process  # noqa: E402, F401

DEMO_AREA = os.path.join(ROOT, "data", "demo", "gers_toulouse.geojson")
TILES = ["30TYP", "31TCJ", "31TDJ"]


PRODUCTS = odata.generate_products(TILES, dt.date(2023, 6, 1), dt.date(2023, 7, 31), 5, ("L1C", "L2A"))


@pytest.fixture(scope="module")
def replica():
    server = odata.odata_test_server(odata.ODataReplica(PRODUCTS))
    yield server
    server.stop()


class Log(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.lines, self.warnings = [], []

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        self.lines.append(info)

    def pushWarning(self, warning):  # noqa: N802 (QGIS API name)
        self.warnings.append(warning)


def _run(params, feedback=None):
    import processing

    return processing.run("sentinel2:search", params, feedback=feedback or QgsProcessingFeedback())


def _area(wkt, crs="EPSG:4326"):
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt(wkt))
    layer.dataProvider().addFeature(feature)
    return layer


def test_max_results_says_how_many_the_catalogue_holds(provider, replica):
    params = {"CATALOG": "cdse", "URL": replica.odata_url, "TILES": ",".join(TILES), "START": "2023-06-01",
              "END": "2023-07-31", "LEVEL": "L1C", "OUTPUT": "memory:"}
    everything = _run(params)
    assert everything["MATCHED"] == everything["COUNT"] > 5
    log = Log()
    capped = _run(dict(params, MAX_RESULTS=5), log)
    assert capped["COUNT"] == capped["OUTPUT"].featureCount() == 5
    assert capped["MATCHED"] == everything["COUNT"]
    assert log.warnings == [f"5 of {everything['COUNT']:,} products shown; raise MAX_RESULTS to see them all."]
    exact = _run(dict(params, MAX_RESULTS=everything["COUNT"]), log)
    assert exact["MATCHED"] == exact["COUNT"] == everything["COUNT"] and len(log.warnings) == 1


def test_footprints_layer_has_the_schema_and_sorted_products(provider, replica, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "blake3", None)  # a QGIS without the package: the catalogue's MD5 is kept
    log = Log()
    result = _run({"CATALOG": "cdse", "URL": replica.odata_url, "AOI": DEMO_AREA, "START": "2023-06-01",
                   "END": "2023-06-30", "LEVEL": "L2A", "MAX_CLOUD": 60, "OUTPUT": str(tmp_path / "fp.gpkg"),
                   "GEOJSON": str(tmp_path / "fp.geojson")}, log)
    layer = QgsVectorLayer(result["OUTPUT"], "fp", "ogr")
    names = [f.name() for f in layer.fields() if f.name() != "fid"]
    assert names == ["id", "name", "provider", "platform", "level", "tile_id", "relative_orbit", "orbit_direction",
                     "sensing_start", "cloud_cover", "size_bytes", "online", "download_url", "checksum"]
    features = list(layer.getFeatures())
    assert result["COUNT"] == len(features) > 0
    assert result["TOTAL_BYTES"] == sum(f["size_bytes"] for f in features)
    assert all(f["level"] == "L2A" and f["cloud_cover"] <= 60 and f["provider"] == "cdse" for f in features)
    assert {f["tile_id"] for f in features} <= {"30TYP", "31TCJ"}  # 31TDJ lies east of the area
    times = [f["sensing_start"] for f in features]
    assert times == sorted(times)
    assert all(f["checksum"].startswith("MD5:") for f in features)
    assert any(line.startswith("Area sent to cdse: POLYGON((") for line in log.lines)
    with open(tmp_path / "fp.geojson", encoding="utf-8") as stream:
        collection = json.load(stream)
    assert [f["properties"]["identifier"] for f in collection["features"]] == [
        f["name"].replace(".SAFE", "") for f in features]


def test_footprint_geometry_is_kept_as_the_catalogue_gave_it(provider, replica):
    result = _run({"CATALOG": "cdse", "URL": replica.odata_url, "TILES": "31TCJ", "START": "2023-06-01",
                   "END": "2023-06-06", "LEVEL": "L1C", "OUTPUT": "memory:"})
    feature = next(result["OUTPUT"].getFeatures())
    served = next(p for p in PRODUCTS if p["Name"] == feature["name"])["GeoFootprint"]
    assert served["type"] == "Polygon"
    ring = feature.geometry().asMultiPolygon()[0][0]
    assert [(p.x(), p.y()) for p in ring] == [tuple(xy) for xy in served["coordinates"][0]]


@pytest.mark.parametrize("params, message", [
    ({"START": "2023-07-01", "END": "2023-06-01", "TILES": "31TCJ"},
     "END: the end (2023-06-01) is before the start (2023-07-01)."),
    ({"MAX_CLOUD": 120, "TILES": "31TCJ"}, "MAX_CLOUD: 120 is outside 0–100 %."),
    ({"TILES": "31TCJ,99ZZZ"}, "TILES: '99ZZZ' is not a Sentinel-2 tile id (expected e.g. 31TCJ)."),
    ({}, "AOI: give an area of interest, a list of TILES, or both."),
])
def test_bad_input_is_one_sentence(provider, replica, params, message):
    base = {"CATALOG": "cdse", "URL": replica.odata_url, "START": "2023-06-01", "END": "2023-06-30",
            "OUTPUT": "memory:"}
    with pytest.raises(QgsProcessingException) as error:
        _run({**base, **params})
    assert str(error.value) == message


def test_empty_area_is_one_sentence(provider, replica):
    empty = QgsVectorLayer("Polygon?crs=EPSG:4326", "empty", "memory")
    with pytest.raises(QgsProcessingException, match="^AOI: the layer has no features with a geometry.$"):
        _run({"CATALOG": "cdse", "URL": replica.odata_url, "AOI": empty, "OUTPUT": "memory:"})


def test_unreachable_catalogue_names_the_service(provider):
    with pytest.raises(QgsProcessingException) as error:
        _run({"CATALOG": "cdse", "URL": "http://127.0.0.1:9/odata/v1", "TILES": "31TCJ", "OUTPUT": "memory:"})
    assert "Copernicus Data Space" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.headless
@pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")
def test_headless_search_writes_footprints(qgis_process, replica, tmp_path):
    output = tmp_path / "footprints.gpkg"
    result = qgis_process.run_alg("sentinel2:search", {
        "CATALOG": "cdse", "URL": replica.odata_url, "AOI": DEMO_AREA, "START": "2023-06-01", "END": "2023-06-30",
        "LEVEL": "L1C", "PLATFORM": "S2A", "OUTPUT": str(output), "GEOJSON": str(tmp_path / "fp.geojson")}).check()
    count = int(result.results["COUNT"])
    assert count > 0 and output.exists()
    with open(tmp_path / "fp.geojson", encoding="utf-8") as stream:
        features = json.load(stream)["features"]
    assert len(features) == count and all(f["properties"]["platform"] == "S2A" for f in features)

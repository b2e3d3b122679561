"""sentinel2:tiles run with qgis_process.bin exactly as an HPC user would."""

import json
import os
import sys

import pytest
from osgeo import ogr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import ROOT, find_qgis_process, qgis_process  # noqa: E402, F401

pytestmark = [pytest.mark.headless,
              pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")]

DEMO_AREA = os.path.join(ROOT, "data", "demo", "gers_toulouse.geojson")


def test_tiles_written_to_a_geopackage(qgis_process, tmp_path):
    output = tmp_path / "tiles.gpkg"
    result = qgis_process.run_alg("sentinel2:tiles", {"AOI": DEMO_AREA, "MINIMAL": True, "OUTPUT": str(output)})
    result.check()
    assert result.results["TILE_IDS"] == "30TYP,31TCJ"
    dataset = ogr.Open(str(output))
    layer = dataset.GetLayer(0)
    rows = sorted((f.GetField("tile_id"), f.GetField("epsg")) for f in layer)
    assert rows == [("30TYP", 32630), ("31TCJ", 32631)]
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "4326"


def test_area_across_the_antimeridian_from_a_geojson_file(qgis_process, tmp_path):
    area = tmp_path / "fiji.geojson"
    area.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {},
        "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[178.5, -18.5], [180, -18.5], [180, -17.5], [178.5, -17.5], [178.5, -18.5]]],
            [[[-180, -18.5], [-179.5, -18.5], [-179.5, -17.5], [-180, -17.5], [-180, -18.5]]]]}}]}))
    result = qgis_process.run_alg("sentinel2:tiles", {"AOI": str(area), "MINIMAL": False,
                                                      "OUTPUT": str(tmp_path / "t.gpkg")}).check()
    tiles = result.results["TILE_IDS"].split(",")
    assert {tile[:2] for tile in tiles} == {"60", "01"}
    assert "60KYE" in tiles and "01KAV" in tiles


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_area_outside_the_grid_fails_with_one_sentence_once_and_writes_nothing(qgis_process, tmp_path,
                                                                                 json_output):
    area = tmp_path / "pole.geojson"
    area.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[0, 85], [10, 85], [10, 88], [0, 88], [0, 85]]]}}))
    output = tmp_path / "tiles.gpkg"
    result = qgis_process.run_alg("sentinel2:tiles", {"AOI": str(area), "OUTPUT": str(output)},
                                  json_output=json_output)
    assert result.returncode != 0
    sentence = ("AOI: the area (85.00° to 88.00° latitude) lies outside the Sentinel-2 tiling grid, "
                "whose tiles reach from 83.8°S to 84.7°N.")
    assert (result.stdout + result.stderr).count(sentence) == 1, result.stderr
    assert sentence in result.stderr  # where scripts look for it
    assert "Traceback" not in result.output
    assert not output.exists()

"""Engine tests of the Sentinel-2 tiling grid and tile covers (no QGIS)."""

import itertools
import json
import os
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import FIXTURES, PLUGIN_PATH
from osgeo import ogr

from sentinel2_pipeline.plugin.engine import geometry as geom
from sentinel2_pipeline.plugin.engine import grid, setcover
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError

WORLD_MAP = "/usr/share/qgis/resources/data/world_map.gpkg"


@pytest.mark.parametrize("tile_id, epsg, ulx, uly", [
    ("31TCJ", 32631, 300000, 4900020),   # the design brief
    ("34UDD", 32634, 399960, 5900040),   # fixture MTD_MSIL1C (T34UDD)
    ("34UCF", 32634, 300000, 6100020),
    ("23LLF", 32723, 300000, 8600020),   # southern hemisphere: snapping counted from the equator
    ("21JUK", 32721, 300000, 7000000),
    ("33XVP", 32633, 399960, 9400020),   # Svalbard zone, square reaching past 84°N
    ("T31TCJ", 32631, 300000, 4900020),  # the product-name form
])
def test_reference_tile_corners(tile_id, epsg, ulx, uly):
    tile = grid.parse_tile_id(tile_id)
    assert (tile.epsg, tile.ulx, tile.uly) == (epsg, ulx, uly)


def test_corner_matches_real_tile_metadata():
    root = ET.parse(os.path.join(FIXTURES, "s2_metadata", "MTD_TL_L1C_T23LLF_marujore-sensor-harmonization.xml"))
    code = root.find(".//HORIZONTAL_CS_CODE").text
    position = root.find(".//Geoposition[@resolution='10']")
    tile = grid.parse_tile_id("23LLF")
    assert code == f"EPSG:{tile.epsg}"
    assert (float(position.find("ULX").text), float(position.find("ULY").text)) == (tile.ulx, tile.uly)


def test_footprint_matches_real_product_metadata():
    with open(os.path.join(FIXTURES, "s2_metadata", "MTD_MSIL1C_vhgauto-turb.xml"), encoding="utf-8") as f:
        text = f.read()
    values = [float(v) for v in re.search(r"<EXT_POS_LIST>([^<]+)", text).group(1).split()]
    product_corners = list(zip(values[1::2], values[0::2]))[:4]  # (lon, lat): UL, UR, LR, LL
    lons, lats = grid.tile_outline(grid.parse_tile_id("34UDD"), per_edge=1)
    for (lon, lat), expected in zip(zip(lons, lats), product_corners):
        assert lon == pytest.approx(expected[0], abs=1e-6) and lat == pytest.approx(expected[1], abs=1e-6)


def _earth_search_items():
    with open(os.path.join(FIXTURES, "earthsearch_v1_search_sentinel-2-l1c.json"), encoding="utf-8") as f:
        yield from json.load(f)["features"]
    name = "earthsearch_v1_sentinel-2-l2a_item_S2A_39QTA_20230628_0_L2A.CONVERTED_from_python_literal.json"
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        yield json.load(f)


def test_tiles_of_catalogue_items_have_their_grid_origin():
    for item in _earth_search_items():
        p = item["properties"]
        tile_id = f"{p['mgrs:utm_zone']:02d}{p['mgrs:latitude_band']}{p['mgrs:grid_square']}"
        tile = grid.parse_tile_id(tile_id)
        transforms = [a["proj:transform"] for a in item["assets"].values() if "proj:transform" in a]
        assert transforms, tile_id
        for t in transforms:
            assert (t[2], t[5]) == (tile.ulx, tile.uly), tile_id
        assert tile.epsg == p["proj:epsg"]


@pytest.mark.parametrize("lon, lat, expected, not_expected", [
    (116.381, 39.977, "50TMK", "50SMK"),     # square across 40°N named after the band of its centre
    (-103.004715, 31.96212, "13SFR", "13RFR"),
])
def test_square_across_a_band_boundary_is_one_tile(lon, lat, expected, not_expected):
    tiles = grid.tiles_for_area(f"POINT({lon} {lat})").tiles
    assert [t.tile_id for t in tiles] == [expected]
    with pytest.raises(ParameterError, match=f"'{not_expected}' is not in the Sentinel-2 tiling grid"):
        grid.parse_tile_id(not_expected)


def test_norway_exception_puts_western_norway_in_zone_32():
    assert [t.tile_id for t in grid.tiles_for_area("POINT(5.32 60.39)").tiles] == ["32VKN"]  # Bergen
    assert {t.zone for t in grid.tiles_for_area("POINT(4.5 60.0)").tiles} == {32}


def test_svalbard_has_no_even_zones():
    svalbard = "POLYGON((10 76,30 76,30 80,10 80,10 76))"
    tiles = grid.tiles_for_area(svalbard).tiles
    assert {t.zone for t in tiles if t.tile_id[2] == "X"} <= {31, 33, 35, 37}
    assert "33XWG" in [t.tile_id for t in grid.tiles_for_area("POINT(15.6 78.2)").tiles]  # Longyearbyen


def test_antimeridian_area_written_either_way_gives_the_same_tiles():
    wrapped = grid.tiles_for_area("POLYGON((177 -19,182 -19,182 -16,177 -16,177 -19))", minimal=True)
    split = grid.tiles_for_area("MULTIPOLYGON(((177 -19,180 -19,180 -16,177 -16,177 -19)),"
                                "((-180 -19,-178 -19,-178 -16,-180 -16,-180 -19)))", minimal=True)
    jumping = grid.tiles_for_area("POLYGON((177 -19,-178 -19,-178 -16,177 -16,177 -19))", minimal=True)
    assert wrapped.tiles == split.tiles == jumping.tiles
    assert {t.zone for t in wrapped.tiles} == {60, 1}
    assert wrapped.uncovered_share == 0


def test_tile_across_the_antimeridian_is_split_in_two_parts():
    tile = next(t for t in grid.tiles_for_area("POINT(179.95 65)").tiles if t.zone == 1)
    geometry = ogr.CreateGeometryFromWkt(grid.tile_geometry_wkt(tile))
    assert geometry.GetGeometryCount() == 2
    lon_min, lon_max, _, _ = geometry.GetEnvelope()
    assert lon_min == pytest.approx(-180) and lon_max == pytest.approx(180)


def test_area_outside_the_grid_is_one_clear_sentence():
    with pytest.raises(ParameterError) as error:
        grid.tiles_for_area("POLYGON((0 85,1 85,1 86,0 86,0 85))")
    assert str(error.value) == ("AOI: the area (85.00° to 86.00° latitude) lies outside the Sentinel-2 tiling "
                                "grid, which covers 80°S to 84°N.")
    with pytest.raises(ParameterError, match="^AOI: the area is empty.$"):
        grid.tiles_for_area("POLYGON EMPTY")


def test_area_partly_beyond_84_north_reports_the_uncovered_share():
    selection = grid.tiles_for_area("POLYGON((10 83.5,12 83.5,12 85,10 85,10 83.5))")
    assert 0.1 < selection.uncovered_share < 0.4
    assert any("outside the Sentinel-2 grid" in note for note in selection.notes)


def _germany():
    dataset = ogr.Open(WORLD_MAP)  # keep a reference: a layer outliving its dataset crashes GDAL
    layer = dataset.GetLayerByName("countries")
    layer.SetAttributeFilter("NAME = 'Germany'")
    feature = layer.GetNextFeature()
    return feature.GetGeometryRef().Clone()


def _covers(tiles, area):
    union = ogr.Geometry(ogr.wkbMultiPolygon)
    for tile in tiles:
        lons, lats = grid.tile_outline(tile)
        union = union.Union(geom.polygon(zip(lons, lats)))
    return area.Difference(union).GetArea() <= area.GetArea() * 1e-9


def test_minimal_cover_of_germany_covers_it_with_fewer_tiles():
    germany = _germany()
    everything = grid.tiles_for_area(germany)
    minimal = grid.tiles_for_area(germany, minimal=True)
    assert set(minimal.tiles) < set(everything.tiles)
    assert _covers(minimal.tiles, germany)
    assert minimal.optimal is True
    assert any(t.tile_id == "32UPU" for t in everything.tiles)  # Munich


def test_minimal_cover_is_as_small_as_brute_force():
    # A 1.2° x 1° area at the 0°E zone boundary: candidates from zones 30 and 31 overlap irregularly.
    area = ogr.CreateGeometryFromWkt("POLYGON((-0.7 43.2,0.5 43.2,0.5 44.2,-0.7 44.2,-0.7 43.2))")
    candidates = grid.tiles_for_area(area).tiles
    minimal = grid.tiles_for_area(area, minimal=True).tiles
    assert _covers(minimal, area)
    smallest = next(size for size in range(1, len(candidates) + 1)
                    if any(_covers(c, area) for c in itertools.combinations(candidates, size)))
    assert len(minimal) == smallest


def test_set_cover_solver_beats_greedy_and_matches_brute_force():
    rng = random.Random(7)
    for _ in range(60):
        n_sets = rng.randint(3, 9)
        elements = [rng.randint(1, 2 ** n_sets - 1) for _ in range(rng.randint(3, 14))]
        chosen, optimal = setcover.minimum_cover(elements, n_sets)
        mask = sum(1 << i for i in chosen)
        assert optimal and all(e & mask for e in elements)
        smallest = next(k for k in range(n_sets + 1) for combo in itertools.combinations(range(n_sets), k)
                        if all(e & sum(1 << i for i in combo) for e in elements))
        assert len(chosen) == smallest


def test_cancel_stops_the_search():
    with pytest.raises(Cancelled):
        grid.tiles_for_area(_germany(), minimal=True, is_cancelled=lambda: True)


def test_tile_lists_are_parsed_and_bad_ids_named():
    assert [t.tile_id for t in grid.parse_tile_list("31TCJ, t31tdj 31TCJ;34UDD")] == ["31TCJ", "31TDJ", "34UDD"]
    with pytest.raises(ParameterError, match=r"^TILES: '31TCI' is not a Sentinel-2 tile id"):
        grid.parse_tile_list("31TCJ,31TCI")


def test_engine_never_imports_qgis():
    code = (
        "import sys\n"
        f"sys.path.insert(0, {PLUGIN_PATH!r})\n"
        "import importlib, pkgutil\n"
        "import sentinel2_pipeline.plugin.engine as engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'sentinel2_pipeline.plugin.engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "from sentinel2_pipeline.plugin.engine import grid\n"
        "grid.tiles_for_area('POINT(1.44 43.6)', minimal=True)\n"
        "print(sorted(k for k in sys.modules if k == 'qgis' or k.startswith('qgis.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

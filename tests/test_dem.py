"""The DEM engine (plugin.engine.dem): which tiles, from where, merged how, and the Sen2Cor folder.

Tiles are synthetic but on the real grids (tests/demdata.py); downloads come from a local HTTP server that serves
them in the public layouts and misbehaves on purpose.
"""

import math
import os
import random

import numpy as np
import pytest
from demdata import (
    NODATA,
    copernicus_tile,
    expected_mosaic,
    lonlat_of_pixel_centres,
    pattern,
    plane,
    read,
    seam_indices,
    srtm_tile,
    write_tile,
    zipped,
)
from osgeo import gdal, osr
from servers import faults, http_server  # noqa: F401

from sentinel2_pipeline.plugin.engine import dem, grid, http
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, ServiceError


def names(cells):
    return [cell.name for cell in cells]


@pytest.fixture
def session():
    with http.new_session(retries=0) as session:  # the transfer engine does the retrying; keep failures fast
        yield session


# --- names and cells ---------------------------------------------------------------------------------------


def test_cell_names_follow_the_published_formulas():
    rng = random.Random(5)
    for _ in range(500):
        lon, lat = rng.uniform(-180, 179.999), rng.uniform(-60, 59.999)
        cell = dem.Cell(dem.SRTM, math.floor(lon / 5) * 5, math.floor(lat / 5) * 5)
        assert cell.name == f"srtm_{int((lon + 180) / 5) + 1:02d}_{int((60 - lat) / 5) + 1:02d}"
    assert dem.Cell(dem.COP30, 6, 45).name == "Copernicus_DSM_COG_10_N45_00_E006_00_DEM"
    assert dem.Cell(dem.COP90, -6, -1).name == "Copernicus_DSM_COG_30_S01_00_W006_00_DEM"
    assert dem.Cell(dem.COP30, -180, 0).name == "Copernicus_DSM_COG_10_N00_00_W180_00_DEM"


def test_file_names_and_remote_layouts():
    srtm, copernicus = dem.Cell(dem.SRTM, 5, 40), dem.Cell(dem.COP30, 6, 45)
    assert srtm.sen2cor_file == "srtm_38_04.tif"
    assert dem.tile_url(dem.SRTM_URL, srtm) == dem.SRTM_URL + "srtm_38_04.zip"
    assert copernicus.sen2cor_file == "Copernicus_DSM_10_N45_00_E006_00_DEM.tif"  # CDSE DGED name, flat
    assert dem.tile_url(dem.COP30_URL, copernicus) == (
        "https://copernicus-dem-30m.s3.eu-central-1.amazonaws.com/Copernicus_DSM_COG_10_N45_00_E006_00_DEM/"
        "Copernicus_DSM_COG_10_N45_00_E006_00_DEM.tif")
    assert dem.tile_url("https://mirror.example/dem/{name}.tif", srtm) == "https://mirror.example/dem/srtm_38_04.tif"


def test_copernicus_tiles_narrow_beyond_50_degrees():
    assert dem.Cell(dem.COP30, 6, 49).nominal_resolution() == pytest.approx((1 / 3600, 1 / 3600))
    assert dem.Cell(dem.COP30, 6, 50).nominal_resolution() == pytest.approx((1.5 / 3600, 1 / 3600))
    assert dem.Cell(dem.COP90, 6, -51).nominal_resolution() == pytest.approx((4.5 / 3600, 3 / 3600))
    assert dem.Cell(dem.COP30, 6, 80).nominal_resolution() == pytest.approx((5 / 3600, 1 / 3600))


def test_tile_that_crosses_5_degree_boundaries_both_ways():
    assert names(dem.cells_for_tiles(dem.SRTM, ["31TFK"])) == ["srtm_37_03", "srtm_38_03", "srtm_37_04",
                                                              "srtm_38_04"]


def test_two_corner_lookup_misses_a_tile_the_outline_finds():
    # 04RDP's lower-left corner is at 159.993°W but its upper-left corner at 160.0014°W: the UTM edge is not a
    # meridian, so the cell west of 160°W is needed although both corners Sen2Cor looks at are east of it.
    tile = grid.parse_tile_id("04RDP")
    assert dem.sen2cor_srtm_names(tile) == ["srtm_05_07"]
    assert names(dem.cells_for_tiles(dem.SRTM, [tile])) == ["srtm_04_07", "srtm_05_07"]
    assert "Copernicus_DSM_COG_10_N26_00_W161_00_DEM" in names(dem.cells_for_tiles(dem.COP30, [tile]))


def test_antimeridian_tile_gets_cells_on_both_sides_in_one_frame():
    cells = dem.cells_for_tiles(dem.SRTM, ["01KAV"])  # 180.8°W to 179.7°W
    assert [(c.name, c.lon0) for c in cells] == [("srtm_72_16", -185), ("srtm_01_16", -180)]
    assert dem.sen2cor_srtm_names(grid.parse_tile_id("01KAV")) == ["srtm_01_16", "srtm_72_16"]
    copernicus = names(dem.cells_for_tiles(dem.COP90, ["01KAV"]))
    assert "Copernicus_DSM_COG_30_S19_00_E179_00_DEM" in copernicus
    assert "Copernicus_DSM_COG_30_S19_00_W180_00_DEM" in copernicus


def test_aoi_split_at_the_antimeridian_is_one_area():
    fiji = ("MULTIPOLYGON(((178.5 -18.5,180 -18.5,180 -17.5,178.5 -17.5,178.5 -18.5)),"
            "((-180 -18.5,-179.5 -18.5,-179.5 -17.5,-180 -17.5,-180 -18.5)))")
    area = dem.study_area(fiji)
    assert area.envelope()[1] - area.envelope()[0] == pytest.approx(2.0)
    assert names(dem.cells_for_area(dem.SRTM, area)) == ["srtm_72_16", "srtm_01_16"]


def test_an_area_touching_a_cell_only_at_its_edge_does_not_need_it():
    area = dem.study_area("POLYGON((5 40.5,6 40.5,6 41,5 41,5 40.5))")
    assert names(dem.cells_for_area(dem.SRTM, area)) == ["srtm_38_04"]


def test_srtm_has_no_data_beyond_60_north():
    with pytest.raises(ParameterError) as error:
        dem.plan(dem.SRTM, "/tmp/x.tif", aoi="POLYGON((10 61,11 61,11 62,10 62,10 61))")
    assert str(error.value) == (
        "DEM: CGIAR-CSI SRTM has no data beyond 60°N and 56°S, and the area lies between 61.00° and 62.00° "
        "latitude; choose copernicus-30 or copernicus-90, which cover the whole globe.")
    partly = dem.plan(dem.SRTM, "/tmp/x.tif", aoi="POLYGON((10 59,11 59,11 61,10 61,10 59))")
    assert names(partly.cells) == ["srtm_39_01"]
    assert "beyond 60°N or 56°S" in partly.notes[0]


# --- validation ---------------------------------------------------------------------------------------------


def rgb_image(path):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 10, 10, 3, gdal.GDT_Byte)
    dataset.SetGeoTransform((5, 0.1, 0, 45, 0, -0.1))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    dataset.SetProjection(srs.ExportToWkt())
    dataset = None
    return str(path)


def utm_dem(path):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 10, 10, 1, gdal.GDT_Int16)
    dataset.SetGeoTransform((600000, 1000, 0, 5000000, 0, -1000))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    dataset.SetProjection(srs.ExportToWkt())
    dataset = None
    return str(path)


def test_bad_requests_fail_with_one_sentence(tmp_path):
    out = str(tmp_path / "dem.tif")
    text = tmp_path / "notes.txt"
    text.write_text("not a raster")
    cases = [
        ({}, "AOI: no area was given; give an AOI layer or Sentinel-2 tile ids in TILES."),
        ({"tiles": "31TFK,99ZZZ"}, "TILES: '99ZZZ' is not a Sentinel-2 tile id (expected e.g. 31TCJ)."),
        ({"tiles": "31TFK", "dem": "srtm"},
         "DEM: 'srtm' is not a known DEM; choose one of srtm-cgiar, copernicus-30, copernicus-90."),
        ({"tiles": "31TFK", "output": str(tmp_path / "dem.png")},
         "OUTPUT: dem.png is not a GeoTIFF name; the merged DEM is written as GeoTIFF (.tif)."),
        ({"tiles": "31TFK", "input_rasters": [str(text)]}, f"INPUT_RASTERS: cannot open {text} as a raster."),
        ({"tiles": "31TFK", "input_rasters": [rgb_image(tmp_path / "rgb.tif")]},
         "INPUT_RASTERS: rgb.tif has 3 bands; a DEM has one band of heights."),
        ({"tiles": "31TFK", "url": "ftp://example.org/"},
         "URL: 'ftp://example.org/' is not an http(s) address of a folder of DEM tiles."),
    ]
    for arguments, message in cases:
        arguments = {"dem": dem.SRTM, "output": out, **arguments}
        with pytest.raises(ParameterError) as error:
            dem.plan(arguments.pop("dem"), arguments.pop("output"), **arguments)
        assert str(error.value) == message
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "rgb.tif"]  # validation writes nothing


def test_rasters_in_mixed_or_projected_crs_are_refused(tmp_path):
    geographic = srtm_tile(tmp_path, dem.Cell(dem.SRTM, 5, 40))
    utm = utm_dem(tmp_path / "utm.tif")
    with pytest.raises(ParameterError) as error:
        dem.plan(dem.SRTM, str(tmp_path / "o.tif"), tiles="31TFK", input_rasters=[geographic, utm])
    assert str(error.value) == (
        "INPUT_RASTERS: the rasters are in different coordinate reference systems (srtm_38_04.tif: EPSG:4326, "
        "utm.tif: EPSG:32631); reproject them to EPSG:4326 first.")
    with pytest.raises(ParameterError) as error:
        dem.plan(dem.SRTM, str(tmp_path / "o.tif"), tiles="31TFK", input_rasters=[utm])
    assert "utm.tif is in EPSG:32631; DEM tiles are merged in geographic WGS 84" in str(error.value)


def test_wgs84_named_differently_is_the_same_crs(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TFK"])
    paths = [srtm_tile(tmp_path, cell) for cell in cells]
    dataset = gdal.Open(paths[0], gdal.GA_Update)
    dataset.SetProjection('GEOGCS["WGS84 lat/lon",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
                          'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]')  # no EPSG code
    dataset = None
    work = dem.plan(dem.SRTM, str(tmp_path / "o.tif"), tiles="31TFK", input_rasters=paths)
    assert len(work.local) == 4 and not work.downloads


def test_rasters_that_do_not_cover_the_area_name_what_is_missing(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TFK"])
    paths = [srtm_tile(tmp_path, cell) for cell in cells[:2]]  # the two northern tiles only
    with pytest.raises(ParameterError) as error:
        dem.plan(dem.SRTM, str(tmp_path / "o.tif"), tiles="31TFK", input_rasters=paths)
    assert str(error.value) == (
        "INPUT_RASTERS: the rasters do not cover the area in 2 DEM tile(s): srtm_37_04, srtm_38_04; add those "
        "tiles, or give URL to download them.")
    far = srtm_tile(tmp_path, dem.Cell(dem.SRTM, 100, 0))
    with pytest.raises(ParameterError) as error:
        dem.plan(dem.SRTM, str(tmp_path / "o.tif"), tiles="31TFK", input_rasters=[far])
    assert str(error.value).startswith("INPUT_RASTERS: none of the 1 rasters overlaps the area (longitude 4.")


# --- merging ------------------------------------------------------------------------------------------------


def merge(dem_key, tmp_path, sources, **kwargs):
    work = dem.plan(dem_key, str(tmp_path / "dem.tif"), input_rasters=sources, **kwargs)
    return work, dem.build(work)


def test_merged_geotiff_keeps_every_source_value_across_the_seams(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TFK"])
    sources = [srtm_tile(tmp_path, cell, sea=cell.name == "srtm_37_04") for cell in cells]
    _, result = merge(dem.SRTM, tmp_path, sources, tiles="31TFK")
    merged, transform, nodata = read(result.output)
    assert transform == pytest.approx((-0.025, 0.05, 0, 50.025, 0, -0.05))  # 0°E-10°E, 40°N-50°N, half-pixel
    assert merged.shape == (200, 200) and nodata == NODATA
    assert np.array_equal(merged, expected_mosaic(result.output, sources))
    seams = seam_indices(200, 100)
    for source, (row0, col0) in zip(sources, [(0, 0), (0, 100), (100, 0), (100, 100)]):
        values, _, _ = read(source)
        rows = [r - row0 for r in seams if row0 <= r < row0 + 100]
        cols = [c - col0 for c in seams if col0 <= c < col0 + 100]
        assert np.array_equal(merged[row0:row0 + 100][:, [c + col0 for c in cols]], values[:, cols])
        assert np.array_equal(merged[[r + row0 for r in rows], col0:col0 + 100], values[rows, :])
    assert (merged[100:, :50] == NODATA).all() and (merged != NODATA).sum() == 200 * 200 - 100 * 50
    assert result.dem_tiles == ["srtm_37_03", "srtm_38_03", "srtm_37_04", "srtm_38_04"]


def test_merged_geotiff_is_tiled_compressed_int16(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TCJ"])
    _, result = merge(dem.SRTM, tmp_path, [srtm_tile(tmp_path, c) for c in cells], tiles="31TCJ")
    dataset = gdal.Open(result.output)
    band = dataset.GetRasterBand(1)
    structure = dataset.GetMetadata("IMAGE_STRUCTURE")
    assert gdal.GetDataTypeName(band.DataType) == "Int16" and band.GetNoDataValue() == NODATA
    assert structure["COMPRESSION"] == "DEFLATE" and structure["PREDICTOR"] == "2"
    assert band.GetBlockSize() == [256, 256]
    assert sorted(os.listdir(tmp_path)) == ["dem.tif", "srtm_37_04.tif"]  # no .part, no work folder left


def test_copernicus_float_heights_are_rounded_to_whole_metres(tmp_path):
    cells = dem.cells_for_tiles(dem.COP30, ["04RDP"])
    sources = [copernicus_tile(tmp_path, cell, pixels=600) for cell in cells]
    _, result = merge(dem.COP30, tmp_path, sources, tiles="04RDP")
    merged, transform, _ = read(result.output)
    half = 0.5 / 600
    assert transform == pytest.approx((-161 - half, 1 / 600, 0, 27 + half, 0, -1 / 600))
    assert merged.shape == (1200, 1800)
    values, _, _ = read(sources[0])
    assert np.array_equal(merged[:600, :600], np.floor(values + 0.5))  # x.25 m -> x m
    assert np.array_equal(merged, expected_mosaic(result.output, sources))


def test_tiles_of_different_widths_go_on_the_finest_grid_with_nearest_neighbour(tmp_path):
    # 31UFR reaches from 49.5°N to 50.5°N: Copernicus tiles north of 50° have 2/3 of the columns.
    cells = dem.cells_for_tiles(dem.COP30, ["31UFR"])
    assert {c.lat0 for c in cells} == {49, 50}
    sources = [copernicus_tile(tmp_path, cell, pixels=60) for cell in cells]
    work, result = merge(dem.COP30, tmp_path, sources, tiles="31UFR")
    merged, transform, _ = read(result.output)
    assert transform[1] == pytest.approx(1 / 60)
    assert np.array_equal(merged, expected_mosaic(result.output, sources))
    assert any("resampled with nearest neighbour" in note for note in result.notes)


def test_antimeridian_mosaic_is_continuous_across_180(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["01KAV"])
    sources = [srtm_tile(tmp_path, cell) for cell in cells]
    work, result = merge(dem.SRTM, tmp_path, sources, tiles="01KAV")
    merged, transform, _ = read(result.output)
    assert transform[0] == pytest.approx(-185.025) and merged.shape == (100, 200)
    assert [(os.path.basename(r.path), r.shift) for r in work.local] == [("srtm_72_16.tif", -360.0),
                                                                        ("srtm_01_16.tif", 0.0)]
    assert np.array_equal(merged, expected_mosaic(result.output, [(r.path, r.shift) for r in work.local]))
    assert (merged != NODATA).all()


@pytest.mark.parametrize("tile_id, centre", [("31TFK", (5.0, 45.0)), ("01KAV", (-180.0, -18.5))])
def test_reprojection_to_the_tiles_utm_rectangle(tmp_path, tile_id, centre):
    tile = grid.parse_tile_id(tile_id)
    heights = plane(*centre)
    sources = [srtm_tile(tmp_path, cell, pixels=400, heights=heights) for cell in dem.cells_for_tiles(dem.SRTM,
                                                                                                     [tile])]
    _, result = merge(dem.SRTM, tmp_path, sources, tiles=tile_id, reproject_to=tile_id)
    warped, transform, _ = read(result.output)
    dataset = gdal.Open(result.output)
    assert osr.SpatialReference(wkt=dataset.GetProjection()).GetAuthorityCode(None) == str(tile.epsg)
    assert transform == (tile.ulx, 90.0, 0.0, tile.uly, 0.0, -90.0) and warped.shape == (1220, 1220)
    lons, lats = lonlat_of_pixel_centres(result.output)
    # A plane survives bilinear resampling: only the two roundings to whole metres remain.
    assert np.abs(warped - heights(lons, lats)).max() <= 1.0 + 1e-6


def test_later_input_rasters_win_where_they_overlap(tmp_path):
    cell = dem.Cell(dem.SRTM, 0, 40)
    base = srtm_tile(tmp_path, cell)
    # The patch has nodata in its west half: there the base shows through.
    patch = write_tile(tmp_path / "patch.tif", 1.0, 44.0, 20, 20, 0.05, 0.05, heights=lambda x, y: 0 * x + 0 * y - 999,
                       sea=True)
    _, result = merge(dem.SRTM, tmp_path, [base, patch], tiles="31TCJ")
    merged, _, _ = read(result.output)
    assert (merged == -999).sum() == 200 and (merged != NODATA).all()  # the pattern never goes below -100 m
    assert np.array_equal(merged, expected_mosaic(result.output, [base, patch]))


def cgiar_neighbours(tmp_path, pixels=100):
    """srtm_38_03 over srtm_38_04 as CGIAR publishes them: one pixel more than 5° each way, so the north tile's
    last row is the south tile's first row (the same heights: both come from the same postings)."""
    res = 5.0 / pixels
    return [write_tile(tmp_path / f"{c.name}.tif", c.west, c.lat0 + 5, pixels + 1, pixels + 1, res, res,
                       options=()) for c in dem.cells_for_tiles(dem.SRTM, ["31TGK"])]


def punch(path, row, columns):
    dataset = gdal.Open(str(path), gdal.GA_Update)
    band = dataset.GetRasterBand(1)
    values = band.ReadAsArray()
    values[row, columns] = NODATA
    band.WriteArray(values)
    dataset = None


def test_cgiar_neighbours_sharing_a_row_merge_to_every_height(tmp_path):
    north, south = cgiar_neighbours(tmp_path)
    _, result = merge(dem.SRTM, tmp_path, [north, south], tiles="31TGK")
    merged, _, _ = read(result.output)
    assert np.array_equal(merged, expected_mosaic(result.output, [north, south]))
    assert (merged != NODATA).all()


def test_holes_in_a_shared_row_show_the_neighbours_heights(tmp_path):
    # Either tile may be drawn last: holes in both copies of the row, at different places, must all be filled.
    north, south = cgiar_neighbours(tmp_path)
    punch(north, -1, slice(0, 30))
    punch(south, 0, slice(60, 90))
    _, result = merge(dem.SRTM, tmp_path, [north, south], tiles="31TGK")
    merged, _, _ = read(result.output)
    assert np.array_equal(merged, expected_mosaic(result.output, [north, south]))
    assert (merged != NODATA).all()


def test_gdal_cache_is_bounded_while_writing_and_restored(tmp_path):
    seen = []
    before = gdal.GetCacheMax()
    cells = dem.cells_for_tiles(dem.SRTM, ["31TCJ"])
    work = dem.plan(dem.SRTM, str(tmp_path / "dem.tif"), tiles="31TCJ",
                    input_rasters=[srtm_tile(tmp_path, c) for c in cells])
    dem.build(work, progress=lambda fraction, message="": seen.append(gdal.GetCacheMax()))
    assert min(seen) == min(64 << 20, before) and gdal.GetCacheMax() == before


def test_cancel_while_writing_leaves_no_file(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TFK"])
    work = dem.plan(dem.SRTM, str(tmp_path / "out" / "dem.tif"), tiles="31TFK",
                    input_rasters=[srtm_tile(tmp_path, c, pixels=1000) for c in cells])
    calls = []

    def progress(fraction, message=""):
        calls.append(fraction)

    with pytest.raises(Cancelled):
        dem.build(work, progress=progress, is_cancelled=lambda: len(calls) > 3)
    assert os.listdir(tmp_path / "out") == []


# --- downloads ----------------------------------------------------------------------------------------------


def serve_srtm(server, tmp_path, cells, skip=()):
    folder = tmp_path / "published"
    folder.mkdir(exist_ok=True)
    routes = {}
    for cell in cells:
        if cell.name not in skip:
            routes[cell.name] = server.route(f"/srtm/{cell.name}.zip", zipped(srtm_tile(folder, cell)))
    return routes, folder


def test_download_with_a_sea_tile_and_a_dropped_connection(http_server, session, tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TFK"])
    routes, published = serve_srtm(http_server, tmp_path, cells, skip=("srtm_37_04",))
    routes["srtm_38_03"].fail(faults.drop_mid(4000))
    work = dem.plan(dem.SRTM, str(tmp_path / "dem.tif"), tiles="31TFK", url=http_server.url("/srtm/"),
                    cache_folder=str(tmp_path / "cache"))
    assert names(work.downloads) == names(cells)
    result = dem.build(work, session, backoff=0.01)
    assert result.sea_level == ["srtm_37_04"]
    assert "counted as sea level (0 m)" in result.notes[0] and "land" in result.notes[0]
    retried = http_server.requests_to("/srtm/srtm_38_03.zip", "GET")
    assert len(retried) == 2 and retried[1].headers["Range"] == "bytes=4000-"
    merged, _, _ = read(result.output)
    assert (merged[100:, :100] == 0).all()  # the missing tile is sea level
    sources = [str(published / f"{name}.tif") for name in ("srtm_37_03", "srtm_38_03", "srtm_38_04")]
    assert np.array_equal(merged, expected_mosaic(result.output, sources, fill=0))
    assert sorted(os.listdir(tmp_path / "cache")) == ["srtm_37_03.tif", "srtm_38_03.tif", "srtm_38_04.tif"]


def test_tiles_in_the_cache_are_not_downloaded_again(http_server, session, tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TCJ"])
    serve_srtm(http_server, tmp_path, cells)
    for name in ("first.tif", "second.tif"):
        work = dem.plan(dem.SRTM, str(tmp_path / name), tiles="31TCJ", url=http_server.url("/srtm/"),
                        cache_folder=str(tmp_path / "cache"))
        dem.build(work, session)
    assert len(http_server.requests_to("/srtm/srtm_37_04.zip", "GET")) == 1


def test_copernicus_download_uses_the_bucket_layout(http_server, session, tmp_path):
    cells = dem.cells_for_tiles(dem.COP90, ["04RDP"])
    published = tmp_path / "published"
    published.mkdir()
    for cell in cells[1:]:  # the first one is sea
        http_server.route(f"/cop90/{cell.name}/{cell.name}.tif", file=copernicus_tile(published, cell, pixels=60))
    work = dem.plan(dem.COP90, str(tmp_path / "dem.tif"), tiles="04RDP", url=http_server.url("/cop90"),
                    cache_folder=str(tmp_path / "cache"), sen2cor_folder=str(tmp_path / "sen2cor"))
    result = dem.build(work, session)
    assert result.sea_level == [cells[0].name]
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(c.name + ".tif" for c in cells[1:])
    assert sorted(os.listdir(tmp_path / "sen2cor")) == sorted(c.sen2cor_file for c in cells[1:])
    assert "no file for the sea-level tiles" in result.notes[-1]


def test_a_failure_other_than_404_stops_the_run(http_server, session, tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TCJ"])
    routes, _ = serve_srtm(http_server, tmp_path, cells)
    routes["srtm_37_04"].fail(*[faults.status(503)] * 20)
    work = dem.plan(dem.SRTM, str(tmp_path / "dem.tif"), tiles="31TCJ", url=http_server.url("/srtm/"),
                    cache_folder=str(tmp_path / "cache"))
    with pytest.raises(ServiceError) as error:
        dem.build(work, session, backoff=0.001)
    assert str(error.value).startswith("1 DEM tile(s) could not be downloaded (srtm_37_04); srtm_37_04: gave up")
    assert not (tmp_path / "dem.tif").exists()


def test_a_server_answering_something_else_than_a_zip(http_server, session, tmp_path):
    http_server.route("/srtm/srtm_37_04.zip", b"<html>maintenance</html>", headers={"Content-Type": "text/html"})
    work = dem.plan(dem.SRTM, str(tmp_path / "dem.tif"), tiles="31TCJ", url=http_server.url("/srtm/"),
                    cache_folder=str(tmp_path / "cache"))
    with pytest.raises(ServiceError) as error:
        dem.build(work, session)
    assert str(error.value) == ("srtm_37_04: the server sent something that is not a zip archive; try again or "
                                "check the URL.")
    assert os.listdir(tmp_path / "cache") == []  # nothing that a later run would take for a tile


def test_a_server_that_cannot_be_reached_is_one_sentence(session, tmp_path):
    work = dem.plan(dem.SRTM, str(tmp_path / "dem.tif"), tiles="31TCJ", url="http://127.0.0.1:9/srtm/")
    with pytest.raises(ParameterError) as error:
        dem.check_reachable(work, session)
    assert str(error.value) == (
        "URL: the DEM tiles cannot be downloaded: 127.0.0.1 refused the connection; check the URL or try again "
        "later; give the tiles in INPUT_RASTERS or another URL.")


def test_local_rasters_first_and_only_the_missing_tiles_downloaded(http_server, session, tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TFK"])
    serve_srtm(http_server, tmp_path, cells)
    local = [srtm_tile(tmp_path, cell, name=f"my_dem_{i}") for i, cell in enumerate(cells[:3])]
    work = dem.plan(dem.SRTM, str(tmp_path / "dem.tif"), tiles="31TFK", input_rasters=local,
                    url=http_server.url("/srtm/"), cache_folder=str(tmp_path / "cache"))
    assert names(work.downloads) == ["srtm_38_04"]
    dem.build(work, session)
    assert [r.path for r in http_server.requests if r.method == "GET"] == ["/srtm/srtm_38_04.zip"]


# --- the Sen2Cor folder -------------------------------------------------------------------------------------


def test_srtm_folder_has_every_name_sen2cor_asks_for_each_the_whole_mosaic(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["04RDP"])
    sources = [srtm_tile(tmp_path, c) for c in cells]
    work, result = merge(dem.SRTM, tmp_path, sources, tiles="04RDP", sen2cor_folder=str(tmp_path / "sen2cor"))
    assert result.sen2cor_files == ["srtm_04_07.tif", "srtm_05_07.tif"]  # Sen2Cor asks for 05_07, 04_07 is needed
    assert (result.dem_directory, result.dem_reference) == (str(tmp_path / "sen2cor"), dem.SRTM_URL)
    assert result.links == dem.HARD
    mosaic = os.stat(result.output)
    for name in os.listdir(tmp_path / "sen2cor"):
        assert os.stat(tmp_path / "sen2cor" / name).st_ino == mosaic.st_ino
    assert mosaic.st_nlink == 3


def test_srtm_folder_covers_the_tiles_of_an_aoi_whole(tmp_path):
    aoi = "POLYGON((4.9 44.9,5.1 44.9,5.1 45.1,4.9 45.1,4.9 44.9))"  # meets 31TFK and 31TFL
    cells = dem.cells_for_tiles(dem.SRTM, ["31TFK", "31TFL"])
    work, result = merge(dem.SRTM, tmp_path, [srtm_tile(tmp_path, c) for c in cells], aoi=aoi,
                         sen2cor_folder=str(tmp_path / "sen2cor"))
    assert [t.tile_id for t in work.s2_tiles] == ["31TFK", "31TFL"]
    assert "serves the 2 Sentinel-2 tiles that meet the AOI (31TFK, 31TFL)" in work.notes[0]
    assert sorted(os.listdir(tmp_path / "sen2cor")) == ["srtm_37_03.tif", "srtm_37_04.tif", "srtm_38_03.tif",
                                                       "srtm_38_04.tif"]


def test_srtm_folder_stays_geographic_when_output_is_reprojected(tmp_path):
    cells = dem.cells_for_tiles(dem.SRTM, ["31TCJ"])
    _, result = merge(dem.SRTM, tmp_path, [srtm_tile(tmp_path, c) for c in cells], tiles="31TCJ",
                      sen2cor_folder=str(tmp_path / "sen2cor"), reproject_to="31TCJ")
    folder_file = gdal.Open(str(tmp_path / "sen2cor" / "srtm_37_04.tif"))
    assert osr.SpatialReference(wkt=folder_file.GetProjection()).IsGeographic()
    assert not osr.SpatialReference(wkt=gdal.Open(result.output).GetProjection()).IsGeographic()


def test_links_fall_back_to_symbolic_links_then_copies(tmp_path, monkeypatch):
    source = tmp_path / "mosaic.tif"
    source.write_bytes(b"mosaic")

    def refuse(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    assert dem.link(str(source), str(tmp_path / "a.tif")) == dem.SYMBOLIC
    assert os.readlink(tmp_path / "a.tif") == "mosaic.tif"  # relative: the folder can be moved
    monkeypatch.setattr(os, "symlink", refuse)
    assert dem.link(str(source), str(tmp_path / "b.tif")) == dem.COPY
    assert (tmp_path / "b.tif").read_bytes() == b"mosaic" and not (tmp_path / "b.tif").is_symlink()
    assert dem.link(str(source), str(tmp_path / "c.tif"), symbolic=False) == dem.COPY


def test_copernicus_folder_has_flat_dem_files_linked_to_the_tiles(tmp_path):
    from sentinel2_pipeline.plugin.engine import sen2cor

    cells = dem.cells_for_tiles(dem.COP30, ["31TFK"])
    sources = [copernicus_tile(tmp_path, c, pixels=600) for c in cells]
    _, result = merge(dem.COP30, tmp_path, sources, tiles="31TFK", sen2cor_folder=str(tmp_path / "sen2cor"))
    assert result.sen2cor_files == [c.sen2cor_file for c in cells]
    assert all(name.startswith("Copernicus_DSM_10_") and name.endswith("_DEM.tif") for name in result.sen2cor_files)
    for cell, source in zip(cells, sources):
        assert os.stat(tmp_path / "sen2cor" / cell.sen2cor_file).st_ino == os.stat(source).st_ino
    assert result.dem_reference == "CDSE-GLO-30"
    # sentinel2:sen2cor's DEM_FOLDER reads the same reference from this folder for Sen2Cor 2.12.
    assert sen2cor.dem_reference(result.dem_directory, (2, 12)) == result.dem_reference


def test_copernicus_folder_cuts_tiles_from_rasters_that_are_not_tiles(tmp_path):
    # One raster over the four 1° cells of 31TFK (4°E-6°E, 44°N-46°N, pixel centres on a 6″ grid): each cell is
    # cut out of the mosaic as its own tile.
    whole = write_tile(tmp_path / "mosaic.tif", 4.0, 46.0, 1200, 1200, 1 / 600, 1 / 600, kind="copernicus")
    _, result = merge(dem.COP30, tmp_path, [whole], tiles="31TFK", sen2cor_folder=str(tmp_path / "sen2cor"))
    assert result.sen2cor_files == [f"Copernicus_DSM_10_{corner}_DEM.tif" for corner in (
        "N45_00_E004_00", "N45_00_E005_00", "N44_00_E004_00", "N44_00_E005_00")]
    cut, transform, _ = read(tmp_path / "sen2cor" / "Copernicus_DSM_10_N44_00_E005_00_DEM.tif")
    assert transform == pytest.approx((5 - 0.5 / 600, 1 / 600, 0, 45 + 0.5 / 600, 0, -1 / 600))
    values, _, _ = read(whole)
    assert np.array_equal(cut, np.floor(values[600:, 600:] + 0.5))


def test_heights_pattern_changes_between_neighbours():
    # The seam checks rely on neighbouring pixels differing: a one-pixel shift must show.
    lons = np.arange(0, 1, 1 / 600)
    assert (np.diff(pattern(lons, 45.0 + 0 * lons)) != 0).all()

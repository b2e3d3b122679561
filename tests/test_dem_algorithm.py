"""sentinel2:mergedem through QGIS Processing (pytest-qgis) and headless with qgis_process.bin."""

import os
import sys

import numpy as np
import pytest
from demdata import NODATA, expected_mosaic, read, srtm_tile, zipped
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from servers import TestServer

from sentinel2_pipeline.plugin.engine import dem, grid
from sentinel2_pipeline.processing_provider.mergedem import METRES_PER_DEGREE

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import ROOT, QgisProcess, find_qgis_process  # noqa: E402

TILE = "31TFK"  # crosses 5°E and 45°N: four SRTM tiles


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """Synthetic SRTM tiles of 31TFK under names that say nothing (they are matched by extent)."""
    folder = tmp_path_factory.mktemp("dem")
    cells = dem.cells_for_tiles(dem.SRTM, [TILE])
    return [srtm_tile(folder, cell, name=f"dem_{index}") for index, cell in enumerate(cells)]


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.messages = []

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        self.messages.append(info)
        super().pushInfo(info)


def run(parameters, feedback=None):
    import processing

    return processing.run("sentinel2:mergedem", parameters, feedback=feedback or QgsProcessingFeedback())


def test_parameters_and_outputs_are_the_public_interface(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById("sentinel2:mergedem")
    assert [p.name() for p in algorithm.parameterDefinitions()] == [
        "AOI", "TILES", "DEM", "INPUT_RASTERS", "URL", "UTM_TILE", "OUTPUT", "OUTPUT_AUTH", "SEN2COR_FOLDER"]
    assert [o.name() for o in algorithm.outputDefinitions()] == ["OUTPUT", "SEN2COR_FOLDER", "DEM_TILES"]
    choice = algorithm.parameterDefinition("DEM")
    assert choice.options() == ["srtm-cgiar", "copernicus-30", "copernicus-90"] and choice.usesStaticStrings()
    assert "DEM_Reference" in algorithm.shortHelpString()


def test_tiles_and_files_give_the_geotiff_and_the_sen2cor_folder(provider, tiles, tmp_path):
    feedback = RecordingFeedback()
    output, folder = str(tmp_path / "dem.tif"), str(tmp_path / "sen2cor")
    result = run({"TILES": TILE, "DEM": "srtm-cgiar", "INPUT_RASTERS": tiles, "OUTPUT": output,
                  "SEN2COR_FOLDER": folder}, feedback)
    assert result == {"OUTPUT": output, "SEN2COR_FOLDER": folder,
                      "DEM_TILES": "srtm_37_03,srtm_38_03,srtm_37_04,srtm_38_04"}
    merged, _, nodata = read(output)
    assert nodata == NODATA and np.array_equal(merged, expected_mosaic(output, tiles))
    assert sorted(os.listdir(folder)) == ["srtm_37_03.tif", "srtm_37_04.tif", "srtm_38_03.tif", "srtm_38_04.tif"]
    assert (f"Sen2Cor settings for this folder (4 files, hard links): DEM_Directory={folder} "
            f"DEM_Reference={dem.SRTM_URL}") in feedback.messages


def test_utm_tile_warps_the_output_onto_that_tiles_grid(provider, tiles, tmp_path):
    from osgeo import gdal

    output = str(tmp_path / "dem_utm.tif")
    run({"TILES": TILE, "DEM": "srtm-cgiar", "INPUT_RASTERS": tiles, "UTM_TILE": TILE, "OUTPUT": output})
    tile = grid.parse_tile_id(TILE)
    dataset = gdal.Open(output)
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    assert dataset.GetSpatialRef().GetAuthorityCode(None) == str(tile.epsg)
    assert (x0, y0) == (tile.ulx, tile.uly) and dx == 90 and dy == -90
    assert (dataset.RasterXSize, dataset.RasterYSize) == (1220, 1220)  # 109,800 m / 90 m


def test_an_aoi_layer_and_raster_layers(provider, tiles, tmp_path):
    area = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt("POLYGON((4.9 44.9,5.1 44.9,5.1 45.1,4.9 45.1,4.9 44.9))"))
    area.dataProvider().addFeature(feature)
    layers = [QgsRasterLayer(path, os.path.basename(path)) for path in tiles]
    result = run({"AOI": area, "INPUT_RASTERS": layers, "OUTPUT": str(tmp_path / "dem.tif")})
    assert result["DEM_TILES"] == "srtm_37_03,srtm_38_03,srtm_37_04,srtm_38_04"
    assert result["SEN2COR_FOLDER"] == ""
    assert sorted(os.listdir(tmp_path)) == ["dem.tif"]


def test_download_from_a_url(provider, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTINEL2_DEM_CACHE", str(tmp_path / "cache"))
    cells = dem.cells_for_tiles(dem.SRTM, ["31TCJ"])
    with TestServer() as server:
        for cell in cells:
            server.route(f"/srtm/{cell.name}.zip", zipped(srtm_tile(tmp_path, cell)))
        result = run({"TILES": "31TCJ", "URL": server.url("/srtm/"), "OUTPUT": str(tmp_path / "dem.tif")})
    assert result["DEM_TILES"] == "srtm_37_04"
    assert os.listdir(tmp_path / "cache" / "srtm-cgiar") == ["srtm_37_04.tif"]


def not_a_dem(path):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 4, 4, 3, gdal.GDT_Byte)
    dataset.SetGeoTransform((5, 1, 0, 45, 0, -1))
    dataset = None
    return str(path)


@pytest.mark.parametrize("parameters, message", [
    ({}, "AOI: no area was given; give an AOI layer or Sentinel-2 tile ids in TILES."),
    ({"TILES": "31TFK,31TZA"}, "TILES: '31TZA' is not in the Sentinel-2 tiling grid."),
    ({"TILES": TILE, "INPUT_RASTERS": ["{rgb}"]}, "INPUT_RASTERS: rgb.tif has 3 bands; a DEM has one band of heights."),
    ({"TILES": TILE, "URL": "http://127.0.0.1:9/srtm/"},
     "URL: the DEM tiles cannot be downloaded: 127.0.0.1 refused the connection; check the URL or try again later; "
     "give the tiles in INPUT_RASTERS or another URL."),
    ({"TILES": "33XVP"}, "DEM: CGIAR-CSI SRTM has no data beyond 60°N and 56°S, and the area lies between 83.60° and "
                         "84.64° latitude; choose copernicus-30 or copernicus-90, which cover the whole globe."),
])
def test_bad_input_is_one_sentence_and_writes_nothing(provider, tmp_path, parameters, message):
    rgb = not_a_dem(tmp_path / "rgb.tif")
    parameters = {k: [rgb] if v == ["{rgb}"] else v for k, v in parameters.items()}
    with pytest.raises(QgsProcessingException) as error:
        run({**parameters, "OUTPUT": str(tmp_path / "out" / "dem.tif")})
    assert str(error.value) == message
    assert not (tmp_path / "out").exists()


def test_loaded_from_the_gui_with_a_hillshade(provider, tiles, tmp_path, qgis_iface, monkeypatch):
    import processing
    from qgis.core import QgsLayerTreeModel
    from qgis.gui import QgsLayerTreeView

    project = QgsProject.instance()
    project.clear()
    # QGIS >= 3.34 adds result layers through the window's layer tree view; pytest-qgis's iface has none (a mock).
    view = QgsLayerTreeView()
    view.setModel(QgsLayerTreeModel(project.layerTreeRoot(), view))
    monkeypatch.setattr(qgis_iface, "layerTreeView", lambda: view, raising=False)
    processing.runAndLoadResults("sentinel2:mergedem", {"TILES": TILE, "INPUT_RASTERS": tiles,
                                                        "OUTPUT": str(tmp_path / "dem.tif")})
    layers = list(project.mapLayers().values())
    assert len(layers) == 1 and layers[0].source() == str(tmp_path / "dem.tif")
    renderer = layers[0].renderer()
    assert renderer.type() == "hillshade" and renderer.multiDirectional()
    assert renderer.zFactor() == pytest.approx(1 / METRES_PER_DEGREE)  # heights in metres over cells in degrees
    project.clear()


# --- headless -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qgis_dem(tmp_path_factory):
    """qgis_process with the plugin enabled and the DEM cache in a temporary folder."""
    if not find_qgis_process():
        pytest.skip("qgis_process is not installed")
    cache = tmp_path_factory.mktemp("dem-cache")
    return QgisProcess.prepared(base=os.path.join(ROOT, "build", "headless"), plugin_source=ROOT,
                                env={"SENTINEL2_DEM_CACHE": str(cache)}), cache


@pytest.mark.headless
def test_headless_run_writes_the_geotiff_and_the_sen2cor_folder(qgis_dem, tiles, tmp_path):
    qp, _ = qgis_dem
    output, folder = tmp_path / "dem.tif", tmp_path / "sen2cor"
    result = qp.run_alg("sentinel2:mergedem", {"TILES": TILE, "DEM": "srtm-cgiar", "INPUT_RASTERS": tiles,
                                               "OUTPUT": str(output), "SEN2COR_FOLDER": str(folder)}).check()
    assert result.results["DEM_TILES"] == "srtm_37_03,srtm_38_03,srtm_37_04,srtm_38_04"
    assert result.results["OUTPUT"] == str(output) and result.results["SEN2COR_FOLDER"] == str(folder)
    merged, _, _ = read(output)
    assert np.array_equal(merged, expected_mosaic(str(output), tiles))
    assert len({os.stat(folder / name).st_ino for name in os.listdir(folder)}) == 1
    assert f"DEM_Directory={folder}" in result.stdout + result.stderr


@pytest.mark.headless
def test_headless_download_with_a_sea_tile(qgis_dem, tmp_path):
    qp, cache = qgis_dem
    cells = dem.cells_for_tiles(dem.SRTM, [TILE])
    with TestServer() as server:
        for cell in cells[1:]:  # srtm_37_03 is "ocean": 404
            server.route(f"/srtm/{cell.name}.zip", zipped(srtm_tile(tmp_path, cell)))
        result = qp.run_alg("sentinel2:mergedem", {"TILES": TILE, "URL": server.url("/srtm/"),
                                                   "OUTPUT": str(tmp_path / "dem.tif")}).check()
    assert "No tile on the server for srtm_37_03 (HTTP 404): counted as sea level (0 m)" in result.stdout
    merged, _, _ = read(tmp_path / "dem.tif")
    assert (merged[:100, :100] == 0).all() and (merged[100:, 100:] != 0).any()
    assert sorted(os.listdir(cache / "srtm-cgiar")) == ["srtm_37_04.tif", "srtm_38_03.tif", "srtm_38_04.tif"]


@pytest.mark.headless
def test_headless_bad_input_is_one_sentence(qgis_dem, tmp_path):
    qp, _ = qgis_dem
    result = qp.run_alg("sentinel2:mergedem", {"TILES": "31TFK", "INPUT_RASTERS": [not_a_dem(tmp_path / "rgb.tif")],
                                               "OUTPUT": str(tmp_path / "dem.tif")}, json_output=False)
    assert result.returncode != 0
    assert "INPUT_RASTERS: rgb.tif has 3 bands; a DEM has one band of heights." in result.output
    assert "Traceback" not in result.output and not (tmp_path / "dem.tif").exists()

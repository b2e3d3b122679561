"""sentinel2:mergedem — the DEM tiles of an area or of Sentinel-2 tiles, merged into one GeoTIFF, plus a folder
Sen2Cor uses as its DEM_Directory without downloading anything."""

import os

from qgis.core import (
    QgsApplication,
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingOutputString,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsProviderRegistry,
)

from ..plugin import network
from ..plugin.aoi import read_aoi
from ..plugin.engine import grid
from ..plugin.engine.errors import ParameterError
from ..plugin.layers import post_processor, style_path
from .algorithm import Sentinel2Algorithm, advanced, engine_callbacks
from .lazy import engine_module

dem = engine_module("dem")

METRES_PER_DEGREE = 111_320.0  # hillshade of a DEM in degrees: heights in metres over cells in degrees


class MergeDemAlgorithm(Sentinel2Algorithm):
    AOI, TILES, DEM, INPUT_RASTERS, URL = "AOI", "TILES", "DEM", "INPUT_RASTERS", "URL"
    OUTPUT, SEN2COR_FOLDER, DEM_TILES, UTM_TILE = "OUTPUT", "SEN2COR_FOLDER", "DEM_TILES", "UTM_TILE"

    def name(self):
        return "mergedem"

    def displayName(self):
        return self.tr("Merge DEM tiles (and a Sen2Cor DEM folder)")

    def group(self):
        return self.tr("Process")

    def groupId(self):
        return "process"

    def tags(self):
        return ["dem", "srtm", "cgiar", "copernicus", "glo-30", "glo-90", "elevation", "mosaic", "merge", "sen2cor"]

    def shortHelpString(self):
        return self.tr(
            "Finds the DEM tiles that cover an area or Sentinel-2 tiles (from the tiles' true outlines, so no tile "
            "is missed where UTM edges are not meridians, across 180° too), takes them from your files or "
            "downloads them, and merges them into one GeoTIFF.\n\n"
            "AOI and/or TILES (e.g. 31TCJ,31TDJ): where the DEM is needed.\n"
            "DEM: srtm-cgiar (CGIAR-CSI SRTM 90 m, 5° tiles, 60°N to 56°S), copernicus-30 or copernicus-90 "
            "(Copernicus DEM GLO-30/GLO-90, 1° tiles, whole globe).\n"
            "INPUT_RASTERS: DEM files you already have, any names, in EPSG:4326; they are matched by extent. "
            "When they leave tiles uncovered, those are downloaded only if URL is given.\n"
            "URL: the folder that holds the tiles (empty: the public one: CGIAR's srtm_5x5/TIFF/ for SRTM zips, "
            "the AWS buckets for Copernicus COGs); a URL with {name} sets another layout. Downloads resume, are "
            "verified and kept in a cache (SENTINEL2_DEM_CACHE). A tile the server does not have is ocean: it "
            "counts as sea level (0 m) and the log lists it.\n\n"
            "OUTPUT: Int16 GeoTIFF, tiled, DEFLATE, nodata -32768, source heights unchanged (Copernicus heights "
            "rounded to whole metres).\n"
            "UTM_TILE (optional, advanced): a Sentinel-2 tile id; OUTPUT is then warped (bilinear) onto that tile's "
            "UTM rectangle at the DEM's resolution (30 or 90 m) instead of staying in EPSG:4326.\n"
            "SEN2COR_FOLDER (optional): for SRTM, the mosaic under every srtm_XX_YY.tif name Sen2Cor asks for "
            "(the Sen2Cor 2.9 workaround; hard links, so it costs no space); for Copernicus DEM, flat "
            "Copernicus_DSM_10|30_..._DEM.tif files. The log gives the DEM_Directory and DEM_Reference to use; "
            "sentinel2:sen2cor takes this folder as DEM_FOLDER and sets both itself.\n"
            "DEM_TILES (output): the names of the DEM tiles, comma-separated."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, self.tr("Area of interest"), [QgsProcessing.SourceType.TypeVectorAnyGeometry], optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.TILES, self.tr("Sentinel-2 tiles (comma-separated, e.g. 31TCJ)"), optional=True))
        self.add_enum(self.DEM, "DEM", dem.DEMS, dem.SRTM)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT_RASTERS, self.tr("DEM files you already have"), QgsProcessing.SourceType.TypeRaster,
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.URL, self.tr("Base URL of the DEM tiles (empty: the public one)"), optional=True))
        self.addParameter(advanced(QgsProcessingParameterString(
            self.UTM_TILE, self.tr("Reproject to the UTM grid of this Sentinel-2 tile (e.g. 31TCJ)"), optional=True)))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Merged DEM")))
        self.add_output_auth()
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.SEN2COR_FOLDER, self.tr("DEM folder for Sen2Cor"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString(self.DEM_TILES, self.tr("DEM tiles")))

    def process(self, parameters, context, feedback):
        work = self._plan(parameters, context, feedback)
        for note in work.notes:
            feedback.pushInfo(note)
        feedback.pushInfo(f"{len(work.cells)} DEM tiles: {', '.join(c.name for c in work.cells)}")
        with network.session(retries=1) as probe:
            dem.check_reachable(work, probe)
        progress, is_cancelled = engine_callbacks(feedback)
        with network.session() as session:
            result = dem.build(work, session, progress, is_cancelled, feedback.pushInfo)
        for note in result.notes[len(work.notes):]:
            feedback.pushInfo(note)
        if result.sen2cor_folder:
            feedback.pushInfo(f"Sen2Cor settings for this folder ({len(result.sen2cor_files)} files, "
                              f"{result.links}): DEM_Directory={result.dem_directory} "
                              f"DEM_Reference={result.dem_reference}")
        self._load(context, result.output)
        return {self.OUTPUT: result.output, self.SEN2COR_FOLDER: result.sen2cor_folder or "",
                self.DEM_TILES: ",".join(result.dem_tiles)}

    def _plan(self, parameters, context, feedback):
        """Every check before any network or disk work (engine: dem.plan)."""
        aoi = None
        if self.parameterAsSource(parameters, self.AOI, context) is not None:
            aoi = read_aoi(self, parameters, self.AOI, context, feedback)
        return dem.plan(
            self.parameterAsEnumString(parameters, self.DEM, context),
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            aoi=aoi,
            tiles=self.parameterAsString(parameters, self.TILES, context),
            input_rasters=self._raster_paths(parameters, context),
            url=self.parameterAsString(parameters, self.URL, context).strip() or None,
            sen2cor_folder=self.parameterAsFileOutput(parameters, self.SEN2COR_FOLDER, context) or None,
            cache_folder=_cache_folder(self.parameterAsEnumString(parameters, self.DEM, context)),
            reproject_to=self._utm_tile(parameters, context),
        )

    def _utm_tile(self, parameters, context):
        text = self.parameterAsString(parameters, self.UTM_TILE, context).strip()
        return grid.parse_tile_id(text, self.UTM_TILE) if text else None

    def _raster_paths(self, parameters, context):
        """File paths of INPUT_RASTERS: layers of the project (GDAL files only) or paths as given, which the
        engine opens itself so a file that is no DEM gets a sentence of its own."""
        paths = []
        for value in _as_list(parameters.get(self.INPUT_RASTERS)):
            layer = value if isinstance(value, QgsMapLayer) else QgsProcessingUtils.mapLayerFromString(
                str(value), context, False)  # False: a path that is not in the project stays a path
            if layer is None:
                paths.append(str(value))
            elif layer.providerType() != "gdal":
                raise ParameterError(self.INPUT_RASTERS, f"{layer.name()} is not a raster file (it comes from "
                                                         f"the {layer.providerType()} provider).")
            else:
                paths.append(QgsProviderRegistry.instance().decodeUri("gdal", layer.source())["path"])
        return paths

    def _load(self, context, output):
        if context.willLoadLayerOnCompletion(output):
            context.layerToLoadOnCompletionDetails(output).setPostProcessor(post_processor(hillshade))


def hillshade(layer):
    """The hillshade style, with a z factor that suits the layer's units (degrees or metres)."""
    _, ok = layer.loadNamedStyle(style_path("hillshade"))
    if ok and layer.crs().isGeographic():
        renderer = layer.renderer().clone()
        renderer.setZFactor(1.0 / METRES_PER_DEGREE)
        layer.setRenderer(renderer)


def _as_list(value):
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cache_folder(dem_key):
    """Downloaded tiles stay between runs: SENTINEL2_DEM_CACHE, else the QGIS profile's cache folder."""
    if os.environ.get("SENTINEL2_DEM_CACHE"):
        return dem.default_cache_folder(dem_key)
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "cache", "sentinel2_pipeline", "dem", dem_key)

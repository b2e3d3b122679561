"""sentinel2:tiles — the Sentinel-2 tiles covering an area, from the offline tiling grid."""

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsWkbTypes,
)

from ..plugin.aoi import read_aoi
from ..plugin.engine import grid
from ..plugin.layers import post_processor
from .algorithm import Sentinel2Algorithm, engine_callbacks
from .fields import field


class TilesAlgorithm(Sentinel2Algorithm):
    AOI, MINIMAL, OUTPUT, TILE_IDS = "AOI", "MINIMAL", "OUTPUT", "TILE_IDS"

    def name(self):
        return "tiles"

    def displayName(self):
        return self.tr("Sentinel-2 tiles of an area")

    def group(self):
        return self.tr("Find data")

    def groupId(self):
        return "find"

    def tags(self):
        return ["mgrs", "tile", "grid", "granule", "utm", "cover"]

    def shortHelpString(self):
        return self.tr(
            "Lists the Sentinel-2 tiles (100 km MGRS squares, 109.8 km with overlap) that meet an area, offline, "
            "from ESA's tiling grid (its 56,686 tiles, shipped with the plugin): UTM zones with the Norway and "
            "Svalbard exceptions, about 80°S to 84°N, areas across the antimeridian included (lon/lat areas are "
            "read as RFC 7946 says: split at 180°).\n\n"
            "AOI: any vector layer; its features are dissolved (only the selected ones when a selection exists) "
            "and invalid geometries are repaired.\n"
            "MINIMAL: keep only the smallest set of tiles that together cover the area, preferring tiles that "
            "hold the area in their own UTM zone (proven minimal when the search finishes within a second, "
            "otherwise the best cover found, as the log says).\n\n"
            "Outputs: OUTPUT, the tile polygons in EPSG:4326 with fields tile_id and epsg; TILE_IDS, the tile "
            "ids separated by commas, ready for the TILES parameter of the other algorithms. Headless runs "
            "must give OUTPUT a file path (a temporary output is a memory layer that ends with the process)."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, self.tr("Area of interest"), [QgsProcessing.SourceType.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterBoolean(
            self.MINIMAL, self.tr("Only the fewest tiles that cover the area"), defaultValue=False))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("Sentinel-2 tiles"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputString(self.TILE_IDS, self.tr("Tile ids")))

    def process(self, parameters, context, feedback):
        minimal = self.parameterAsBoolean(parameters, self.MINIMAL, context)
        aoi = read_aoi(self, parameters, self.AOI, context, feedback)
        progress, is_cancelled = engine_callbacks(feedback)
        selection = grid.tiles_for_area(aoi, minimal=minimal, progress=progress, is_cancelled=is_cancelled)
        for note in selection.notes:
            feedback.pushInfo(note)
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, _fields(), QgsWkbTypes.Type.MultiPolygon,
            QgsCoordinateReferenceSystem("EPSG:4326"))
        for tile in selection.tiles:
            feature = QgsFeature(_fields())
            feature.setGeometry(QgsGeometry.fromWkt(grid.tile_geometry_wkt(tile)))
            feature.setAttributes([tile.tile_id, tile.epsg])
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        tile_ids = ",".join(t.tile_id for t in selection.tiles)
        feedback.pushInfo(f"{len(selection.tiles)} tiles: {tile_ids}")
        if context.willLoadLayerOnCompletion(dest_id):
            context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(post_processor("tiles"))
        return {self.OUTPUT: dest_id, self.TILE_IDS: tile_ids}


def _fields():
    fields = QgsFields()
    fields.append(field("tile_id", "string", 5))
    fields.append(field("epsg", "int"))
    return fields

"""sentinel2:search — one search over six catalogues; footprints in one schema, styled on the map."""

import datetime as dt

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime

from ..plugin import credentials, network
from ..plugin.aoi import read_aoi
from ..plugin.engine import catalogs, footprints, grid, http
from ..plugin.engine.errors import ParameterError
from ..plugin.engine.query import Query
from ..plugin.layers import post_processor
from .algorithm import Sentinel2Algorithm, engine_callbacks
from .fields import field

CATALOGS = list(catalogs.CATALOGS)
LEVELS = ["L1C", "L2A"]
PLATFORMS = ["any", "S2A", "S2B", "S2C"]
DIRECTIONS = ["any", "ASCENDING", "DESCENDING"]
FIELD_KINDS = {"relative_orbit": "int", "sensing_start": "datetime", "cloud_cover": "double", "size_bytes": "int64",
               "online": "bool"}


class SearchAlgorithm(Sentinel2Algorithm):
    CATALOG, URL, AUTH, AOI, START, END, LEVEL = "CATALOG", "URL", "AUTH", "AOI", "START", "END", "LEVEL"
    MAX_CLOUD, PLATFORM, RELATIVE_ORBIT, ORBIT_DIRECTION = "MAX_CLOUD", "PLATFORM", "RELATIVE_ORBIT", "ORBIT_DIRECTION"
    TILES, MAX_RESULTS, OUTPUT, GEOJSON, COUNT, MATCHED, TOTAL_BYTES = (
        "TILES", "MAX_RESULTS", "OUTPUT", "GEOJSON", "COUNT", "MATCHED", "TOTAL_BYTES")

    def name(self):
        return "search"

    def displayName(self):
        return self.tr("Search Sentinel-2 products")

    def group(self):
        return self.tr("Find data")

    def groupId(self):
        return "find"

    def tags(self):
        return ["catalogue", "odata", "stac", "copernicus", "cdse", "earth search", "geodes", "dhus", "footprints"]

    def shortHelpString(self):
        return self.tr(
            "Searches a catalogue for Sentinel-2 products and writes their footprints, in one schema whatever the "
            "catalogue (id, name, provider, platform, level, tile_id, relative_orbit, orbit_direction, "
            "sensing_start, cloud_cover, size_bytes, online, download_url, checksum), sorted by sensing time.\n\n"
            "CATALOG: cdse (Copernicus Data Space OData, no account needed), cdse-stac, earth-search (Element 84, "
            "no account), geodes (CNES, MAJA L2A; API key in AUTH), dhus (a DHuS mirror through sentinelsat; AUTH or "
            "DHUS_USER/DHUS_PASSWORD/DHUS_URL), sentinelhub (Sentinel Hub Catalog; AUTH holds the OAuth client id "
            "and secret). URL replaces the catalogue's service root.\n"
            "AOI: the area (features dissolved, selected ones when there is a selection); a complex area is sent as "
            "a few-vertex polygon that covers it and results are then checked against the exact area. Give AOI, "
            "TILES or both.\n"
            "START/END: sensing dates, both included. Filters a catalogue cannot apply are applied to its answers.\n"
            "MAX_RESULTS: stop after this many products (0: no limit); the log then says how many the catalogue "
            "holds (\"1,000 of 2,345 products shown\").\n"
            "GEOJSON: also write the footprints as GeoJSON with an 'identifier' property (like sentinelsat's "
            "footprints file).\n\nOutputs: COUNT and TOTAL_BYTES, the number and summed size of the products written; "
            "MATCHED, the number of products the catalogue holds for the query (COUNT when every one was written; "
            "the catalogue's own count when MAX_RESULTS stopped the search, empty when it gives none: Sentinel "
            "Hub).")

    def initAlgorithm(self, config=None):
        today = QDate.currentDate()
        self.add_enum(self.CATALOG, "Catalogue", CATALOGS, "cdse")
        self.addParameter(QgsProcessingParameterString(self.URL, self.tr("Service root URL (empty: default)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterAuthConfig(self.AUTH, self.tr("Authentication"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, self.tr("Area of interest"), [QgsProcessing.SourceType.TypeVectorAnyGeometry], optional=True))
        for name, label, default in ((self.START, "Start date", today.addDays(-30)), (self.END, "End date", today)):
            self.addParameter(QgsProcessingParameterDateTime(
                name, self.tr(label), QgsProcessingParameterDateTime.Type.Date,
                defaultValue=QDateTime(default, QTime())))
        self.add_enum(self.LEVEL, "Processing level", LEVELS, "L2A")
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_CLOUD, self.tr("Maximum cloud cover (%)"), QgsProcessingParameterNumber.Type.Double, 100.0))
        self.add_enum(self.PLATFORM, "Platform", PLATFORMS, "any")
        self.addParameter(QgsProcessingParameterNumber(
            self.RELATIVE_ORBIT, self.tr("Relative orbit (0: any)"), QgsProcessingParameterNumber.Type.Integer, 0))
        self.add_enum(self.ORBIT_DIRECTION, "Orbit direction", DIRECTIONS, "any")
        self.addParameter(QgsProcessingParameterString(self.TILES, self.tr("Tiles (comma-separated ids)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_RESULTS, self.tr("Maximum number of products (0: no limit)"),
            QgsProcessingParameterNumber.Type.Integer, 1000))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("Sentinel-2 footprints"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.GEOJSON, self.tr("Footprints as GeoJSON"), self.tr("GeoJSON (*.geojson)"), optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.COUNT, self.tr("Number of products")))
        self.addOutput(QgsProcessingOutputNumber(self.MATCHED, self.tr("Number of products the catalogue holds")))
        self.addOutput(QgsProcessingOutputNumber(self.TOTAL_BYTES, self.tr("Total size (bytes)")))

    def process(self, parameters, context, feedback):
        catalog = self.parameterAsEnumString(parameters, self.CATALOG, context)
        query = self._query(parameters, context, feedback)
        if query.aoi:
            feedback.pushInfo(f"Area sent to {catalog}: {query.aoi_wkt()}")
        progress, is_cancelled = engine_callbacks(feedback)
        # Catalogue searches are safe to repeat, POST ones included (STAC), so they are retried too.
        with network.session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"}) as session:
            found = catalogs.search(
                catalog, query, url=self.parameterAsString(parameters, self.URL, context).strip() or None,
                credentials=_credentials(catalog, self.parameterAsString(parameters, self.AUTH, context)),
                session=session, progress=progress, is_cancelled=is_cancelled, log=feedback.pushInfo)
        found, matched = _shown(found, query.max_results, feedback)
        dest_id = self._write_layer(found, parameters, context)
        geojson = self.parameterAsFileOutput(parameters, self.GEOJSON, context)
        if geojson:
            footprints.write_geojson(found, geojson)
        total = sum(f.size_bytes or 0 for f in found)
        offline = sum(1 for f in found if f.online is False)
        feedback.pushInfo(f"{len(found)} products, {total / 1e9:.2f} GB"
                          + (f", {offline} offline (long-term archive)" if offline else "") + ".")
        return {self.OUTPUT: dest_id, self.GEOJSON: geojson or None, self.COUNT: len(found), self.MATCHED: matched,
                self.TOTAL_BYTES: total}

    def _query(self, parameters, context, feedback):
        start = self.parameterAsDateTime(parameters, self.START, context).date()
        end = self.parameterAsDateTime(parameters, self.END, context).date()
        tiles = [t.tile_id for t in grid.parse_tile_list(self.parameterAsString(parameters, self.TILES, context))]
        has_area = parameters.get(self.AOI) not in (None, "")
        if not has_area and not tiles:
            raise ParameterError(self.AOI, "give an area of interest, a list of TILES, or both.")
        platform = self.parameterAsEnumString(parameters, self.PLATFORM, context)
        direction = self.parameterAsEnumString(parameters, self.ORBIT_DIRECTION, context)
        orbit = self.parameterAsInt(parameters, self.RELATIVE_ORBIT, context)
        return Query(
            start=dt.datetime(start.year(), start.month(), start.day(), tzinfo=dt.timezone.utc),
            end=dt.datetime(end.year(), end.month(), end.day(), 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
            level=self.parameterAsEnumString(parameters, self.LEVEL, context),
            aoi_wkb=read_aoi(self, parameters, self.AOI, context, feedback) if has_area else None,
            max_cloud=self.parameterAsDouble(parameters, self.MAX_CLOUD, context),
            platform=None if platform == "any" else platform,
            relative_orbit=orbit or None,
            orbit_direction=None if direction == "any" else direction,
            tiles=tiles,
            max_results=self.parameterAsInt(parameters, self.MAX_RESULTS, context))

    def _write_layer(self, found, parameters, context):
        fields = _fields()
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields, QgsWkbTypes.Type.MultiPolygon,
                                             QgsCoordinateReferenceSystem("EPSG:4326"))
        for footprint in found:
            feature = QgsFeature(fields)
            feature.setGeometry(_geometry(footprint.geometry))
            feature.setAttributes([_qgis_value(v) for v in footprint.attributes()])
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        if context.willLoadLayerOnCompletion(dest_id):
            context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(post_processor("footprints"))
        return dest_id


def _shown(found, max_results, feedback):
    """``(footprints to write, MATCHED)``: at most MAX_RESULTS of the merged results, and how many matched; the
    log says when MAX_RESULTS hid some."""
    merged = footprints.merge(found)
    shown = merged[:max_results] if max_results else merged
    capped = getattr(found, "capped", False) or len(shown) < len(merged)
    if not capped:
        return shown, len(shown)
    matched = getattr(found, "matched", None)
    if matched is None and len(shown) < len(merged):
        matched = len(merged)  # at least that many
    if matched is None:
        feedback.pushWarning(f"{len(shown):,} products shown; the catalogue holds more but does not say how many: "
                             f"raise MAX_RESULTS to see them.")
        return shown, None
    matched = max(matched, len(merged))
    if matched <= len(shown):  # exactly MAX_RESULTS matched: nothing was left out
        return shown, len(shown)
    feedback.pushWarning(f"{len(shown):,} of {matched:,} products shown; raise MAX_RESULTS to see them all.")
    return shown, matched


def _credentials(catalog, authcfg):
    if not authcfg:
        return None
    if catalog == "geodes":
        return catalogs.Credentials(api_key=credentials.api_key(authcfg))
    username, password = credentials.basic_credentials(authcfg)
    return catalogs.Credentials(username=username, password=password)


def _fields():
    fields = QgsFields()
    for name in footprints.FIELDS:
        fields.append(field(name, FIELD_KINDS.get(name, "string")))
    return fields


def _geometry(geojson):
    """The catalogue's footprint unchanged, as a (multi)polygon QgsGeometry."""
    import json

    from osgeo import ogr

    source = ogr.CreateGeometryFromJson(json.dumps(geojson)) if geojson else None
    if source is None:
        return QgsGeometry()
    geometry = QgsGeometry()
    geometry.fromWkb(bytes(source.ExportToIsoWkb()))
    geometry.convertToMultiType()
    return geometry


def _qgis_value(value):
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.timezone.utc)
        return QDateTime(QDate(value.year, value.month, value.day),
                         QTime(value.hour, value.minute, value.second, value.microsecond // 1000), Qt.TimeSpec.UTC)
    return value

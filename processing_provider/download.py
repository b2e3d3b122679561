"""sentinel2:download — the products of a footprints layer (or GeoJSON), downloaded, verified and extracted."""

import datetime as dt
import json

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtCore import QDateTime, QVariant

from ..plugin import credentials, network
from ..plugin.aoi import read_aoi
from ..plugin.engine.catalogs import Credentials
from ..plugin.engine.errors import ParameterError
from ..plugin.engine.footprints import Footprint, parse_product_name, parse_time
from ..plugin.engine.sources import SOURCES, Options
from .algorithm import Sentinel2Algorithm, engine_callbacks, failure_line, failure_results
from .lazy import engine_module

download = engine_module("download")
stac_source = engine_module("sources.stac")

# Band names as the contract writes them (BANDS=B4 BANDS=B8, like sentinel2:l3amosaic); the engine pads them.
BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12", "SCL", "TCI"]
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


class DownloadAlgorithm(Sentinel2Algorithm):
    INPUT, SOURCE, AUTH, BANDS, AOI, PARALLEL, UNZIP = "INPUT", "SOURCE", "AUTH", "BANDS", "AOI", "PARALLEL", "UNZIP"
    OUTPUT_FOLDER, PRODUCTS, DOWNLOADED, SKIPPED = "OUTPUT_FOLDER", "PRODUCTS", "DOWNLOADED", "SKIPPED"

    def name(self):
        return "download"

    def displayName(self):
        return self.tr("Download Sentinel-2 products")

    def group(self):
        return self.tr("Find data")

    def groupId(self):
        return "find"

    def tags(self):
        return ["download", "odata", "stac", "cog", "copernicus", "cdse", "earth search", "geodes", "dhus", "aws",
                "safe", "zip", "resume"]

    def shortHelpString(self):
        return self.tr(
            "Downloads the products of a footprints layer from sentinel2:search (only the selected features when "
            "the layer has a selection) or of its GeoJSON file, verifies them and extracts them into OUTPUT_FOLDER, "
            "ready for sentinel2:sen2cor.\n\n"
            "SOURCE: auto (the catalogue each footprint came from: cdse and cdse-stac footprints from the "
            "Copernicus Data Space, sentinelhub ones looked up there by name, earth-search ones per band, geodes "
            "ones from GEODES, dhus ones through sentinelsat), cdse (OData, account in AUTH; one sign-in for the "
            "whole batch), aws (SAFE rebuilt from the requester-pays L1C bucket, AWS keys in AUTH or the AWS "
            "environment), dhus (a DHuS mirror through sentinelsat), stac (single band files of STAC items such as "
            "Earth Search's COGs).\n"
            "BANDS (stac): the bands to fetch (none: all of them). AOI (stac): read only this area's window of "
            "each band with HTTP range requests and write clipped GeoTIFFs, <product>/<band>.tif.\n"
            "PARALLEL: simultaneous downloads (the Copernicus Data Space allows 4 per account).\n"
            "UNZIP: extract the zips, create the empty folders Sen2Cor needs (AUX_DATA, HTML, rep_info), check the "
            ".SAFE structure and delete each zip once its product checks out; unticked, the verified zips stay.\n\n"
            "Re-runs skip complete products and resume partial downloads (.part files). Offline (long-term archive) "
            "products are reported, not counted as failures.\n"
            "Outputs: PRODUCTS, the paths of the complete products (.SAFE folders, zips, or band folders) separated "
            "by ';'; DOWNLOADED and SKIPPED counts; FAILED, one 'product: reason' line per failed product, and "
            "FAILED_COUNT, their number (offline products are listed in the log, not counted as failures).")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.INPUT, self.tr("Footprints (from sentinel2:search)"),
            [QgsProcessing.SourceType.TypeVectorAnyGeometry]))
        self.add_enum(self.SOURCE, "Download source", list(SOURCES), "auto")
        self.addParameter(QgsProcessingParameterAuthConfig(self.AUTH, self.tr("Authentication"), optional=True))
        self.add_enum(self.BANDS, "Bands (stac source)", BANDS, None, multiple=True, optional=True)
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, self.tr("Area of interest (stac source: clip the bands)"),
            [QgsProcessing.SourceType.TypeVectorAnyGeometry], optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.PARALLEL, self.tr("Parallel downloads"), QgsProcessingParameterNumber.Type.Integer, 4, minValue=1,
            maxValue=32))
        self.addParameter(QgsProcessingParameterBoolean(self.UNZIP, self.tr("Extract and check the products"), True))
        self.add_output_auth()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputString(self.PRODUCTS, self.tr("Product paths (';'-separated)")))
        for name, label in ((self.DOWNLOADED, "Products downloaded"), (self.SKIPPED, "Products already complete")):
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))
        self.add_failure_outputs()

    def process(self, parameters, context, feedback):
        source = self.parameterAsEnumString(parameters, self.SOURCE, context)
        # QGIS 3.22 answers [''] when no band is chosen.
        bands = [stac_source.normalise_band(b)
                 for b in self.parameterAsEnumStrings(parameters, self.BANDS, context) if b]
        footprints = self._footprints(parameters, context, source)
        options = Options(
            credentials=_credentials(self.parameterAsString(parameters, self.AUTH, context)), bands=tuple(bands),
            aoi_wkb=self._aoi(parameters, context, feedback, source),
            parallel=self.parameterAsInt(parameters, self.PARALLEL, context))
        folder = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        footprints, stored = self._not_in_bucket(footprints, feedback)
        if stored and not footprints:
            return {self.OUTPUT_FOLDER: folder, self.PRODUCTS: ";".join(stored), self.DOWNLOADED: 0,
                    self.SKIPPED: len(stored), **failure_results([], feedback)}
        progress, is_cancelled = engine_callbacks(feedback)
        with network.session() as session:
            summary = download.download(footprints, source, folder, options, session, progress, is_cancelled,
                                        feedback.pushInfo, unzip=self.parameterAsBoolean(parameters, self.UNZIP,
                                                                                         context))
        failed = [failure_line(result.footprint.name, result.reason) for result in summary.failed]
        return {self.OUTPUT_FOLDER: folder, self.PRODUCTS: ";".join(summary.products + stored),
                self.DOWNLOADED: len(summary.downloaded), self.SKIPPED: len(summary.skipped) + len(stored),
                **failure_results(failed, feedback)}

    def _not_in_bucket(self, footprints, feedback):
        """For an s3:// OUTPUT_FOLDER: the footprints whose product is not there yet, and the URLs of those that
        are (a .SAFE folder, a zip, or a band folder of the product's name)."""
        output, names = self.in_bucket(self.OUTPUT_FOLDER)
        if output is None:
            return footprints, []
        todo, stored = [], []
        for footprint in footprints:
            stem = footprint.name[:-5] if footprint.name.upper().endswith(".SAFE") else footprint.name
            found = next((n for n in (stem + ".SAFE", stem + ".zip", stem) if n in names), None)
            if found:
                feedback.pushInfo(f"{stem}: skipped, {output.url_of(found)} is already in the bucket")
                stored.append(output.url_of(found))
            else:
                todo.append(footprint)
        return todo, stored

    def _aoi(self, parameters, context, feedback, source):
        if parameters.get(self.AOI) in (None, ""):
            return None
        if source not in ("stac", "auto"):
            feedback.pushInfo(f"AOI applies to SOURCE=stac only; SOURCE={source} downloads whole products.")
        return read_aoi(self, parameters, self.AOI, context, feedback)

    # ---- the footprints -------------------------------------------------------------------------------------

    def _footprints(self, parameters, context, source):
        """Footprints from the INPUT features (the selected ones when the layer has a selection)."""
        features_source = self.parameterAsSource(parameters, self.INPUT, context)
        if features_source is None:
            raise ParameterError(self.INPUT, "no footprints layer or file was given.")
        names = set(features_source.fields().names())
        if not names & {"name", "identifier"}:
            raise ParameterError(self.INPUT, "this is not a footprints layer: it has no 'name' field; use the "
                                             "footprints written by sentinel2:search or their GeoJSON file.")
        if source == "auto" and "provider" not in names:
            raise ParameterError(self.INPUT, "the footprints have no 'provider' field, so SOURCE=auto cannot tell "
                                             "which catalogue they come from; choose SOURCE.")
        crs = features_source.sourceCrs()
        transform = QgsCoordinateTransform(crs, WGS84, context.transformContext()) if crs != WGS84 else None
        # Sorted by feature id: a selection comes back in hash order, and PRODUCTS follows the layer's order.
        features = sorted(features_source.getFeatures(self._request(parameters, context)), key=lambda f: f.id())
        return [_footprint(feature, names, transform) for feature in features]

    def _request(self, parameters, context):
        # Read through the source (a thread-safe copy); only the selected ids come from the layer itself.
        request = QgsFeatureRequest()
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        selected = layer.selectedFeatureIds() if layer is not None else []
        if selected:
            request.setFilterFids(selected)
        return request


def _footprint(feature, names, transform):
    def value(key):
        return _python(feature[key]) if key in names else None

    name = str(value("name") or value("identifier") or "")
    sensing = value("sensing_start")
    if isinstance(sensing, str):
        sensing = parse_time(sensing)
    return Footprint(
        id=str(value("id") or name), name=name, provider=str(value("provider") or ""),
        geometry=_geojson(feature.geometry(), transform),
        sensing_start=sensing or parse_product_name(name).get("sensing_start"),
        platform=value("platform") or "", level=value("level") or "", tile_id=value("tile_id") or "",
        relative_orbit=value("relative_orbit"), orbit_direction=value("orbit_direction") or "",
        cloud_cover=value("cloud_cover"), size_bytes=_integer(value("size_bytes")), online=_boolean(value("online")),
        download_url=str(value("download_url") or ""), checksum=str(value("checksum") or ""))


def _python(value):
    """A feature attribute as plain Python: NULL -> None, QDateTime -> aware UTC datetime."""
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    if isinstance(value, QDateTime):
        if not value.isValid():
            return None
        return value.toUTC().toPyDateTime().replace(tzinfo=dt.timezone.utc)
    return value


def _integer(value):
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _boolean(value):
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def _geojson(geometry, transform):
    if geometry is None or geometry.isNull() or geometry.isEmpty():
        return None
    if transform is not None:
        geometry.transform(transform)
    return json.loads(geometry.asJson())


def _credentials(authcfg):
    """Credentials for whichever source needs them: a Basic configuration gives username and password (and the
    password as API key, where GEODES keys are kept on QGIS 3.22); an API Header one gives the key only."""
    if not authcfg:
        return None
    try:
        username, password = credentials.basic_credentials(authcfg)
        return Credentials(username=username, password=password, api_key=password)
    except ParameterError as error:
        if "expected Basic" not in str(error):
            raise
        return Credentials(api_key=credentials.api_key(authcfg))

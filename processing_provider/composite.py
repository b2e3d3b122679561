"""sentinel2:composite — cloud-free composites per period for any area, from L2A COGs (engine:
plugin/engine/composite.py)."""

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..plugin import network
from ..plugin.aoi import read_aoi
from ..plugin.engine.errors import ParameterError
from ..plugin.layers import load_on_completion
from .algorithm import Sentinel2Algorithm, advanced, engine_callbacks
from .l3amosaic import Stretch
from .lazy import engine_module

composite = engine_module("composite")
stac_source = engine_module("sources.stac")

# Written here so that building the dialog imports no engine module; the engine checks the same names.
BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
CATALOGS = ["earth-search", "cdse-stac"]
METHODS = ["median", "medoid", "best-pixel"]
GROUP = "Sentinel-2 composites"


class CompositeAlgorithm(Sentinel2Algorithm):
    AOI, START, END, PERIOD, BANDS, CATALOG, URL = "AOI", "START", "END", "PERIOD", "BANDS", "CATALOG", "URL"
    MAX_CLOUD, METHOD, RESOLUTION, CRS, KEEP_SNOW = "MAX_CLOUD", "METHOD", "RESOLUTION", "CRS", "KEEP_SNOW"
    PARALLEL, OUTPUT_FOLDER, OUTPUT_LAYERS, REPORT = "PARALLEL", "OUTPUT_FOLDER", "OUTPUT_LAYERS", "REPORT"
    AUTH = "AUTH"

    def name(self):
        return "composite"

    def displayName(self):
        return self.tr("Cloud-free composites of an area (from L2A COGs)")

    def group(self):
        return self.tr("Analysis")

    def groupId(self):
        return "analysis"

    def tags(self):
        return ["composite", "mosaic", "median", "medoid", "best pixel", "cloud free", "monthly", "stac", "cog",
                "earth search", "l2a", "scl"]

    def shortHelpString(self):
        return self.tr(
            "Makes cloud-free surface-reflectance composites of an area per period from Sentinel-2 Level-2A "
            "Cloud-Optimised GeoTIFFs, reading only the area's window of each band (HTTP range requests).\n\n"
            "CATALOG: earth-search (Element 84, no account) or cdse-stac; URL: any STAC API root instead. The "
            "Data Space's items point at its S3 bucket eodata: AUTH holds your Data Space S3 keys (a Basic "
            "configuration: access key as username, secret key as password).\n"
            "START, END: the dates; PERIOD: month, 10days, all (one composite of the whole range) or a number of "
            "days. MAX_CLOUD: leave out scenes with more cloud cover than this (%).\n"
            "BANDS: the bands to composite; RESOLUTION: 10, 20 or 60 m (COG overviews are read for coarser "
            "resolutions); CRS: the output CRS (empty: the UTM zone of the area's centre).\n"
            "METHOD: median (per band, of the valid observations), medoid (every band from the observation "
            "nearest to the per-band median) or best-pixel (the observation farthest from clouds and shadows and "
            "nearest to the middle of the period; a date band says which).\n"
            "SCL decides the valid pixels: no data, saturated, cloud shadows, clouds, cirrus and (unless "
            "KEEP_SNOW) snow are left out. Scenes of processing baseline 04.00 and later are harmonised with "
            "older ones (their offset is removed).\n"
            "Per period: composite_<period>_<band>.tif (float32 reflectance), composite_<period>_count.tif (valid "
            "observations), composite_<period>_date.tif (best-pixel), a true-colour VRT; composite_report.json "
            "and composite_report.html (scenes, cloud and valid shares per period). A period already written for "
            "the same area and method is skipped. OUTPUT_FOLDER may be s3://bucket/prefix.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, self.tr("Area of interest"), [QgsProcessing.SourceType.TypeVectorPolygon]))
        for name, label in ((self.START, "Start date"), (self.END, "End date")):
            self.addParameter(QgsProcessingParameterDateTime(
                name, self.tr(label), QgsProcessingParameterDateTime.Type.Date))
        self.addParameter(QgsProcessingParameterString(
            self.PERIOD, self.tr("Period (month, 10days, all, or a number of days)"), "month"))
        self.add_enum(self.BANDS, "Bands", BANDS, ["B2", "B3", "B4", "B8"], multiple=True)
        self.add_enum(self.CATALOG, "Catalogue", CATALOGS, "earth-search")
        self.addParameter(QgsProcessingParameterString(
            self.URL, self.tr("STAC API root (empty: the catalogue's)"), optional=True))
        self.addParameter(QgsProcessingParameterAuthConfig(
            self.AUTH, self.tr("S3 keys for s3:// assets (cdse-stac: your Data Space S3 keys)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_CLOUD, self.tr("Maximum scene cloud cover (%)"), QgsProcessingParameterNumber.Type.Double, 60.0,
            minValue=0, maxValue=100))
        self.add_enum(self.METHOD, "Method", METHODS, "median")
        self.add_enum(self.RESOLUTION, "Resolution (m)", ["10", "20", "60"], "10")
        self.addParameter(QgsProcessingParameterCrs(
            self.CRS, self.tr("Output CRS (empty: the area's UTM zone)"), optional=True))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            self.KEEP_SNOW, self.tr("Keep snow as a valid observation"), False)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.PARALLEL, self.tr("Windows read at a time"), QgsProcessingParameterNumber.Type.Integer, 4,
            minValue=1, maxValue=16)))
        self.add_output_auth()
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT_FOLDER, self.tr("Output folder (or s3://bucket/prefix)")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("Composite layers")))
        self.addOutput(QgsProcessingOutputFile(self.REPORT, self.tr("Report (JSON)")))

    def handles_remote_folders(self):
        return True  # the engine publishes each file itself and skips the periods the bucket holds

    def process(self, parameters, context, feedback):
        request = self._request(parameters, context, feedback)
        output = self.output_for(parameters, self.OUTPUT_FOLDER, context)
        catalog = self.parameterAsEnumString(parameters, self.CATALOG, context)
        url = self.parameterAsString(parameters, self.URL, context).strip() or None
        progress, is_cancelled = engine_callbacks(feedback)
        with network.session() as session:
            scenes = composite.search(request, catalog, url, session, lambda *a: None, is_cancelled,
                                      feedback.pushInfo)
            feedback.pushInfo(f"{len(scenes)} scene(s) over the area from {request.start} to {request.end}")
            results, report, left_out = composite.run(request, scenes, output, progress, is_cancelled,
                                                      feedback.pushInfo, session=session)
        for name, reason in left_out.items():
            feedback.pushWarning(f"{name}: {reason}")
        layers = []
        for result in results:
            for location in result.files:
                if location.endswith("_truecolour.vrt"):
                    load_on_completion(context, location, f"composite {result.period.label} true colour",
                                       self.OUTPUT_LAYERS, style=Stretch([[0.0, 0.3]] * 3), group=GROUP)
                    layers.append(location)
                elif location.endswith("_count.tif"):
                    load_on_completion(context, location, f"composite {result.period.label} count",
                                       self.OUTPUT_LAYERS, style="composite_count", group=GROUP)
                    layers.append(location)
        folder = output.url if hasattr(output, "url") else output.folder
        return {self.OUTPUT_FOLDER: folder, self.OUTPUT_LAYERS: layers, self.REPORT: report[0]}

    def _s3_keys(self, parameters, context):
        authcfg = self.parameterAsString(parameters, self.AUTH, context)
        if not authcfg:
            return None
        from ..plugin import credentials

        return credentials.s3_credentials(authcfg, self.AUTH)

    def _request(self, parameters, context, feedback):
        start = self.parameterAsDateTime(parameters, self.START, context).date().toPyDate()
        end = self.parameterAsDateTime(parameters, self.END, context).date().toPyDate()
        bands = [stac_source.normalise_band(b) for b in self.parameterAsEnumStrings(parameters, self.BANDS, context)
                 if b]
        crs = self.parameterAsCrs(parameters, self.CRS, context)
        epsg = None
        if crs.isValid():
            authid = crs.authid()
            if not authid.upper().startswith("EPSG:"):
                raise ParameterError(self.CRS, f"{authid or 'this CRS'} has no EPSG code; choose an EPSG CRS.")
            epsg = int(authid.split(":")[1])
        period = self.parameterAsString(parameters, self.PERIOD, context).strip() or "month"
        request = composite.Request(
            area_wkb=None, start=start, end=end, period=int(period) if period.isdigit() else period,
            bands=tuple(bands), method=self.parameterAsEnumString(parameters, self.METHOD, context),
            resolution=int(self.parameterAsEnumString(parameters, self.RESOLUTION, context)), epsg=epsg,
            keep_snow=self.parameterAsBoolean(parameters, self.KEEP_SNOW, context),
            parallel=self.parameterAsInt(parameters, self.PARALLEL, context),
            max_cloud=self.parameterAsDouble(parameters, self.MAX_CLOUD, context),
            s3=self._s3_keys(parameters, context))
        composite.periods(start, end, request.period)  # period errors before the area is read
        request.area_wkb = read_aoi(self, parameters, self.AOI, context, feedback)
        composite.check(request)
        return request

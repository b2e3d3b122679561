"""sentinel2:l3amosaic — DLR's monthly L3A composites for an area, mosaicked and clipped per month and band
(engine: plugin/engine/l3a.py)."""

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessing,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsSingleBandGrayRenderer,
)

from ..plugin import network
from ..plugin.aoi import read_aoi
from ..plugin.engine.callbacks import scaled
from ..plugin.layers import load_on_completion
from .algorithm import Sentinel2Algorithm, engine_callbacks, failure_results
from .lazy import engine_module

l3a = engine_module("l3a")

GROUP = "Sentinel-2 L3A"
DEFAULT_BANDS = ["B2", "B3", "B4", "B8"]


class L3AMosaicAlgorithm(Sentinel2Algorithm):
    AOI, START_MONTH, END_MONTH, BANDS, URL = "AOI", "START_MONTH", "END_MONTH", "BANDS", "URL"
    MAX_MASKED, STACK, OUTPUT_FOLDER, OUTPUT_LAYERS, REPORT = (
        "MAX_MASKED", "STACK", "OUTPUT_FOLDER", "OUTPUT_LAYERS", "REPORT")

    def name(self):
        return "l3amosaic"

    def displayName(self):
        return self.tr("Monthly L3A mosaics (DLR, Germany)")

    def group(self):
        return self.tr("Composites")

    def groupId(self):
        return "composites"

    def tags(self):
        return ["l3a", "wasp", "dlr", "monthly", "composite", "synthesis", "mosaic", "clip", "germany", "theia"]

    def shortHelpString(self):
        return self.tr(
            "DLR's Sentinel-2 Level-3A WASP composites (monthly, cloud-free surface reflectance for Germany) for an "
            "area: per month and band, the tiles that cover the area are mosaicked and clipped to it. Only the "
            "part of each remote file that meets the area is read (HTTP range requests); when the server does "
            "not support them, whole files are downloaded once into OUTPUT_FOLDER/l3a_cache (or "
            "$SENTINEL2_L3A_CACHE) and reused by later runs.\n\n"
            "AOI: a polygon layer (features dissolved; selected ones when there is a selection).\n"
            "START_MONTH / END_MONTH: YYYY-MM, both included (the service starts in 2017).\n"
            "BANDS: B2 B3 B4 B8 (10 m) and B5 B6 B7 B8A B11 B12 (20 m); each is written at its own resolution.\n"
            "URL: the folder that holds the UTM zone folders (default "
            f"{l3a.DEFAULT_URL}), e.g. a mirror.\n"
            "MAX_MASKED: months whose FLG mask marks more than this percentage of the area as no data, cloud or "
            "snow are left out (100: keep every month; the shares are in the report either way).\n"
            "STACK: one multi-band file per month (s2_l3a_YYYYMM_stack.tif, band descriptions = band names, at the "
            "finest resolution asked) instead of one file per band (s2_l3a_YYYYMM_<band>.tif).\n\n"
            "The mosaics are in the UTM zone of the tiles that hold most of the area, on the tiles' pixel grid, "
            "with the area's bounds as extent; pixels outside the area are nodata (-10000).\n"
            "Outputs: OUTPUT_LAYERS, one true-colour layer per month (s2_l3a_YYYYMM_truecolour.vrt, B4/B3/B2, "
            "stretched to the 2-98 % range, in the group 'Sentinel-2 L3A'; without those three bands, the band "
            "files); REPORT, s2_l3a_report.json: tiles, months and bands found or missing, the bytes a whole-file "
            "download would need (written before any pixel is read), then the masked shares, excluded months and "
            "files written; FAILED, one 'file: reason' line per file that could not be read, and FAILED_COUNT.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, self.tr("Area of interest"), [QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterString(self.START_MONTH, self.tr("First month (YYYY-MM)"),
                                                       defaultValue="2021-04"))
        self.addParameter(QgsProcessingParameterString(self.END_MONTH, self.tr("Last month (YYYY-MM)"),
                                                       defaultValue="2021-09"))
        self.add_enum(self.BANDS, "Bands", l3a.BANDS, DEFAULT_BANDS, multiple=True)
        self.addParameter(QgsProcessingParameterString(
            self.URL, self.tr("Server folder URL (empty: DLR's)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_MASKED, self.tr("Leave out months with more masked pixels (no data, cloud, snow) than (%)"),
            QgsProcessingParameterNumber.Type.Double, 100.0, minValue=0.0, maxValue=100.0))
        self.addParameter(QgsProcessingParameterBoolean(
            self.STACK, self.tr("One multi-band file per month"), defaultValue=False))
        self.add_output_auth()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("True-colour layers")))
        self.addOutput(QgsProcessingOutputFile(self.REPORT, self.tr("Report (JSON)")))
        self.add_failure_outputs("files")

    def process(self, parameters, context, feedback):
        start = self.parameterAsString(parameters, self.START_MONTH, context)
        end = self.parameterAsString(parameters, self.END_MONTH, context)
        bands = self.parameterAsEnumStrings(parameters, self.BANDS, context)
        url = self.parameterAsString(parameters, self.URL, context).strip() or None
        l3a.check_period(start, end)  # before reading the area: month errors need no layer work
        l3a.check_bands(bands)
        aoi = read_aoi(self, parameters, self.AOI, context, feedback)
        folder = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        progress, is_cancelled = engine_callbacks(feedback)
        with network.session() as session:
            plan = l3a.discover(aoi, start, end, bands, url=url, session=session, progress=scaled(progress, 0, 0.1),
                                is_cancelled=is_cancelled, log=feedback.pushInfo)
            result = l3a.build_mosaics(
                plan, folder, session, self.parameterAsDouble(parameters, self.MAX_MASKED, context),
                self.parameterAsBoolean(parameters, self.STACK, context), progress=scaled(progress, 0.1, 1.0),
                is_cancelled=is_cancelled, log=feedback.pushInfo)
        failures = failure_results(result.failed, feedback)
        feedback.pushInfo(f"{len(result.files)} file(s) written, {len(result.excluded)} month(s) excluded; "
                          f"report: {result.report_path}")
        for layer in result.layers:
            load_on_completion(context, layer.path, layer.name, self.OUTPUT_LAYERS, style=Stretch(layer.stretch),
                               group=GROUP)
        return {self.OUTPUT_FOLDER: folder, self.OUTPUT_LAYERS: [layer.path for layer in result.layers],
                self.REPORT: result.report_path, **failures}


class Stretch:
    """Applies a min/max stretch per band (``limits``: [low, high] per band of the layer, from the engine's
    2-98 % of the area's pixels; None for a band without data). Three bands: red/green/blue; one band: grey."""

    def __init__(self, limits):
        self.limits = list(limits)

    def __call__(self, layer):
        provider = layer.dataProvider()
        if layer.bandCount() >= 3 and len(self.limits) >= 3:
            renderer = QgsMultiBandColorRenderer(provider, 1, 2, 3)
            setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
                       renderer.setBlueContrastEnhancement)
        else:
            renderer = QgsSingleBandGrayRenderer(provider, 1)
            setters = (renderer.setContrastEnhancement,)
        for band, (setter, limits) in enumerate(zip(setters, self.limits), start=1):
            setter(_enhancement(provider.dataType(band), limits))
        layer.setRenderer(renderer)


def _enhancement(data_type, limits):
    enhancement = QgsContrastEnhancement(data_type)
    enhancement.setContrastEnhancementAlgorithm(
        QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
    if limits:
        enhancement.setMinimumValue(limits[0])
        enhancement.setMaximumValue(limits[1] if limits[1] > limits[0] else limits[0] + 1)
    return enhancement

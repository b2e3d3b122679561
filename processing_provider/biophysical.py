"""sentinel2:biophysical — LAI, FAPAR, FCOVER, CCC and CWC from Level-2A products (engine: plugin/engine/
biophysical.py, networks.py, l2a.py)."""

import os

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputString,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..plugin.aoi import read_aoi
from ..plugin.engine.errors import ParameterError, S2Error
from ..plugin.layers import load_on_completion
from .algorithm import Sentinel2Algorithm, advanced, engine_callbacks, failure_results
from .lazy import engine_module

biophysical = engine_module("biophysical")
slurm = engine_module("slurm")

# Written here (not read from the engine) so building the dialog imports no numpy.
VARIABLES = ["LAI", "FAPAR", "FCOVER", "CCC", "CWC"]
STYLES = {"LAI": "lai", "FAPAR": "fapar", "FCOVER": "fcover", "CCC": "ccc", "CWC": "cwc",
          "QUALITY": "biophysical_quality"}


class BiophysicalAlgorithm(Sentinel2Algorithm):
    INPUT_FOLDER, VARIABLES, RESOLUTION, AOI = "INPUT_FOLDER", "VARIABLES", "RESOLUTION", "AOI"
    PARALLEL, PRODUCT_FILTER, OUTPUT_FOLDER = "PARALLEL", "PRODUCT_FILTER", "OUTPUT_FOLDER"
    OUTPUT_LAYERS, PRODUCTS, JOB_ID = "OUTPUT_LAYERS", "PRODUCTS", "JOB_ID"

    def name(self):
        return "biophysical"

    def displayName(self):
        return self.tr("Biophysical variables (LAI, FAPAR, FCOVER, CCC, CWC)")

    def group(self):
        return self.tr("Analysis")

    def groupId(self):
        return "analysis"

    def tags(self):
        return ["lai", "fapar", "fcover", "fvc", "chlorophyll", "ccc", "cwc", "water", "biophysical", "snap",
                "s2toolbox", "sl2p", "neural network", "l2a", "vegetation", "s3"]

    def shortHelpString(self):
        return self.tr(
            "Estimates biophysical variables from every Level-2A product in a folder with the neural networks of "
            "ESA's Sentinel-2 Toolbox (SNAP's Biophysical Processor, version 3.0; Weiss and Baret's ATBD).\n\n"
            "INPUT_FOLDER: Sen2Cor .SAFE folders, MAJA/THEIA product folders, or the band folders that "
            "sentinel2:download writes with SOURCE=stac (they hold item.json and granule_metadata.xml).\n"
            "VARIABLES: LAI (leaf area index), FAPAR, FCOVER (fraction of vegetation cover), CCC (canopy "
            "chlorophyll content, LAI x Cab) and CWC (canopy water content, LAI x Cw).\n"
            "RESOLUTION: 20 (B3, B4, B5, B6, B7, B8A, B11, B12) or 10 (B3, B4, B8; LAI, FAPAR and FCOVER only).\n"
            "AOI: only the window of this area is read and written.\n"
            "PARALLEL: products at a time (0: automatic, by cores and memory).\n"
            "OUTPUT_FOLDER: a folder, or s3://bucket/prefix (credentials from OUTPUT_AUTH, else the AWS "
            "environment or profile; the endpoint of an S3-compatible store from OUTPUT_AUTH's URL or "
            "AWS_ENDPOINT_URL). Files are uploaded only once complete.\n\n"
            "Reflectance is (DN + BOA_ADD_OFFSET) / QUANTIFICATION_VALUE from the product's metadata (baseline "
            "04.00 and later: offset -1000). Sun and view angles come from the granule's angle grids, interpolated "
            "to every pixel. The networks of the product's platform are used (S2C and later: S2B's).\n"
            "Per product and variable a Cloud-Optimised GeoTIFF <product>_<VARIABLE>_<res>m.tif (float32, no data "
            "NaN), and <product>_QUALITY_<res>m.tif: bit flags 1 no data, 2 saturated, 4 cloud, 8 cirrus, 16 "
            "cloud shadow, 32 snow, 64 water (from SCL or MAJA's masks: these pixels are no data), 128 input "
            "outside the networks' definition domain (no data, as in SNAP), 256 an output clipped to its range, "
            "512/1024/2048/4096/8192 LAI/FAPAR/FCOVER/CCC/CWC beyond its range (kept).\n"
            "Products whose files are already in OUTPUT_FOLDER for the same area are skipped.\n"
            "EXECUTOR=slurm: one SLURM task per product (like sentinel2:sen2cor).\n\n"
            "Outputs: OUTPUT_LAYERS (loaded styled, a group per product), PRODUCTS (';'-separated names), FAILED "
            "('product: reason' lines) and FAILED_COUNT.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(
            self.INPUT_FOLDER, self.tr("Folder with Level-2A products"), QgsProcessingParameterFile.Behavior.Folder))
        self.add_enum(self.VARIABLES, "Variables", VARIABLES, ["LAI", "FAPAR", "FCOVER"], multiple=True)
        self.add_enum(self.RESOLUTION, "Resolution (m)", ["20", "10"], "20")
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, self.tr("Area of interest (only its window is read)"),
            [QgsProcessing.SourceType.TypeVectorPolygon], optional=True))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.PARALLEL, self.tr("Products at a time (0: automatic)"), QgsProcessingParameterNumber.Type.Integer, 0,
            minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterString(
            self.PRODUCT_FILTER, self.tr("Only products matching (glob, e.g. *T31TCJ*)"), optional=True)))
        self.add_slurm_parameters()
        self.add_output_auth()
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT_FOLDER, self.tr("Output folder (or s3://bucket/prefix)")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("Variable and quality layers")))
        self.addOutput(QgsProcessingOutputString(self.PRODUCTS, self.tr("Products (';'-separated)")))
        self.add_failure_outputs()
        self.addOutput(QgsProcessingOutputString(self.JOB_ID, self.tr("SLURM job id (EXECUTOR=slurm)")))

    def handles_remote_folders(self):
        return True  # the engine publishes each file itself (and skips what the bucket holds)

    def process(self, parameters, context, feedback):
        output = self.output_for(parameters, self.OUTPUT_FOLDER, context)
        variables = self.parameterAsEnumStrings(parameters, self.VARIABLES, context)
        if not variables:
            raise ParameterError(self.VARIABLES, "choose at least one variable.")
        area = None
        if parameters.get(self.AOI):
            area = read_aoi(self, parameters, self.AOI, context, feedback)
        work = biophysical.plan(
            self.parameterAsFile(parameters, self.INPUT_FOLDER, context), output, variables,
            int(self.parameterAsEnumString(parameters, self.RESOLUTION, context)), area,
            self.parameterAsString(parameters, self.PRODUCT_FILTER, context).strip() or None,
            self.parameterAsInt(parameters, self.PARALLEL, context))
        feedback.pushInfo(work.describe())
        for name in work.skipped:
            feedback.pushInfo(f"{name}: skipped, its files are already in the output folder")
        progress, is_cancelled = engine_callbacks(feedback)
        if self.parameterAsEnumString(parameters, "EXECUTOR", context) == "slurm":
            return self._on_slurm(work, parameters, context, feedback)
        try:
            result = biophysical.execute(work, progress, is_cancelled, log=feedback.pushInfo)
        finally:
            output.cleanup()
        return self._outputs(output, result.products, result.outputs, result.failed, context, feedback)

    def _on_slurm(self, work, parameters, context, feedback):  # s3:// with slurm is refused by the base class
        progress, is_cancelled = engine_callbacks(feedback)
        follow = {"progress": progress, "is_cancelled": is_cancelled, "log": feedback.pushInfo}
        wait = self.parameterAsBoolean(parameters, "WAIT", context)
        outcome = slurm.resume(work.output.folder, "biophysical", wait, **follow)
        if outcome is None:
            if work.area_wkt:
                work.area_file = _area_file(work.output.folder, work.area_wkt)
            options = slurm.parse_options(self.parameterAsString(parameters, "SLURM_OPTIONS", context))
            outcome = slurm.run(slurm.biophysical_array(work), options, wait,
                                search=[QgsApplication.applicationDirPath()], **follow)
        outputs = {}
        for path in outcome.products:
            outputs.setdefault(_product_of(path), []).append(path)
        results = self._outputs(work.output, sorted(outputs), outputs, outcome.failed, context, feedback)
        return dict(results, **{self.JOB_ID: outcome.job_id})

    def _outputs(self, output, products, outputs, failed, context, feedback):
        failures = failure_results(failed, feedback)
        if failed and not products:  # nothing to show: fail, so scripts and job arrays see a non-zero exit
            raise S2Error(f"No product could be processed ({len(failed)} failed); first: "
                          f"{failures['FAILED'].splitlines()[0]}")
        layers = []
        for name in products:
            for location in outputs.get(name, []):
                kind = os.path.basename(location)[len(name) + 1:].split("_")[0]
                load_on_completion(context, location, f"{_short(name)} {kind}", self.OUTPUT_LAYERS,
                                   style=STYLES.get(kind), group=name)
                layers.append(location)
        return {self.OUTPUT_FOLDER: output.url if hasattr(output, "url") else output.folder,
                self.OUTPUT_LAYERS: layers, self.PRODUCTS: ";".join(products), **failures}


def _product_of(path):
    base = os.path.basename(path)
    for kind in VARIABLES + ["QUALITY"]:
        marker = f"_{kind}_"
        if marker in base:
            return base[:base.rindex(marker)]
    return base


def _area_file(folder, area):
    """The AOI as GeoJSON in the output folder, for the SLURM tasks' AOI parameter."""
    from osgeo import ogr

    geometry = ogr.CreateGeometryFromWkb(area) if isinstance(area, bytes) else ogr.CreateGeometryFromWkt(area)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "biophysical-aoi.geojson")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": '
                     '"urn:ogc:def:crs:OGC:1.3:CRS84"}}, "features": [{"type": "Feature", "properties": {}, '
                     f'"geometry": {geometry.ExportToJson()}}}]}}')
    return path


def _short(product):
    """'T23LLF 2023-06-01' for layer names (the group holds the full product name)."""
    import re

    tile = re.search(r"_T?(\d{2}[A-Z]{3})(?:_|$)", product)
    date = re.search(r"(20\d{2})(\d{2})(\d{2})", product)
    if tile and date:
        return f"{tile.group(1)} {date.group(1)}-{date.group(2)}-{date.group(3)}"
    return product

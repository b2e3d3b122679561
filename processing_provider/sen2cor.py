"""sentinel2:sen2cor — L1C → L2A with Sen2Cor for every L1C product in a folder (engine: plugin/engine/sen2cor.py)."""

import os

from qgis.core import (
    QgsApplication,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsSettings,
)

from ..plugin.engine.errors import S2Error
from ..plugin.engine.files import product_stem
from ..plugin.layers import load_on_completion
from .algorithm import FAILED, Sentinel2Algorithm, advanced, engine_callbacks, failure_results
from .lazy import engine_module

sen2cor = engine_module("sen2cor")
slurm = engine_module("slurm")

# The default filter, "All files (*.*)", makes QGIS 3.22 refuse names without a dot such as L2A_Process.
ANY_FILE = "All files (*)"
LAYER_STYLES = {"TCI": ("true colour", "tci"), "SCL": ("scene classification", "scl")}


class Sen2CorAlgorithm(Sentinel2Algorithm):
    INPUT_FOLDER, EXECUTABLE, RESOLUTION, DEM_FOLDER = "INPUT_FOLDER", "EXECUTABLE", "RESOLUTION", "DEM_FOLDER"
    PROCESSING_BASELINE, GIPP, PARALLEL, PRODUCT_FILTER = "PROCESSING_BASELINE", "GIPP", "PARALLEL", "PRODUCT_FILTER"
    TIMEOUT, OUTPUT_FOLDER, PRODUCTS, OUTPUT_LAYERS = "TIMEOUT", "OUTPUT_FOLDER", "PRODUCTS", "OUTPUT_LAYERS"
    EXECUTOR, SLURM_OPTIONS, WAIT, JOB_ID = "EXECUTOR", "SLURM_OPTIONS", "WAIT", "JOB_ID"

    def name(self):
        return "sen2cor"

    def displayName(self):
        return self.tr("Atmospheric correction with Sen2Cor (L1C to L2A)")

    def group(self):
        return self.tr("Atmospheric correction")

    def groupId(self):
        return "correct"

    def tags(self):
        return ["sen2cor", "l2a_process", "l1c", "l2a", "atmospheric correction", "boa", "scl", "batch", "hpc"]

    def shortHelpString(self):
        return self.tr(
            "Runs ESA's Sen2Cor (L2A_Process, installed separately) on every Level-1C product in a folder and "
            "writes the Level-2A products, one Sen2Cor process per product, several at a time.\n\n"
            "INPUT_FOLDER: .SAFE folders or zips (directly inside or one folder down); zips are extracted for the "
            "run only. Folders that buckets drop (AUX_DATA, HTML, rep_info) are recreated. Level-2A input is "
            "refused.\n"
            "PRODUCT_FILTER: a glob on product names (*T31TCJ*, or one product name: one product per HPC task).\n"
            "EXECUTABLE: L2A_Process (L2A_Process.bat on Windows) or the Sen2Cor folder; empty: the plugin setting, "
            "then PATH, $SEN2COR_HOME/bin and the usual install folders (~/Sen2Cor-02.xx.xx-Linux64, "
            "~/.snap/auxdata/Sen2Cor-*).\n"
            "RESOLUTION: 10 (10 m and 20 m products), 20 (20 m, plus 60 m when the GIPP downsamples), 60, or all "
            "(no --resolution: Sen2Cor's default).\n"
            "DEM_FOLDER: a folder of DEM tiles (SRTM srtm_XX_YY or Copernicus DEM, e.g. from sentinel2:mergedem); "
            "empty keeps the GIPP's DEM settings.\n"
            "GIPP: an L2A_GIPP.xml to start from; empty: the one of the Sen2Cor installation. A copy is written for "
            "each run with only Nr_Threads, DEM_Directory, DEM_Reference and Generate_TCI_Output changed.\n"
            "PROCESSING_BASELINE: the baseline written into the product names (e.g. 05.10); empty: Sen2Cor's.\n"
            "PARALLEL: products at a time; 0 = automatic (CPU cores, at most one per 4 GB of available memory).\n"
            "TIMEOUT: minutes per product before Sen2Cor is stopped (0: no limit).\n"
            "EXECUTOR: local (this machine) or slurm: one SLURM job array with one task per product, each task "
            "running this algorithm with qgis_process (PRODUCT_FILTER=<product>, EXECUTOR=local), logs "
            "slurm-<job>_<task>.out in OUTPUT_FOLDER. SLURM_OPTIONS: sbatch options, e.g. --partition=short "
            "--time=02:00:00 --account=proj, or #SBATCH lines (default memory per task: 4096M). WAIT=false returns "
            "after the submission with JOB_ID; run again with the same OUTPUT_FOLDER to collect the results.\n\n"
            "Products whose L2A is already in OUTPUT_FOLDER are skipped; each product gets a log "
            "<name>.sen2cor.log in OUTPUT_FOLDER; a product counts as done only when Sen2Cor exits with 0 and its "
            "L2A product is complete. A failed product does not stop the others.\n\n"
            "Outputs: PRODUCTS, the L2A folders (made now or found) separated by ';'; FAILED, one "
            "'product: reason' line per failed product, and FAILED_COUNT, their number; OUTPUT_LAYERS, per product "
            "the true colour image and the scene classification (standard SCL palette), loaded in a group per "
            "product.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(
            self.INPUT_FOLDER, self.tr("Folder with Level-1C products"), QgsProcessingParameterFile.Behavior.Folder))
        self.add_enum(self.RESOLUTION, "Resolution (m)", list(sen2cor.RESOLUTIONS), "10")
        self.addParameter(QgsProcessingParameterFile(
            self.DEM_FOLDER, self.tr("DEM folder (empty: as the GIPP says)"),
            QgsProcessingParameterFile.Behavior.Folder, optional=True))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.EXECUTABLE, self.tr("Sen2Cor executable L2A_Process (empty: find it)"), optional=True,
            fileFilter=ANY_FILE)))
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.GIPP, self.tr("GIPP file L2A_GIPP.xml (empty: the installation's)"), extension="xml",
            optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString(
            self.PROCESSING_BASELINE, self.tr("Processing baseline (e.g. 05.10; empty: Sen2Cor's)"), optional=True)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.PARALLEL, self.tr("Products at a time (0: automatic)"), QgsProcessingParameterNumber.Type.Integer, 0,
            minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterString(
            self.PRODUCT_FILTER, self.tr("Only products matching (glob, e.g. *T31TCJ*)"), optional=True)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.TIMEOUT, self.tr("Timeout per product (minutes, 0: none)"), QgsProcessingParameterNumber.Type.Double,
            0.0, minValue=0.0)))
        self.add_slurm_parameters()
        self.add_output_auth()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Level-2A folder")))
        self.addOutput(QgsProcessingOutputString(self.PRODUCTS, self.tr("Level-2A products (';'-separated)")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("True colour and SCL layers")))
        self.add_failure_outputs()
        self.addOutput(QgsProcessingOutputString(self.JOB_ID, self.tr("SLURM job id (EXECUTOR=slurm)")))

    def process(self, parameters, context, feedback):
        if self.parameterAsEnumString(parameters, self.EXECUTOR, context) == "slurm":
            return self._on_slurm(parameters, context, feedback)
        batch = self._plan(parameters, context, feedback)
        progress, is_cancelled = engine_callbacks(feedback)
        result = sen2cor.execute(batch, progress, is_cancelled, log=feedback.pushInfo)
        return self._outputs(batch.output_folder, result, context, feedback)

    def _plan(self, parameters, context, feedback):
        batch = sen2cor.plan(
            self.parameterAsFile(parameters, self.INPUT_FOLDER, context),
            self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context),
            self._options(parameters, context),
            executable=self.parameterAsFile(parameters, self.EXECUTABLE, context) or None,
            setting=QgsSettings().value(sen2cor.SETTING_KEY, "", type=str) or None)
        self._skip_what_the_bucket_holds(batch, feedback)
        feedback.pushInfo(batch.describe())
        for note in batch.notes:
            feedback.pushWarning(note)
        for name, l2a in batch.skipped.items():
            feedback.pushInfo(f"{name}: skipped, {os.path.basename(l2a)} is already in the output folder")
        return batch

    def _skip_what_the_bucket_holds(self, batch, feedback):
        """For an s3:// OUTPUT_FOLDER: products whose L2A (same datatake) is in the bucket are not run again."""
        output, names = self.in_bucket(self.OUTPUT_FOLDER)
        stored = {sen2cor.datatake(n): n for n in names if n.endswith(".SAFE") and "_MSIL2A_" in n}
        for path in list(batch.todo):
            l2a = stored.get(sen2cor.datatake(path))
            if l2a:
                batch.todo.remove(path)
                batch.skipped[product_stem(path)] = output.url_of(l2a)

    def _on_slurm(self, parameters, context, feedback):
        """EXECUTOR=slurm: collect the job remembered in OUTPUT_FOLDER, or plan and submit one task per product."""
        output = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        wait = self.parameterAsBoolean(parameters, self.WAIT, context)
        options = slurm.parse_options(self.parameterAsString(parameters, self.SLURM_OPTIONS, context))
        progress, is_cancelled = engine_callbacks(feedback)
        follow = {"progress": progress, "is_cancelled": is_cancelled, "log": feedback.pushInfo}
        outcome = slurm.resume(output, "sen2cor", wait, **follow)
        if outcome is None:
            job = slurm.sen2cor_array(self._plan(parameters, context, feedback))
            outcome = slurm.run(job, options, wait, search=_qgis_bin_folders(), **follow)
        result = sen2cor.BatchResult(products=outcome.products, failed=outcome.failed)
        return dict(self._outputs(output, result, context, feedback), **{self.JOB_ID: outcome.job_id})

    def _options(self, parameters, context):
        timeout = self.parameterAsDouble(parameters, self.TIMEOUT, context)
        return sen2cor.Options(
            resolution=self.parameterAsEnumString(parameters, self.RESOLUTION, context),
            dem_folder=self.parameterAsFile(parameters, self.DEM_FOLDER, context) or None,
            processing_baseline=self.parameterAsString(parameters, self.PROCESSING_BASELINE, context).strip() or None,
            gipp=self.parameterAsFile(parameters, self.GIPP, context) or None,
            parallel=self.parameterAsInt(parameters, self.PARALLEL, context),
            product_filter=self.parameterAsString(parameters, self.PRODUCT_FILTER, context).strip() or None,
            timeout=timeout * 60 if timeout > 0 else None)

    def _outputs(self, output_folder, result, context, feedback):
        failures = failure_results(result.failed, feedback)
        l2a = result.products + list(result.skipped.values())
        if result.failed and not l2a:  # nothing to show: fail, so scripts and job arrays see a non-zero exit
            raise S2Error(f"Sen2Cor failed on every product ({len(result.failed)}); first: "
                          f"{failures[FAILED].splitlines()[0]}")
        layers = [path for product in l2a if not product.startswith("s3://") for path in self._load(product, context)]
        feedback.pushInfo(f"{len(result.products)} made, {len(result.skipped)} already there, "
                          f"{len(result.failed)} failed.")
        return {self.OUTPUT_FOLDER: output_folder, self.PRODUCTS: ";".join(l2a), self.OUTPUT_LAYERS: layers,
                **failures}

    def _load(self, l2a, context):
        """Ask the context to load the product's TCI and SCL, styled, in a group named after the product."""
        group = os.path.basename(l2a)[:-len(".SAFE")] if l2a.endswith(".SAFE") else os.path.basename(l2a)
        paths = []
        for kind, path in sorted(sen2cor.layers_of(l2a).items(), key=lambda item: item[0] != "TCI"):
            label, style = LAYER_STYLES[kind]
            load_on_completion(context, path, f"{_short(group)} {label}", self.OUTPUT_LAYERS, style=style,
                               group=group)
            paths.append(path)
        return paths


def _qgis_bin_folders():
    """Where qgis_process may be besides PATH: next to this QGIS (for the SLURM tasks)."""
    return [QgsApplication.applicationDirPath(), os.path.join(QgsApplication.prefixPath(), "bin")]


def _short(product):
    """'T34UDD 2023-06-01' from an L2A name, for layer names (the group holds the full name)."""
    parts = product.split("_")
    if len(parts) >= 6 and len(parts[2]) >= 8:
        date = parts[2]
        return f"{parts[5]} {date[:4]}-{date[4:6]}-{date[6:8]}"
    return product

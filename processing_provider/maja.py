"""sentinel2:maja — MAJA L2A for a tile and a period: CNES's products from GEODES, or a local MAJA run as StartMaja
runs it (engine: plugin/engine/maja.py)."""

from qgis.core import (
    QgsApplication,
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputString,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsSettings,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime

from ..plugin import credentials, network
from ..plugin.engine import http
from ..plugin.engine.errors import ParameterError, S2Error
from ..plugin.layers import load_on_completion
from .algorithm import FAILED, Sentinel2Algorithm, advanced, engine_callbacks, failure_results
from .lazy import engine_module

maja = engine_module("maja")
slurm = engine_module("slurm")

MODES = ["geodes", "local"]
BRIGHTEST = 0.2  # the true colour stretches 0–20 % reflectance: land looks natural, clouds saturate


class MajaAlgorithm(Sentinel2Algorithm):
    MODE, TILE, START, END, RELATIVE_ORBIT, MAX_CLOUD, AUTH = (
        "MODE", "TILE", "START", "END", "RELATIVE_ORBIT", "MAX_CLOUD", "AUTH")
    INPUT_FOLDER, EXECUTABLE, DTM_FOLDER, GIPP_FOLDER, OUTPUT_FOLDER = (
        "INPUT_FOLDER", "EXECUTABLE", "DTM_FOLDER", "GIPP_FOLDER", "OUTPUT_FOLDER")
    PRODUCTS, OUTPUT_LAYERS = "PRODUCTS", "OUTPUT_LAYERS"
    EXECUTOR, SLURM_OPTIONS, WAIT, JOB_ID = "EXECUTOR", "SLURM_OPTIONS", "WAIT", "JOB_ID"

    def name(self):
        return "maja"

    def displayName(self):
        return self.tr("MAJA L2A time series for a tile (GEODES or local MAJA)")

    def group(self):
        return self.tr("Atmospheric correction")

    def groupId(self):
        return "correct"

    def tags(self):
        return ["maja", "theia", "muscate", "geodes", "cnes", "peps", "startmaja", "l2a", "cloud mask",
                "atmospheric correction", "time series"]

    def shortHelpString(self):
        return self.tr(
            "MAJA Level-2A products (flat and surface reflectance, cloud mask) for one tile over a period. PEPS's "
            "on-demand MAJA processing ended with PEPS (2026-03-25); this algorithm gives the same result two "
            "ways.\n\n"
            "MODE=geodes: downloads CNES's THEIA MAJA products from GEODES (collection "
            "THEIA_REFLECTANCE_SENTINEL2_L2A). AUTH holds the GEODES API key (a Basic configuration with the key in "
            "the password field). Products already in OUTPUT_FOLDER are not downloaded again; archives are "
            "extracted and removed. The log lists the dates found and every gap longer than the 5-day revisit "
            "('no product between ... and ...'): THEIA does not issue dates above 90 % cloud. The STAC root can "
            "be changed with the environment variable SENTINEL2_GEODES_URL.\n"
            "MODE=local: runs a MAJA 4 installed on this machine (Linux) over the Level-1C products of TILE in "
            "INPUT_FOLDER (.SAFE folders or zips; other tiles, dates and orbits are left aside and said), as "
            "StartMaja does: a backward initialisation over the first 8 dates when there are 8, otherwise an "
            "initialisation, then nominal runs date by date; a gap of 15 days or more (30 before July 2017) or a "
            "failed date restarts the initialisation. Dates whose product is in OUTPUT_FOLDER are skipped. Each "
            "date has a log <L1C name>.maja.log in OUTPUT_FOLDER.\n"
            "EXECUTABLE: MAJA's bin/maja or its installation folder; empty: the plugin setting, then maja on PATH, "
            "$MAJA_HOME, $MAJA_INSTALL_DIR, /opt/maja and ~/maja.\n"
            "DTM_FOLDER: the MAJA DTM of the tile, S2__TEST_AUX_REFDE2_T<tile>_0001.HDR with its .DBL.DIR (made by "
            "StartMaja's prepare_mnt/DTMCreation.py).\n"
            "GIPP_FOLDER: MAJA's GIPP set (e.g. StartMaja's SENTINEL2_NATIF folder, or the folder holding it) for "
            "every satellite among the products. A 'userconf' folder inside it replaces the user configuration the "
            "plugin writes.\n"
            "RELATIVE_ORBIT: 0 for any orbit. MAX_CLOUD (advanced): the largest cloud share of GEODES products "
            "(MODE=geodes only).\n"
            "EXECUTOR (MODE=local): local (this machine) or slurm: a SLURM job array with one task for the tile, "
            "which runs this algorithm with qgis_process (EXECUTOR=local), log slurm-<job>_<task>.out in "
            "OUTPUT_FOLDER; memory per task: the RAM of the MAJA user configuration (8096 MB without one). "
            "SLURM_OPTIONS: sbatch options, e.g. --partition=short --time=12:00:00 --account=proj, or #SBATCH lines. "
            "WAIT=false returns after the submission with JOB_ID; run again with the same OUTPUT_FOLDER to collect "
            "the results.\n\n"
            "Outputs: PRODUCTS, the MAJA product folders separated by ';'; FAILED, one 'name: reason' line per "
            "failed date or product, and FAILED_COUNT, their number; OUTPUT_LAYERS, per date the flat "
            "reflectance in true colour (B4/B3/B2) and the cloud mask, styled, in a group per date.")

    def initAlgorithm(self, config=None):
        today = QDate.currentDate()
        self.add_enum(self.MODE, "Mode", MODES, "geodes")
        self.addParameter(QgsProcessingParameterString(self.TILE, self.tr("Tile id (e.g. 31TCJ)")))
        for name, label, default in ((self.START, "Start date", today.addDays(-60)), (self.END, "End date", today)):
            self.addParameter(QgsProcessingParameterDateTime(
                name, self.tr(label), QgsProcessingParameterDateTime.Type.Date,
                defaultValue=QDateTime(default, QTime())))
        self.addParameter(QgsProcessingParameterNumber(
            self.RELATIVE_ORBIT, self.tr("Relative orbit (0: any)"), QgsProcessingParameterNumber.Type.Integer, 0,
            minValue=0, maxValue=143))
        self.addParameter(QgsProcessingParameterAuthConfig(
            self.AUTH, self.tr("GEODES API key (MODE=geodes)"), optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.INPUT_FOLDER, self.tr("Folder with Level-1C products (MODE=local)"),
            QgsProcessingParameterFile.Behavior.Folder, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.DTM_FOLDER, self.tr("MAJA DTM folder (MODE=local)"), QgsProcessingParameterFile.Behavior.Folder,
            optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.GIPP_FOLDER, self.tr("MAJA GIPP folder (MODE=local)"), QgsProcessingParameterFile.Behavior.Folder,
            optional=True))
        # "*" and not QGIS's default "*.*", which refuses names without an extension such as maja
        self.addParameter(advanced(QgsProcessingParameterFile(
            self.EXECUTABLE, self.tr("MAJA executable bin/maja (MODE=local; empty: find it)"), optional=True,
            fileFilter="All files (*)")))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.MAX_CLOUD, self.tr("Maximum cloud cover (%, MODE=geodes)"),
            QgsProcessingParameterNumber.Type.Double, 100.0, minValue=0.0, maxValue=100.0)))
        self.add_slurm_parameters("Run on (MODE=local)")
        self.add_output_auth()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("MAJA L2A folder")))
        self.addOutput(QgsProcessingOutputString(self.PRODUCTS, self.tr("MAJA products (';'-separated)")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("True colour and cloud masks")))
        self.add_failure_outputs("dates or products")
        self.addOutput(QgsProcessingOutputString(self.JOB_ID, self.tr("SLURM job id (EXECUTOR=slurm)")))

    def process(self, parameters, context, feedback):
        mode = self.parameterAsEnumString(parameters, self.MODE, context)
        if self.parameterAsEnumString(parameters, self.EXECUTOR, context) == "slurm":
            return self._on_slurm(mode, parameters, context, feedback)
        request = self._request(parameters, context, mode)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        if mode == "geodes":
            products, failed = self._geodes(request, output, parameters, context, feedback)
        else:
            products, failed = self._local(request, output, parameters, context, feedback)
        return self._outputs(mode, output, products, failed, context, feedback)

    def _on_slurm(self, mode, parameters, context, feedback):
        """EXECUTOR=slurm: collect the job remembered in OUTPUT_FOLDER, or plan the tile and submit its task."""
        if mode != "local":
            raise ParameterError("EXECUTOR", "slurm runs a local MAJA on the cluster (MODE=local); GEODES "
                                             "downloads (MODE=geodes) run on this machine with EXECUTOR=local.")
        output = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        wait = self.parameterAsBoolean(parameters, self.WAIT, context)
        options = slurm.parse_options(self.parameterAsString(parameters, self.SLURM_OPTIONS, context))
        progress, is_cancelled = engine_callbacks(feedback)
        follow = {"progress": progress, "is_cancelled": is_cancelled, "log": feedback.pushInfo}
        outcome = slurm.resume(output, "maja", wait, **follow)
        if outcome is None:
            plan = self._plan_local(self._request(parameters, context, mode), output, parameters, context, feedback)
            job = slurm.maja_array([plan], self.parameterAsFile(parameters, self.DTM_FOLDER, context) or None,
                                   self.parameterAsFile(parameters, self.GIPP_FOLDER, context) or None)
            search = [QgsApplication.applicationDirPath(), QgsApplication.prefixPath() + "/bin"]
            outcome = slurm.run(job, options, wait, search=search, **follow)
        products = [maja.l2_product(path) for path in outcome.products]
        results = self._outputs(mode, output, [p for p in products if p], outcome.failed, context, feedback)
        return dict(results, **{self.JOB_ID: outcome.job_id})

    def _outputs(self, mode, output, products, failed, context, feedback):
        failures = failure_results(failed, feedback)
        if failed and not products:  # nothing to show: fail, so scripts and job arrays see a non-zero exit
            raise S2Error(f"MAJA ({mode}) failed for every date ({len(failed)}); first: "
                          f"{failures[FAILED].splitlines()[0]}")
        layers = [path for product in products for path in self._load(product, context)]
        return {self.OUTPUT_FOLDER: output, self.PRODUCTS: ";".join(p.path for p in products),
                self.OUTPUT_LAYERS: layers, **failures}

    def _request(self, parameters, context, mode):
        start = self.parameterAsDateTime(parameters, self.START, context).date()
        end = self.parameterAsDateTime(parameters, self.END, context).date()
        cloud = self.parameterAsDouble(parameters, self.MAX_CLOUD, context)
        return maja.period(
            self.parameterAsString(parameters, self.TILE, context), start.toPyDate(), end.toPyDate(),
            self.parameterAsInt(parameters, self.RELATIVE_ORBIT, context),
            cloud if mode == "geodes" and cloud < 100 else None)

    def _geodes(self, request, output, parameters, context, feedback):
        authcfg = self.parameterAsString(parameters, self.AUTH, context)
        key = credentials.api_key(authcfg) if authcfg else None
        progress, is_cancelled = engine_callbacks(feedback)
        with network.session(retry_methods=http.IDEMPOTENT_METHODS | {"POST"}) as session:
            result = maja.fetch_geodes(request, output, key, session=session, progress=progress,
                                       is_cancelled=is_cancelled, log=feedback.pushInfo)
        for line in result.report():
            feedback.pushInfo(line)
        if not result.dates:
            feedback.pushWarning(f"GEODES has no MAJA product for tile {request.tile} between {request.start} and "
                                 f"{request.end}.")
        return result.products, result.failed

    def _local(self, request, output, parameters, context, feedback):
        plan = self._plan_local(request, output, parameters, context, feedback)
        progress, is_cancelled = engine_callbacks(feedback)
        result = maja.run_local(plan, progress, is_cancelled, log=feedback.pushInfo)
        feedback.pushInfo(f"{len(result.products)} date(s) made, {len(result.skipped)} already there, "
                          f"{len(result.failed)} failed.")
        products = sorted(result.products + result.skipped, key=lambda p: p.date)
        return products, result.failed

    def _plan_local(self, request, output, parameters, context, feedback):
        plan = maja.plan_local(
            request, self.parameterAsFile(parameters, self.INPUT_FOLDER, context) or None, output,
            executable=self.parameterAsFile(parameters, self.EXECUTABLE, context) or None,
            setting=QgsSettings().value(maja.SETTING_KEY, "", type=str) or None,
            dtm_folder=self.parameterAsFile(parameters, self.DTM_FOLDER, context) or None,
            gipp_folder=self.parameterAsFile(parameters, self.GIPP_FOLDER, context) or None)
        feedback.pushInfo(plan.describe())
        for note in plan.notes:
            feedback.pushWarning(note)
        return plan

    def _load(self, product, context):
        """Ask the context to load the true colour and the cloud mask, styled, in a group per date."""
        group = f"MAJA T{product.tile} {product.date}"
        paths = []
        layers = maja.layers_of(product)
        for kind, label, style in (("FRE", "true colour (FRE)", _true_colour(maja.reflectance_scale(product))),
                                   ("CLM", "cloud mask (CLM)", "maja_clm")):
            if kind in layers:
                load_on_completion(context, layers[kind], f"{product.date} {label}", self.OUTPUT_LAYERS,
                                   style=style, group=group)
                paths.append(layers[kind])
        return paths


def _true_colour(scale):
    """A style callable: the same 0–20 % reflectance stretch for every date, so dates compare by eye. Without a
    readable quantification value the layer keeps QGIS's own stretch."""

    def apply(layer):
        renderer = layer.renderer()
        if not scale or not isinstance(renderer, QgsMultiBandColorRenderer):
            return
        setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
                   renderer.setBlueContrastEnhancement)
        for band, setter in enumerate(setters, 1):
            enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
            enhancement.setContrastEnhancementAlgorithm(
                QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
            enhancement.setMinimumValue(0)
            enhancement.setMaximumValue(BRIGHTEST * scale)
            setter(enhancement)

    return apply



"""Base class of the provider's algorithms: engine errors become one-sentence QgsProcessingExceptions,
and the feedback object becomes the engine's ``progress``/``is_cancelled`` callbacks."""

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..plugin.engine.errors import Cancelled, ParameterError, S2Error
from ..plugin.engine.version import help_url
from .provider import ICON

FAILED, FAILED_COUNT = "FAILED", "FAILED_COUNT"
OUTPUT_AUTH = "OUTPUT_AUTH"


class Sentinel2Algorithm(QgsProcessingAlgorithm):
    """Subclasses implement ``initAlgorithm`` and ``process(parameters, context, feedback)``."""

    def createInstance(self):
        return type(self)()

    def tr(self, text):
        return QCoreApplication.translate(type(self).__name__, text)

    def helpUrl(self):  # noqa: N802 (QGIS API name)
        return help_url(f"sentinel2-{self.name()}")  # README anchors: <a id="sentinel2-tiles">

    def svgIconPath(self):
        return ICON

    def enum_parameter(self, name, label, options, default, multiple=False, optional=False):
        """A choice parameter whose values are the option names (static strings): scripts write CATALOG=cdse."""
        parameter = QgsProcessingParameterEnum(name, self.tr(label), list(options), allowMultiple=multiple,
                                               defaultValue=default, optional=optional)
        parameter.setUsesStaticStrings(True)
        return parameter

    def add_enum(self, name, label, options, default, multiple=False, optional=False):
        self.addParameter(self.enum_parameter(name, label, options, default, multiple, optional))

    def add_slurm_parameters(self, executor_label="Run on"):
        """EXECUTOR, SLURM_OPTIONS and WAIT of the algorithms that can hand their work to SLURM."""
        # The names are slurm.EXECUTORS; written here so building the dialog does not import the engine.
        self.addParameter(advanced(self.enum_parameter("EXECUTOR", executor_label, ("local", "slurm"), "local")))
        self.addParameter(advanced(QgsProcessingParameterString(
            "SLURM_OPTIONS", self.tr("SLURM options (sbatch options or #SBATCH lines)"), multiLine=True,
            optional=True)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            "WAIT", self.tr("Wait for the SLURM job (false: submit and return its id)"), True)))

    def add_failure_outputs(self, what="products"):
        """FAILED ("product: reason" lines) and FAILED_COUNT: how every algorithm reports what did not work."""
        self.addOutput(QgsProcessingOutputString(FAILED, self.tr(f"Failed {what} ('name: reason' lines)")))
        self.addOutput(QgsProcessingOutputNumber(FAILED_COUNT, self.tr(f"Number of failed {what}")))

    def add_output_auth(self):
        """OUTPUT_AUTH: the credentials of s3:// output folders (empty: the AWS environment or profile)."""
        self.addParameter(advanced(QgsProcessingParameterAuthConfig(
            OUTPUT_AUTH, self.tr("S3 credentials for s3:// output folders (empty: AWS environment/profile)"),
            optional=True)))

    def output_for(self, parameters, name, context):
        """The engine's output (a folder, or an S3 location with OUTPUT_AUTH's credentials) of a folder parameter."""
        from ..plugin.engine import storage

        folder = self.parameterAsFileOutput(parameters, name, context)
        credentials = None
        authcfg = self.parameterAsString(parameters, OUTPUT_AUTH, context) if OUTPUT_AUTH in parameters else ""
        if storage.is_remote(folder) and authcfg:
            from ..plugin import credentials as auth

            credentials = auth.s3_credentials(authcfg)
        return storage.output_for(folder, name, credentials)

    def handles_remote_folders(self):
        """False: s3:// folder outputs are staged locally and uploaded when the algorithm is done."""
        return False

    def processAlgorithm(self, parameters, context, feedback):
        try:
            self._refuse_s3_with_slurm(parameters)
            remote = {} if self.handles_remote_folders() else self._remote_folders(parameters, context)
            if not remote:
                return self.process(parameters, context, feedback)
            staged = dict(parameters, **{name: output.staging_folder() for name, output in remote.items()})
            self.remote = remote
            try:
                results = self.process(staged, context, feedback)
                return _published(remote, results, context, feedback)
            finally:
                for output in remote.values():
                    output.cleanup()
        except Cancelled as error:
            say_once_in_qgis_process(str(error))
            feedback.reportError(str(error))
            return {}
        except S2Error as error:
            say_once_in_qgis_process(str(error))
            raise QgsProcessingException(str(error)) from None

    def process(self, parameters, context, feedback):
        raise NotImplementedError

    def in_bucket(self, name):
        """(S3 output, names under its prefix) when the folder parameter ``name`` is an s3:// location, so that a
        re-run can skip what the bucket holds; (None, empty set) for a local folder."""
        output = getattr(self, "remote", {}).get(name)
        return (output, output.names()) if output is not None else (None, set())

    def _refuse_s3_with_slurm(self, parameters):
        from ..plugin.engine import storage

        if str(parameters.get("EXECUTOR", "local")) != "slurm":
            return
        for definition in self.parameterDefinitions():
            if isinstance(definition, QgsProcessingParameterFolderDestination) and \
                    storage.is_remote(str(parameters.get(definition.name()) or "")):
                raise ParameterError(definition.name(), "EXECUTOR=slurm needs a local or shared folder (the job's "
                                                        "logs and state are kept there), not an s3:// location.")

    def _remote_folders(self, parameters, context):
        """{parameter: S3 output} of the folder outputs given as s3://..., checked before any work."""
        from ..plugin.engine import storage

        remote = {}
        for definition in self.parameterDefinitions():
            name = definition.name()
            if isinstance(definition, QgsProcessingParameterFolderDestination) and \
                    storage.is_remote(str(parameters.get(name) or "")):
                remote[name] = self.output_for(parameters, name, context)
                remote[name].prepare()
        return remote


def _published(remote, results, context, feedback):
    """Upload the staged folders and point the results (and the layers to load) at the bucket."""
    renames = {}
    for output in remote.values():
        staging = output.staging_folder()
        output.upload_tree(staging, feedback.pushInfo)
        renames[staging] = output

    def moved(value, url=False):
        if not isinstance(value, str):
            return value
        for staging, output in renames.items():
            if value.startswith(staging):
                relative = value[len(staging):].lstrip("/\\").replace("\\", "/")
                if not relative:
                    return output.url
                return output.url_of(relative) if url else output.location(relative)
        return value

    layers = context.layersToLoadOnCompletion()
    if any(moved(key) != key for key in layers):
        from ..plugin.layers import details_copy

        # QGIS deletes the post-processors of the keys that go away: the moved layers get copies
        context.setLayersToLoadOnCompletion({moved(key): details if moved(key) == key else details_copy(details)
                                             for key, details in layers.items()})
    return {key: [moved(v) for v in value] if isinstance(value, list) else
            ";".join(moved(part, url=True) for part in value.split(";")) if isinstance(value, str) else value
            for key, value in results.items()}


def say_once_in_qgis_process(sentence):
    """Let ``qgis_process`` print a failure's sentence once.

    It prints every critical message-log entry on stderr, and QGIS logs a failing algorithm's exception there
    twice (once when catching it, once more in ``QgsProcessingFeedback.reportError``) besides its own
    ``ERROR:`` line: three copies. The message log is quiet until the event loop turns again (``qgis_process``
    exits before that); with ``--json``, which prints no log on failure, the sentence goes to stderr here.
    Elsewhere (desktop, tests) nothing changes."""
    import sys

    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication, QTimer

    application = QgsApplication.instance()
    if application is None or application.platform() != "qgis_process":
        return
    arguments = QCoreApplication.arguments()
    if "--json" in arguments or arguments[-1:] == ["-"]:  # parameters from stdin imply JSON output
        sys.stderr.write(sentence + "\n")
        sys.stderr.flush()
    log = QgsApplication.messageLog()
    log.blockSignals(True)
    QTimer.singleShot(0, lambda: log.blockSignals(False))


def failure_results(failed, feedback):
    """The FAILED and FAILED_COUNT outputs of ``failed`` ({name: reason}, or "name: reason" lines), each line
    also told in the log as a warning (a partial failure: the other products are fine)."""
    items = failed.items() if isinstance(failed, dict) else ((None, line) for line in failed)
    lines = [failure_line(name, reason) for name, reason in items]
    for line in lines:
        feedback.pushWarning(line)
    return {FAILED: "\n".join(lines), FAILED_COUNT: len(lines)}


def failure_line(name, reason):
    """'name: reason', without naming the product twice when the reason already starts with its name."""
    reason = str(reason).strip()
    if not name:
        return reason
    stem = name[:-len(".SAFE")] if name.endswith(".SAFE") else name
    if any(reason.startswith(f"{known}{mark}") for known in (name, stem) for mark in (":", " ")):
        return reason
    return f"{name}: {reason}"


def advanced(parameter):
    """Mark a parameter advanced (folded away in the dialog)."""
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return parameter


def engine_callbacks(feedback):
    """``(progress, is_cancelled)`` for engine calls, reporting into a QgsProcessingFeedback."""

    def progress(fraction, message=""):
        feedback.setProgress(100.0 * fraction)
        if message:
            feedback.setProgressText(message)

    return progress, feedback.isCanceled

"""Base class of the provider's algorithms: engine errors become one-sentence QgsProcessingExceptions,
and the feedback object becomes the engine's ``progress``/``is_cancelled`` callbacks."""

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..plugin.engine.errors import Cancelled, S2Error
from ..plugin.engine.version import help_url
from .provider import ICON

FAILED, FAILED_COUNT = "FAILED", "FAILED_COUNT"


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

    def processAlgorithm(self, parameters, context, feedback):
        try:
            return self.process(parameters, context, feedback)
        except Cancelled as error:
            say_once_in_qgis_process(str(error))
            feedback.reportError(str(error))
            return {}
        except S2Error as error:
            say_once_in_qgis_process(str(error))
            raise QgsProcessingException(str(error)) from None

    def process(self, parameters, context, feedback):
        raise NotImplementedError


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

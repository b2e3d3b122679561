"""Base class of the provider's algorithms: engine errors become one-sentence QgsProcessingExceptions,
and the feedback object becomes the engine's ``progress``/``is_cancelled`` callbacks."""

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..plugin.engine.errors import Cancelled, S2Error
from .provider import ICON

HELP_URL = "https://github.com/sentinel2-pipeline/sentinel2_pipeline#algorithms"


class Sentinel2Algorithm(QgsProcessingAlgorithm):
    """Subclasses implement ``initAlgorithm`` and ``process(parameters, context, feedback)``."""

    def createInstance(self):
        return type(self)()

    def tr(self, text):
        return QCoreApplication.translate(type(self).__name__, text)

    def helpUrl(self):
        return f"{HELP_URL}-{self.name()}"

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

    def processAlgorithm(self, parameters, context, feedback):
        try:
            return self.process(parameters, context, feedback)
        except Cancelled as error:
            feedback.reportError(str(error))
            return {}
        except S2Error as error:
            raise QgsProcessingException(str(error)) from None

    def process(self, parameters, context, feedback):
        raise NotImplementedError


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

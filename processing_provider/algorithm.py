"""Base class of the provider's algorithms: engine errors become one-sentence QgsProcessingExceptions,
and the feedback object becomes the engine's ``progress``/``is_cancelled`` callbacks."""

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
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


def engine_callbacks(feedback):
    """``(progress, is_cancelled)`` for engine calls, reporting into a QgsProcessingFeedback."""

    def progress(fraction, message=""):
        feedback.setProgress(100.0 * fraction)
        if message:
            feedback.setProgressText(message)

    return progress, feedback.isCanceled

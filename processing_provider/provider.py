"""The ``sentinel2`` Processing provider: it only registers the algorithms."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..plugin.engine.version import plugin_version

ICON = os.path.join(os.path.dirname(__file__), "..", "ui", "icons", "sentinel2.svg")
MODELS = os.path.join(os.path.dirname(__file__), "..", "models")


class Sentinel2Provider(QgsProcessingProvider):
    def id(self):
        return "sentinel2"

    def name(self):
        return "Sentinel-2"

    def longName(self):
        return f"Sentinel-2 Pipeline {plugin_version()}"

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def versionInfo(self):
        return plugin_version()

    def loadAlgorithms(self):
        from .download import DownloadAlgorithm
        from .l3amosaic import L3AMosaicAlgorithm
        from .maja import MajaAlgorithm
        from .mergedem import MergeDemAlgorithm
        from .search import SearchAlgorithm
        from .sen2cor import Sen2CorAlgorithm
        from .tiles import TilesAlgorithm

        for algorithm in (TilesAlgorithm(), SearchAlgorithm(), DownloadAlgorithm(), MergeDemAlgorithm(),
                          Sen2CorAlgorithm(), MajaAlgorithm(), L3AMosaicAlgorithm()):
            self.addAlgorithm(algorithm)
        self._load_models()

    def _load_models(self):
        """The graphical models shipped in models/, listed with the algorithms (and runnable by file)."""
        import glob

        from qgis.core import QgsProcessingModelAlgorithm

        for path in sorted(glob.glob(os.path.join(MODELS, "*.model3"))):
            model = QgsProcessingModelAlgorithm()
            if model.fromFile(path):
                model.setSourceFilePath(path)
                self.addAlgorithm(model)

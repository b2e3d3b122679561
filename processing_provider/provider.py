"""The ``sentinel2`` Processing provider: it only registers the algorithms."""

import functools
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..plugin.engine.version import plugin_version

ICON = os.path.join(os.path.dirname(__file__), "..", "ui", "icons", "sentinel2.svg")
MODELS = os.path.join(os.path.dirname(__file__), "..", "models")
# The shipped models: file name (also the name scripts type: sentinel2:<name>) -> the title the toolbox shows.
SHIPPED_MODELS = {"search_download_sen2cor": "Search, download and Sen2Cor (Level-1C to Level-2A)",
                  "search_download_sen2cor_biophysical": "Search, download, Sen2Cor and biophysical variables"}


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
        from .biophysical import BiophysicalAlgorithm
        from .composite import CompositeAlgorithm
        from .download import DownloadAlgorithm
        from .l3amosaic import L3AMosaicAlgorithm
        from .maja import MajaAlgorithm
        from .mergedem import MergeDemAlgorithm
        from .search import SearchAlgorithm
        from .sen2cor import Sen2CorAlgorithm
        from .tiles import TilesAlgorithm

        for algorithm in (TilesAlgorithm(), SearchAlgorithm(), DownloadAlgorithm(), MergeDemAlgorithm(),
                          Sen2CorAlgorithm(), MajaAlgorithm(), L3AMosaicAlgorithm(), BiophysicalAlgorithm(),
                          CompositeAlgorithm()):
            self.addAlgorithm(algorithm)
        self._load_models()

    def _load_models(self):
        """The graphical models shipped in models/, listed with the algorithms (and runnable by file)."""
        import glob

        for path in sorted(glob.glob(os.path.join(MODELS, "*.model3"))):
            model = shipped_model_class()()
            if model.fromFile(path):
                model.setSourceFilePath(path)
                self.addAlgorithm(model)


@functools.lru_cache(maxsize=1)
def shipped_model_class():
    """A model read from models/ that the toolbox shows by its title, with the plugin's icon and help page; its
    name (hence its id) stays the file's, which scripts and the README use. Made on first use: the class
    derives from a QGIS class that plain imports of this module need not load."""
    from qgis.core import QgsProcessingModelAlgorithm

    from ..plugin.engine.version import help_url

    class ShippedModel(QgsProcessingModelAlgorithm):
        def displayName(self):  # noqa: N802 (QGIS API names)
            return SHIPPED_MODELS.get(self.name(), self.name())

        def helpUrl(self):  # noqa: N802
            return help_url("shipped-model")

        def svgIconPath(self):  # noqa: N802
            return ICON

        def icon(self):
            return QIcon(ICON)

        def createInstance(self):  # noqa: N802
            copy = ShippedModel()
            copy.loadVariant(self.toVariant())
            copy.setSourceFilePath(self.sourceFilePath())
            return copy

    return ShippedModel

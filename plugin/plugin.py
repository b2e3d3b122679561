"""The plugin class QGIS instantiates: registers the provider, and in the desktop adds a menu and a toolbar."""

from qgis.core import QgsApplication


class Sentinel2Plugin:
    def __init__(self, iface):
        self.iface = iface  # None under qgis_process: never touch it outside initGui/unload
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is not None:
            return
        from ..processing_provider.provider import Sentinel2Provider

        provider = Sentinel2Provider()
        # addProvider deletes the object and returns False when the id is taken: keep nothing then.
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider

    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

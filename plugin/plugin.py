"""The plugin class QGIS instantiates: registers the provider, and in the desktop adds a menu and a toolbar.

Under qgis_process ``iface`` is ``None`` and only ``initProcessing`` is called, so everything touching the GUI
lives in ``initGui``/``unload`` and the action slots. Heavy modules are imported when an action runs.
"""

from qgis.core import Qgis, QgsApplication, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from ..processing_provider.provider import ICON

PROVIDER_ID = "sentinel2"
TILES_ALGORITHM = "sentinel2:tiles"
MENU = "&Sentinel-2"
TITLE = "Sentinel-2"
TOOLBAR_OBJECT_NAME = "Sentinel2PipelineToolBar"
ACTION_PREFIX = "Sentinel2Pipeline_"
RESULTS_GROUP = "Sentinel-2"


class Sentinel2Plugin:
    def __init__(self, iface):
        self.iface = iface  # None under qgis_process: never touch it outside initGui/unload/actions
        self.provider = None
        self.toolbar = None
        self.actions = []
        self.search_dock = None

    # --- Processing (also headless) -------------------------------------------------------------------
    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is not None:
            return
        from ..processing_provider.provider import Sentinel2Provider

        provider = Sentinel2Provider()
        # addProvider deletes the object and returns False when the id is taken: keep nothing then.
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider

    # --- desktop --------------------------------------------------------------------------------------
    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()
        self.toolbar = self.iface.addToolBar(TITLE)
        self.toolbar.setObjectName(TOOLBAR_OBJECT_NAME)  # QGIS saves toolbar state by object name
        self._add_action("tiles", "Sentinel-2 tiles of the active layer", self.run_tiles_of_active_layer)
        self._add_action(
            "toolbox", "Open Sentinel-2 algorithms in the Processing toolbox", self.show_algorithms_in_toolbox
        )
        self._add_action("search_panel", "Search panel", self.show_search_panel)
        self._add_action("settings", "Settings…", self.show_settings, toolbar=False)

    def _add_action(self, name, text, slot, toolbar=True):
        action = QAction(QIcon(ICON), text, self.iface.mainWindow())
        action.setObjectName(ACTION_PREFIX + name)
        action.triggered.connect(lambda _checked=False: slot())
        self.iface.addPluginToRasterMenu(MENU, action)
        if toolbar:
            self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    def unload(self):
        from . import tasks

        self._remove_search_panel()  # first: its callbacks must not run on a dying panel
        tasks.cancel_all(discard=True)  # no results may land in the project once the plugin is gone
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions = []
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # --- actions --------------------------------------------------------------------------------------
    def run_tiles_of_active_layer(self):
        """Run ``sentinel2:tiles`` over the active vector layer in the background; returns the task or None."""
        layer = self.iface.activeLayer()
        if not isinstance(layer, QgsVectorLayer) or not layer.isSpatial():
            self._message(
                "Choose a vector layer with the area of interest in the Layers panel first.",
                Qgis.MessageLevel.Warning,
            )
            return None
        from . import tasks

        try:
            return tasks.run_algorithm_task(
                TILES_ALGORITHM,
                tiles_parameters(layer),
                on_finished=self._tiles_finished,
                description=f"Sentinel-2 tiles of {layer.name()}",
                styles={"OUTPUT": "tiles"},
                group=RESULTS_GROUP,
            )
        except ValueError as error:  # the provider is not registered (another plugin took the id)
            self._message(str(error), Qgis.MessageLevel.Critical)
            return None

    def _tiles_finished(self, ok, results):
        if ok:
            self._message(f"Tiles: {results.get('TILE_IDS') or 'none'}.", Qgis.MessageLevel.Success)

    def show_algorithms_in_toolbox(self):
        """Show the Processing toolbox filtered to this provider; returns False when there is no toolbox."""
        toolbox = processing_toolbox()
        if toolbox is None:
            self._message(
                "The Processing toolbox is not available: enable the Processing plugin in Plugins > "
                "Manage and Install Plugins.",
                Qgis.MessageLevel.Warning,
            )
            return False
        getattr(toolbox, "setUserVisible", toolbox.setVisible)(True)
        toolbox.raise_()
        toolbox.searchBox.setText(PROVIDER_ID)  # the toolbox filters on text changes
        return True

    def show_search_panel(self):
        """Show the search panel, created on first use; returns it."""
        if self.search_dock is None:
            from ..ui.search_dock import SearchDock

            self.search_dock = SearchDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.search_dock)
        self.search_dock.setUserVisible(True)
        self.search_dock.raise_()
        return self.search_dock

    def _remove_search_panel(self):
        if self.search_dock is None:
            return
        self.search_dock.shutdown()
        self.iface.removeDockWidget(self.search_dock)
        self.search_dock.deleteLater()
        self.search_dock = None

    def show_settings(self):
        from ..ui.settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec()

    def _message(self, text, level):
        self.iface.messageBar().pushMessage(TITLE, text, level, 8)


def tiles_parameters(layer):
    """Parameters of ``sentinel2:tiles`` for a layer: selected features only when there is a selection,
    output into a temporary GeoPackage that is loaded into the project when done."""
    from qgis.core import (
        QgsProcessingFeatureSourceDefinition,
        QgsProcessingOutputLayerDefinition,
        QgsProcessingUtils,
        QgsProject,
    )

    aoi = layer.id()
    if layer.selectedFeatureCount():
        aoi = QgsProcessingFeatureSourceDefinition(layer.id(), True)
    output = QgsProcessingOutputLayerDefinition(
        QgsProcessingUtils.generateTempFilename("Sentinel-2 tiles.gpkg"), QgsProject.instance()
    )
    output.destinationName = "Sentinel-2 tiles"
    return {"AOI": aoi, "MINIMAL": False, "OUTPUT": output}


def processing_toolbox():
    """The Processing plugin's toolbox dock, or None (plugin disabled, or a QGIS without that widget)."""
    from qgis import utils

    toolbox = getattr(utils.plugins.get("processing"), "toolbox", None)
    if toolbox is None or not hasattr(toolbox, "searchBox"):
        return None
    return toolbox

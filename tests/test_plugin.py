"""The plugin class as QGIS drives it: classFactory -> initGui/initProcessing -> actions -> unload.

Uses pytest-qgis' mock ``qgis_iface`` (a real main window and canvas; missing methods such as
``addPluginToRasterMenu`` are MagicMocks, which lets the tests check what the plugin asked QGIS to do).
"""

from unittest import mock

import pytest
from qgis.core import Qgis, QgsApplication, QgsFeature, QgsGeometry, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QSize, Qt
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QToolBar
from qtwait import wait_for

from sentinel2_pipeline import classFactory
from sentinel2_pipeline.plugin import plugin as plugin_module
from sentinel2_pipeline.plugin import tasks
from sentinel2_pipeline.processing_provider.provider import Sentinel2Provider

PROVIDER_ID = "sentinel2"


def flush_deletions():
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def providers():
    return [p for p in QgsApplication.processingRegistry().providers() if p.id() == PROVIDER_ID]


def plugin_actions(iface):
    return [
        a for a in iface.mainWindow().findChildren(QAction) if a.objectName().startswith(plugin_module.ACTION_PREFIX)
    ]


def plugin_toolbars(iface):
    return iface.mainWindow().findChildren(QToolBar, plugin_module.TOOLBAR_OBJECT_NAME)


def menu_calls(iface, method):
    return [c.args for c in getattr(iface, method).call_args_list]


@pytest.fixture()
def iface(qgis_iface, monkeypatch):
    """The mock interface with recorded raster menu calls and an empty message bar.

    pytest-qgis 2.x (the release for QGIS < 3.34) has no raster menu methods; newer releases mock them.
    """
    for method in ("addPluginToRasterMenu", "removePluginRasterMenu"):
        monkeypatch.setattr(qgis_iface, method, mock.MagicMock(name=method), raising=False)
    clear_messages(qgis_iface)
    yield qgis_iface
    flush_deletions()


def clear_messages(iface):
    for messages in iface.messageBar().messages.values():
        messages.clear()


@pytest.fixture()
def project(qgis_new_project):
    """An empty project (pytest-qgis 2.x's fixture returns None, newer ones the project)."""
    return QgsProject.instance()


@pytest.fixture()
def loaded(iface):
    plugin = classFactory(iface)
    plugin.initGui()
    yield plugin
    plugin.unload()


def test_init_gui_registers_the_provider_menu_and_toolbar(loaded, iface):
    [provider] = providers()
    assert provider is loaded.provider
    assert "sentinel2:tiles" in [a.id() for a in provider.algorithms()]

    actions = plugin_actions(iface)
    assert {a.text() for a in actions} == {
        "Sentinel-2 tiles of the active layer",
        "Open Sentinel-2 algorithms in the Processing toolbox",
        "Search panel",
        "Settings…",
    }
    assert all(not a.icon().isNull() for a in actions)
    assert sorted(menu_calls(iface, "addPluginToRasterMenu"), key=str) == sorted(
        [(plugin_module.MENU, a) for a in loaded.actions], key=str
    )
    [toolbar] = plugin_toolbars(iface)
    assert toolbar.windowTitle() == "Sentinel-2"
    assert toolbar.actions() == [a for a in loaded.actions if a.text() != "Settings…"]  # settings: menu only


def test_unload_removes_everything(iface):
    docks = len(iface.mainWindow().findChildren(QDockWidget))
    plugin = classFactory(iface)
    plugin.initGui()
    actions = list(plugin.actions)

    plugin.unload()
    flush_deletions()

    assert providers() == []
    assert plugin_actions(iface) == []
    assert plugin_toolbars(iface) == []
    assert sorted(menu_calls(iface, "removePluginRasterMenu"), key=str) == sorted(
        [(plugin_module.MENU, a) for a in actions], key=str
    )
    assert len(iface.mainWindow().findChildren(QDockWidget)) == docks


def test_loading_and_unloading_twice_leaves_nothing_behind(iface):
    docks = len(iface.mainWindow().findChildren(QDockWidget))
    for _ in range(2):
        plugin = classFactory(iface)
        plugin.initGui()
        flush_deletions()
        assert len(providers()) == 1
        assert len(plugin_actions(iface)) == 4
        assert len(plugin_toolbars(iface)) == 1
        plugin.unload()
        flush_deletions()

    assert providers() == []
    assert plugin_actions(iface) == []
    assert plugin_toolbars(iface) == []
    assert len(menu_calls(iface, "addPluginToRasterMenu")) == len(menu_calls(iface, "removePluginRasterMenu")) == 8
    assert len(iface.mainWindow().findChildren(QDockWidget)) == docks


def test_init_processing_alone_works_headless():
    plugin = classFactory(None)  # what qgis_process does: no iface, no initGui
    plugin.initProcessing()
    plugin.initProcessing()  # a second call must not register a second provider
    assert len(providers()) == 1
    assert QgsApplication.processingRegistry().algorithmById("sentinel2:tiles") is not None

    plugin.unload()
    assert providers() == []


def test_every_help_link_opens_a_section_of_the_readme_at_the_project_home():
    import configparser
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(os.path.join(root, "metadata.txt"), encoding="utf-8")
    home = meta.get("general", "repository").rstrip("/")
    # One home, written once: the tracker and homepage follow the repository.
    assert meta.get("general", "tracker") == f"{home}/issues" and meta.get("general", "homepage") == home
    with open(os.path.join(root, "README.md"), encoding="utf-8") as stream:
        anchors = set(re.findall(r'<a id="([\w-]+)"></a>', stream.read()))
    plugin = classFactory(None)
    plugin.initProcessing()
    try:
        algorithms = plugin.provider.algorithms()
        assert len(algorithms) >= 8
        for algorithm in algorithms:
            url, _, anchor = algorithm.helpUrl().partition("#")
            assert url == home and anchor in anchors, (algorithm.id(), algorithm.helpUrl())
    finally:
        plugin.unload()


def test_a_taken_provider_id_is_handled_without_crash(iface):
    squatter = Sentinel2Provider()
    assert QgsApplication.processingRegistry().addProvider(squatter)
    try:
        plugin = classFactory(iface)
        plugin.initGui()  # addProvider fails and deletes the plugin's provider object
        assert plugin.provider is None
        assert providers() == [squatter]
        plugin.unload()  # must not touch the deleted object
        assert providers() == [squatter]
    finally:
        QgsApplication.processingRegistry().removeProvider(squatter)
    assert providers() == []


def _aoi_layer(project):
    """Two small squares: one near Toulouse (UTM zone 31), one near Berlin (zone 33)."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "my area", "memory")
    features = []
    for name, (x, y) in (("toulouse", (1.40, 43.55)), ("berlin", (13.35, 52.45))):
        feature = QgsFeature(layer.fields())
        feature.setAttributes([name])
        feature.setGeometry(QgsGeometry.fromRect(QgsGeometry.fromWkt(f"POINT({x} {y})").buffer(0.05, 4).boundingBox()))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    project.addMapLayer(layer)
    return layer


def _run_tiles(plugin):
    task = plugin.run_tiles_of_active_layer()
    assert task is not None
    wait_for(lambda: not tasks.running_tasks(), timeout=60)
    return QgsProject.instance().mapLayersByName("Sentinel-2 tiles")


def test_tiles_action_loads_the_styled_tiles_of_the_active_layer(loaded, iface, project):
    iface.setActiveLayer(_aoi_layer(project))

    [tiles] = _run_tiles(loaded)

    tile_ids = sorted(f["tile_id"] for f in tiles.getFeatures())
    assert any(t.startswith("31T") for t in tile_ids) and any(t.startswith("33U") for t in tile_ids)
    assert tiles.source().split("|")[0].endswith(".gpkg")
    assert tiles.renderer().symbol().symbolLayer(0).brushStyle() == Qt.BrushStyle.NoBrush
    assert tiles.labelsEnabled() and tiles.labeling().settings().fieldName == "tile_id"
    group = project.layerTreeRoot().findGroup(plugin_module.RESULTS_GROUP)
    assert group is not None and group.findLayer(tiles.id()) is not None
    [success] = iface.messageBar().get_messages(Qgis.MessageLevel.Success)
    assert sorted(success.split("Tiles: ")[1].rstrip(".").split(",")) == tile_ids


def test_tiles_action_uses_only_the_selected_features(loaded, iface, project):
    layer = _aoi_layer(project)
    layer.selectByExpression("name = 'berlin'")
    iface.setActiveLayer(layer)

    [tiles] = _run_tiles(loaded)

    tile_ids = [f["tile_id"] for f in tiles.getFeatures()]
    assert "33UUU" in tile_ids  # Berlin
    assert not any(t.startswith("31") for t in tile_ids)  # Toulouse, not selected


@pytest.mark.parametrize("kind", ["none", "table"])
def test_tiles_action_without_an_active_vector_layer_warns(loaded, iface, project, kind, monkeypatch):
    if kind == "none":
        monkeypatch.setattr(iface, "activeLayer", lambda: None)
    else:
        # A layer without geometry cannot be an area of interest either.
        layer = QgsVectorLayer("None?field=name:string", "table", "memory")
        project.addMapLayer(layer)
        iface.setActiveLayer(layer)

    assert loaded.run_tiles_of_active_layer() is None
    [warning] = iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert "vector layer" in warning
    assert tasks.running_tasks() == []


def test_toolbox_action_shows_the_toolbox_filtered_to_the_provider(loaded, iface, qgis_processing, monkeypatch):
    from processing.gui.ProcessingToolbox import ProcessingToolbox
    from qgis import utils

    monkeypatch.setattr(iface, "iconSize", lambda docked=False: QSize(24, 24), raising=False)  # pytest-qgis 2.x

    class ProcessingPlugin:  # stands in for the Processing plugin object QGIS keeps in qgis.utils.plugins
        toolbox = ProcessingToolbox()

    monkeypatch.setitem(utils.plugins, "processing", ProcessingPlugin())
    assert loaded.show_algorithms_in_toolbox() is True

    toolbox = ProcessingPlugin.toolbox
    assert toolbox.isUserVisible()
    assert toolbox.searchBox.text() == PROVIDER_ID
    model = toolbox.algorithmTree.model()
    assert [model.data(model.index(row, 0)) for row in range(model.rowCount())] == ["Sentinel-2"]
    toolbox.deleteLater()


def test_toolbox_action_without_the_processing_plugin_warns(loaded, iface, monkeypatch):
    from qgis import utils

    monkeypatch.delitem(utils.plugins, "processing", raising=False)
    assert loaded.show_algorithms_in_toolbox() is False
    [warning] = iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert "Processing plugin" in warning


def test_unload_cancels_running_tasks(iface, monkeypatch):
    plugin = classFactory(iface)
    plugin.initGui()
    started = []
    monkeypatch.setattr(tasks, "cancel_all", lambda discard=False: started.append(discard) or 0)
    plugin.unload()
    assert started == [True]

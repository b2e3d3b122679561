"""The search panel as a user drives it: pytest-qgis' iface (a real main window and map canvas, offscreen), the
plugin loaded, the panel opened from its action, searches against the local Copernicus Data Space replica.

Download and Sen2Cor are driven by id; where the real algorithms matter (task wiring, chains, cancel, closing
the panel) a small test provider stands in for them with the same parameter names, so these tests do not
depend on the state of the other algorithms. The real ``sentinel2:download`` is tested when it is registered.
"""

import datetime as dt
import json
import os
import threading
import time
from unittest import mock

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingProvider,
    QgsProject,
    QgsRectangle,
    QgsSettings,
)
from qgis.PyQt.QtCore import (
    QBuffer,
    QByteArray,
    QCoreApplication,
    QDate,
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    Qt,
)
from qgis.PyQt.QtGui import QColor, QImage
from qgis.PyQt.QtWidgets import QDockWidget
from qtwait import wait_for
from replicas import odata
from servers import faults
from test_settings import basic_auth_config

from sentinel2_pipeline import classFactory
from sentinel2_pipeline.plugin import layers, settings, tasks
from sentinel2_pipeline.plugin.engine import grid
from sentinel2_pipeline.ui import search_dock
from sentinel2_pipeline.ui.pipeline_box import CHAIN, DOWNLOAD, MOSAIC
from sentinel2_pipeline.ui.results_model import COLUMNS, FID_ROLE, SORT_ROLE
from sentinel2_pipeline.ui.search_form import DRAWN, LAYER, TILES_ONLY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "build", "artifacts")
TILES = ["31TCJ", "31TDJ", "33UUU"]
PRODUCTS = odata.generate_products(TILES, dt.date(2023, 6, 1), dt.date(2023, 6, 30), 2, ("L1C", "L2A"))
START, END = QDate(2023, 6, 1), QDate(2023, 6, 30)
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
COLUMN = {field: index for index, (field, _) in enumerate(COLUMNS)}


# ---- the local catalogue, with quicklooks --------------------------------------------------------------------

def quicklook_png():
    """A 128 px picture that looks like a quicklook in the screenshot: a sea-to-land gradient and some fields."""
    from qgis.PyQt.QtCore import QPointF, QRectF
    from qgis.PyQt.QtGui import QLinearGradient, QPainter

    image = QImage(128, 128, QImage.Format.Format_RGB32)
    painter = QPainter(image)
    gradient = QLinearGradient(QPointF(0, 0), QPointF(128, 128))
    gradient.setColorAt(0, QColor("#1d4e89"))
    gradient.setColorAt(0.45, QColor("#3f7f4f"))
    gradient.setColorAt(1, QColor("#b5a36a"))
    painter.fillRect(QRectF(0, 0, 128, 128), gradient)
    for index, color in enumerate(("#6b8e23", "#c2b280", "#556b2f", "#f5f5f5")):
        painter.fillRect(QRectF(20 + 24 * index, 60 + 9 * index, 18, 14), QColor(color))
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QBuffer.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data)


@pytest.fixture(scope="module")
def replica():
    """The OData replica, plus what the quicklook lookup asks: ``Products(<Id>)?$expand=Assets`` answering the
    entity, whose QUICKLOOK asset link points back at this server."""
    server = odata.odata_test_server(odata.ODataReplica(PRODUCTS))
    image = quicklook_png()
    for product in PRODUCTS:
        asset = f"{odata.ROOT}/Assets({product['Assets'][0]['Id']})/$value"
        entity = dict(product, Assets=[dict(product["Assets"][0], DownloadLink=server.url(asset))])
        server.route(f"{odata.ROOT}/Products({product['Id']})", json.dumps(entity),
                     headers={"Content-Type": "application/json"})
        server.route(asset, image, headers={"Content-Type": "image/png"})
    yield server
    server.stop()


def area_around(tile_id, half_size=0.05):
    """A small square in EPSG:4326 at the centre of a tile, away from the overlaps with its neighbours."""
    lons, lats = grid.tile_outline(grid.parse_tile_id(tile_id), per_edge=2)
    x, y = (float(lons.min()) + float(lons.max())) / 2, (float(lats.min()) + float(lats.max())) / 2
    return QgsGeometry.fromRect(QgsRectangle(x - half_size, y - half_size, x + half_size, y + half_size))


def expected_products(tile_id="31TCJ", level="L1C"):
    return sorted(p["Name"] for p in PRODUCTS if f"_T{tile_id}_" in p["Name"] and f"MSI{level}" in p["Name"])


# ---- QGIS, the plugin and the panel --------------------------------------------------------------------------

def flush_deletions():
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture
def iface(qgis_iface, monkeypatch):
    """pytest-qgis 2.x's mock lacks the raster menu and removeDockWidget, and its addDockWidget does nothing:
    record the former, and dock into the real main window so the panel lives where QGIS would put it."""
    for method in ("addPluginToRasterMenu", "removePluginRasterMenu"):
        monkeypatch.setattr(qgis_iface, method, mock.MagicMock(name=method), raising=False)
    window = qgis_iface.mainWindow()
    monkeypatch.setattr(qgis_iface, "addDockWidget", window.addDockWidget, raising=False)
    monkeypatch.setattr(qgis_iface, "removeDockWidget", window.removeDockWidget, raising=False)
    for messages in qgis_iface.messageBar().messages.values():
        messages.clear()
    yield qgis_iface
    flush_deletions()


@pytest.fixture(autouse=True)
def panel_settings(qgis_app, tmp_path):
    """Settings of this test only: the quicklook cache and the download folder in tmp_path."""
    QgsSettings().remove("sentinel2_pipeline")
    settings.set_value(settings.CACHE_FOLDER, str(tmp_path / "quicklooks"))
    settings.set_value(settings.DOWNLOAD_FOLDER, str(tmp_path / "downloads"))
    yield
    QgsSettings().remove("sentinel2_pipeline")


@pytest.fixture
def project(qgis_new_project):
    return QgsProject.instance()


@pytest.fixture
def plugin(iface, project, qgis_processing):
    loaded = classFactory(iface)
    loaded.initGui()
    yield loaded
    loaded.unload()
    wait_for(lambda: not QgsApplication.taskManager().countActiveTasks(), timeout=30)
    flush_deletions()


@pytest.fixture
def dock(plugin, iface, replica):
    """The panel, opened from the plugin's action, set up for the Toulouse tile in June 2023 on the replica."""
    [action] = [a for a in plugin.actions if a.text() == "Search panel"]
    action.trigger()
    panel = plugin.search_dock
    panel.setFloating(True)
    panel.resize(640, 1100)
    form = panel.form
    form.set_catalog("cdse")
    form.url.setText(replica.odata_url)
    form.set_drawn_area(area_around("31TCJ"), WGS84)
    form.start.setDate(START)
    form.end.setDate(END)
    form.level.setCurrentText("L1C")
    return panel


@pytest.fixture
def canvas(dock, iface):
    """A map canvas of the panel's own, with a CRS and an extent (the area tools and the extent need them).

    Not pytest-qgis' shared canvas: given an extent, that one would start drawing the layers later tests add,
    in rendering threads, while their algorithms read the same layers (QGIS 3.22 crashed on that now and then).
    """
    from qgis.gui import QgsMapCanvas

    canvas = QgsMapCanvas()
    canvas.resize(400, 400)
    canvas.setDestinationCrs(WGS84)
    canvas.setExtent(QgsRectangle(0, 43, 2, 45))
    dock.form.canvas = canvas
    yield canvas
    dock.form.shutdown()  # its tool and outline belong to this canvas
    dock.form.canvas = iface.mapCanvas()
    canvas.deleteLater()


def search(panel, timeout=60):
    """Press Search and wait for the results; returns the footprints layer the table shows."""
    task = panel.search()
    assert task is not None, [label.text() for label in panel.form.error_labels.values()]
    wait_for(lambda: panel.search_task is None, timeout)
    assert panel.layer is not None, "the search did not produce a layer"
    return panel.layer


def table_names(panel):
    proxy = panel.proxy
    return [proxy.index(row, COLUMN["name"]).data() for row in range(proxy.rowCount())]


def select_rows(panel, rows):
    selection = QItemSelection()
    for row in rows:
        selection.select(panel.proxy.index(row, 0), panel.proxy.index(row, len(COLUMNS) - 1))
    flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
    panel.table.selectionModel().select(selection, flags)


def selected_fids_in_table(panel):
    return sorted(index.data(FID_ROLE) for index in panel.table.selectionModel().selectedRows())


def messages(iface, level):
    return iface.messageBar().get_messages(level)


# ---- search ---------------------------------------------------------------------------------------------------

def test_search_fills_the_table_and_a_styled_footprints_layer_that_agree(dock, project, replica):
    layer = search(dock)

    features = list(layer.getFeatures())
    assert sorted(f["name"] for f in features) == sorted(table_names(dock)) == expected_products()
    assert dock.summary.text().startswith(f"{len(features)} products, ")
    assert {f["tile_id"] for f in features} == {"31TCJ"} and {f["level"] for f in features} == {"L1C"}
    # The layer is the algorithm's output, in the project, in the plugin's group, styled as footprints.
    assert project.mapLayer(layer.id()) is layer
    group = project.layerTreeRoot().findGroup(search_dock.GROUP)
    assert group is not None and group.findLayer(layer.id()) is not None
    assert layer.renderer().symbol().symbolLayer(0).strokeColor().name() == "#1f78b4"  # footprints.qml
    # The search went to the replica, with the drawn area.
    filters = [q.query.get("$filter", "") for q in replica.requests_to(f"{odata.ROOT}/Products")]
    assert filters and "OData.CSC.Intersects" in filters[-1]


def test_a_search_stopped_at_max_results_says_how_many_match(dock, monkeypatch):
    form_parameters = dock.form.parameters
    monkeypatch.setattr(dock.form, "parameters", lambda: dict(form_parameters(), MAX_RESULTS=2))
    layer = search(dock)
    total = len(expected_products())
    assert layer.featureCount() == 2 < total
    assert dock.summary.text().startswith(f"2 of {total:,} products, ")


def test_the_acquisition_chart_shows_every_product_and_shares_the_selection(dock):
    from qgis.PyQt.QtCore import QPoint, Qt
    from qgis.PyQt.QtTest import QTest

    layer = search(dock)
    chart = dock.chart
    dock.show()
    features = sorted(layer.getFeatures(), key=lambda f: f["sensing_start"])
    assert len(chart.marks) == len(features) >= 3
    points = [chart.point_of(f.id()) for f in features]
    assert [p.x() for p in points] == sorted(p.x() for p in points)  # date across
    # cloud up: the cloudiest product is drawn highest
    assert min(points, key=lambda p: p.y()) == chart.point_of(max(features, key=lambda f: f["cloud_cover"]).id())

    QTest.mouseClick(chart, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[0])
    assert layer.selectedFeatureIds() == [features[0].id()] == selected_fids_in_table(dock)
    assert chart.selected == {features[0].id()}
    QTest.mouseClick(chart, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier, points[1])
    assert sorted(layer.selectedFeatureIds()) == sorted([features[0].id(), features[1].id()])
    assert selected_fids_in_table(dock) == sorted(layer.selectedFeatureIds())

    # A rectangle over the whole plot selects everything; the table and the map follow.
    QTest.mousePress(chart, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(1, 1))
    QTest.mouseMove(chart, QPoint(chart.width() - 1, chart.height() - 1))
    QTest.mouseRelease(chart, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       QPoint(chart.width() - 1, chart.height() - 1))
    assert sorted(layer.selectedFeatureIds()) == sorted(f.id() for f in features)
    # The other way: a table selection shows on the chart.
    select_rows(dock, [0])
    assert chart.selected == set(layer.selectedFeatureIds()) and len(chart.selected) == 1

    # Colours by tile or by orbit; the filter applies to the chart too.
    dock.chart_colour.setCurrentText("orbit")
    assert chart.keys() == sorted({str(f["relative_orbit"]) for f in features}, key=lambda k: (len(k), k))
    dock.filter_column.setCurrentIndex(dock.filter_column.findData(COLUMN["name"]))
    dock.filter_text.setText(features[0]["name"])
    assert [m.fid for m in chart.marks] == [features[0].id()]


def test_search_with_a_layer_uses_its_selected_features(dock, project):
    from qgis.core import QgsFeature, QgsVectorLayer

    areas = QgsVectorLayer("Polygon?crs=EPSG:4326", "my areas", "memory")
    for tile_id in ("31TCJ", "33UUU"):
        feature = QgsFeature()
        feature.setGeometry(area_around(tile_id))
        areas.dataProvider().addFeature(feature)
    project.addMapLayer(areas)
    dock.form.set_area_mode(LAYER)
    dock.form.layer.setLayer(areas)
    areas.selectByIds([f.id() for f in areas.getFeatures() if f.geometry().centroid().asPoint().x() > 10])  # Berlin

    layer = search(dock)

    assert {f["tile_id"] for f in layer.getFeatures()} == {"33UUU"}


def test_search_over_the_map_extent_in_another_crs(dock, canvas):
    from qgis.core import QgsCoordinateTransform

    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    box = area_around("33UUU").boundingBox()
    canvas.setExtent(QgsCoordinateTransform(WGS84, canvas.mapSettings().destinationCrs(), QgsProject.instance())
                     .transformBoundingBox(box))
    dock.form.set_area_mode("canvas")

    layer = search(dock)

    assert {f["tile_id"] for f in layer.getFeatures()} == {"33UUU"}


def test_a_second_search_press_cancels_the_running_search(dock, project, replica, iface):
    replica.products.fail(faults.stall(2.0))
    layers_before = set(project.mapLayers())
    task = dock.search()
    assert dock.form.search_button.text() == "Cancel search"

    assert dock.search() is None  # the same button, now cancelling
    wait_for(lambda: dock.search_task is None, 30)

    assert task.isCanceled() and dock.layer is None
    assert set(project.mapLayers()) == layers_before
    assert dock.form.search_button.text() == "Search"
    assert messages(iface, Qgis.MessageLevel.Info) == ["Sentinel-2 search in cdse:Cancelled."]


# ---- drawing the area ---------------------------------------------------------------------------------------

def mouse(tool, kind, x, y, button=Qt.MouseButton.LeftButton):
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QPoint

    buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    event = QgsMapMouseEvent(tool.canvas(), kind, QPoint(x, y), button, buttons, Qt.KeyboardModifier.NoModifier)
    handler = {QEvent.Type.MouseButtonPress: tool.canvasPressEvent, QEvent.Type.MouseMove: tool.canvasMoveEvent,
               QEvent.Type.MouseButtonRelease: tool.canvasReleaseEvent}[kind]
    handler(event)


def click(tool, x, y, button=Qt.MouseButton.LeftButton):
    mouse(tool, QEvent.Type.MouseButtonPress, x, y, button)
    mouse(tool, QEvent.Type.MouseButtonRelease, x, y, button)


def test_drawing_a_rectangle_on_the_map_makes_it_the_area(dock, canvas):
    dock.form.area_mode.setCurrentIndex(0)
    dock.form.start_drawing("rectangle")
    tool = dock.form.tool
    assert canvas.mapTool() is tool and dock.form.area_mode_value() == DRAWN

    mouse(tool, QEvent.Type.MouseButtonPress, 100, 100)
    mouse(tool, QEvent.Type.MouseMove, 200, 150)
    assert tool.band is not None  # the sketch follows the mouse
    mouse(tool, QEvent.Type.MouseButtonRelease, 300, 300)

    drawn = dock.form.drawn.boundingBox()
    to_map = canvas.getCoordinateTransform().toMapCoordinates
    corner, far = to_map(100, 100), to_map(300, 300)
    assert drawn.xMinimum() == pytest.approx(corner.x()) and drawn.xMaximum() == pytest.approx(far.x())
    assert drawn.yMaximum() == pytest.approx(corner.y()) and drawn.yMinimum() == pytest.approx(far.y())
    assert dock.form.band is not None and tool.band is None  # the area stays shown, the sketch is gone


def test_drawing_a_polygon_click_by_click(dock, canvas):
    dock.form.drawn = None
    dock.form.start_drawing("polygon")
    tool = dock.form.tool
    click(tool, 100, 100)
    click(tool, 300, 100)
    click(tool, 200, 180, Qt.MouseButton.RightButton)  # too early: two vertices are no area
    assert dock.form.drawn is None
    click(tool, 100, 100)
    click(tool, 300, 100)
    click(tool, 200, 300)
    click(tool, 0, 0, Qt.MouseButton.RightButton)  # finishes; a right click adds no vertex

    assert dock.form.drawn.constGet().vertexCount() == 4  # three vertices, closed
    assert dock.form.errors() == {}


# ---- validation before any request ----------------------------------------------------------------------------

@pytest.mark.parametrize("case, field, message", [
    ("no area", "area", "Draw a rectangle or a polygon on the map first."),
    ("no layer", "area", "Choose a polygon layer."),
    ("tiles only without tiles", "area", "Choose an area, or give tiles below."),
    ("reversed dates", "dates", "The end (2023-06-01) is before the start (2023-06-30)."),
    ("dhus without account", "auth", "The catalogue dhus needs a DHuS account: choose its authentication "
                                     "configuration."),
    ("sentinelhub without account", "auth", "The catalogue sentinelhub needs a Sentinel Hub OAuth client: choose "
                                            "its authentication configuration."),
    ("bad tile", "tiles", "'99ZZZ' is not a Sentinel-2 tile id (expected e.g. 31TCJ)."),
])
def test_bad_input_is_explained_next_to_the_field_and_nothing_is_sent(dock, replica, monkeypatch, case, field,
                                                                      message):
    monkeypatch.delenv("DHUS_USER", raising=False)
    monkeypatch.setenv("DHUS_URL", replica.url("/dhus"))  # the address may come from there, like sentinelsat's
    form = dock.form
    if case == "no area":
        form.drawn = None
        form.set_area_mode(DRAWN)
    elif case == "no layer":
        form.set_area_mode(LAYER)
    elif case == "tiles only without tiles":
        form.set_area_mode(TILES_ONLY)
    elif case == "reversed dates":
        form.start.setDate(END)
        form.end.setDate(START)
    elif case == "bad tile":
        form.tiles.setText("31TCJ, 99ZZZ")
    else:
        form.set_catalog(case.split()[0])
    requests_before = len(replica.requests)

    assert dock.search() is None

    label = form.error_labels[field]
    assert not label.isHidden() and label.text() == message
    assert [f for f, other in form.error_labels.items() if not other.isHidden()] == [field]
    assert len(replica.requests) == requests_before
    assert tasks.running_tasks() == [] and dock.search_task is None


def test_the_service_url_is_kept_per_catalogue(dock, replica):
    dock.form.set_catalog("earth-search")
    assert dock.form.url.text() == "" and "earth-search" in dock.form.url.placeholderText()
    dock.form.url.setText("http://127.0.0.1:1/v1")
    dock.form.set_catalog("cdse")
    assert dock.form.url.text() == replica.odata_url
    dock.form.set_catalog("earth-search")
    assert dock.form.url.text() == "http://127.0.0.1:1/v1"


def test_a_dhus_mirror_needs_its_address(dock, monkeypatch):
    monkeypatch.delenv("DHUS_URL", raising=False)
    dock.form.set_catalog("dhus")
    assert dock.search() is None
    assert dock.form.error_labels["url"].text() == "The catalogue dhus has no default address: give its service URL."


def test_the_error_goes_once_the_input_is_fixed(dock):
    dock.form.start.setDate(END)
    dock.form.end.setDate(START)
    assert dock.search() is None
    dock.form.end.setDate(END)
    search(dock)
    assert all(label.isHidden() for label in dock.form.error_labels.values())


# ---- table <-> map ---------------------------------------------------------------------------------------------

def test_selecting_rows_selects_their_footprints_and_the_other_way_round(dock):
    layer = search(dock)
    select_rows(dock, [0, 2, 3])
    wanted = sorted(dock.proxy.index(row, 0).data(FID_ROLE) for row in (0, 2, 3))
    assert sorted(layer.selectedFeatureIds()) == wanted

    other = dock.proxy.index(5, 0).data(FID_ROLE)
    layer.selectByIds([other])  # as the Select Features tool on the map does
    assert selected_fids_in_table(dock) == [other]

    layer.removeSelection()
    assert selected_fids_in_table(dock) == []


def test_sorting_by_column(dock):
    search(dock)
    proxy = dock.proxy

    def column(field):
        return [proxy.index(row, COLUMN[field]).data(SORT_ROLE) for row in range(proxy.rowCount())]

    assert column("sensing_start") == sorted(column("sensing_start"))  # by date at first
    dock.table.sortByColumn(COLUMN["cloud_cover"], Qt.SortOrder.DescendingOrder)
    clouds = column("cloud_cover")
    assert clouds == sorted(clouds, reverse=True) and clouds != column("sensing_start")
    dock.table.sortByColumn(COLUMN["size_bytes"], Qt.SortOrder.AscendingOrder)
    assert column("size_bytes") == sorted(column("size_bytes"))


def test_filtering_by_text_and_by_value_keeps_the_map_selection(dock):
    layer = search(dock)
    features = list(layer.getFeatures())
    clear = [f for f in features if f["cloud_cover"] < 30]
    assert 0 < len(clear) < len(features)  # the replica's clouds are spread: the filter must drop some

    dock.filter_column.setCurrentIndex(dock.filter_column.findData(COLUMN["cloud_cover"]))
    dock.filter_text.setText("< 30")
    assert sorted(table_names(dock)) == sorted(f["name"] for f in clear)

    dock.filter_column.setCurrentIndex(dock.filter_column.findData(-1))
    dock.filter_text.setText("20230605")
    assert table_names(dock) == [f["name"] for f in features if "20230605" in f["name"]]

    # Selected products hidden by a filter stay selected on the map (the actions use the map's selection).
    dock.filter_text.clear()
    select_rows(dock, range(dock.proxy.rowCount()))
    dock.filter_text.setText("20230605")
    assert len(layer.selectedFeatureIds()) == len(features)
    assert len(selected_fids_in_table(dock)) == 1


# ---- quicklooks --------------------------------------------------------------------------------------------

def quicklook_shown(panel):
    pixmap = panel.quicklook.pixmap()
    return pixmap is not None and not pixmap.isNull()


def test_the_quicklook_is_fetched_in_the_background_once_then_read_from_the_cache(dock, replica, tmp_path):
    search(dock)
    select_rows(dock, [1])
    product = next(p for p in PRODUCTS if p["Name"] == dock.proxy.index(1, 0).data())
    lookup = f"{odata.ROOT}/Products({product['Id']})"
    asset = f"{odata.ROOT}/Assets({product['Assets'][0]['Id']})/$value"
    wait_for(lambda: quicklook_shown(dock), 30)
    assert len(replica.requests_to(lookup)) == len(replica.requests_to(asset)) == 1
    assert len(os.listdir(tmp_path / "quicklooks")) == 1

    select_rows(dock, [2])
    assert not quicklook_shown(dock)  # another product: loading its own
    select_rows(dock, [0, 1])
    assert "one product" in dock.quicklook.text()
    wait_for(lambda: not dock.loader.running(), 30)
    select_rows(dock, [1])

    assert quicklook_shown(dock)  # from the cache at once, no task
    assert len(replica.requests_to(lookup)) == len(replica.requests_to(asset)) == 1


def test_screenshot_of_the_panel_with_results(dock):
    search(dock)
    dock.table.sortByColumn(COLUMN["cloud_cover"], Qt.SortOrder.AscendingOrder)
    select_rows(dock, [0])
    wait_for(lambda: quicklook_shown(dock), 30)
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, "search_dock.png")
    if os.path.exists(path):
        os.remove(path)

    assert dock.grab().save(path)

    image = QImage(path)
    assert image.width() >= 600 and image.height() >= 1000


# ---- actions: a stand-in provider for download and Sen2Cor ----------------------------------------------------

POLYGONS = QgsProcessing.SourceType.TypeVectorPolygon
RECORDED = {}
L2A_GROUP = "Stand-in L2A"
HOLD = threading.Event()  # while set, the stand-in download waits (until cancelled)


class StandInDownload(QgsProcessingAlgorithm):
    """``sentinel2:download``'s parameter names; 'downloads' a folder per product."""

    def name(self):
        return "download"

    def displayName(self):
        return "Stand-in download"

    def createInstance(self):
        return type(self)()

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", "Footprints", [POLYGONS]))
        self.addParameter(QgsProcessingParameterString("SOURCE", "Source"))
        self.addParameter(QgsProcessingParameterAuthConfig("AUTH", "Authentication", optional=True))
        self.addParameter(QgsProcessingParameterNumber("PARALLEL", "Parallel", defaultValue=4))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))

    def processAlgorithm(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, "INPUT", context)
        names = sorted(f["name"] for f in source.getFeatures())
        folder = self.parameterAsString(parameters, "OUTPUT_FOLDER", context)
        RECORDED["download"] = {"names": names, "source": self.parameterAsString(parameters, "SOURCE", context),
                                "auth": self.parameterAsString(parameters, "AUTH", context),
                                "parallel": self.parameterAsInt(parameters, "PARALLEL", context), "folder": folder}
        while HOLD.is_set() and not feedback.isCanceled():
            time.sleep(0.02)
        if feedback.isCanceled():
            RECORDED["download"]["cancelled"] = True
            return {}
        for name in names:
            os.makedirs(os.path.join(folder, name), exist_ok=True)
        return {"OUTPUT_FOLDER": folder, "DOWNLOADED": len(names), "SKIPPED": 0, "FAILED": "", "FAILED_COUNT": 0}


class StandInSen2Cor(QgsProcessingAlgorithm):
    """``sentinel2:sen2cor``'s parameter names; writes one small GeoTIFF per product and asks to load it."""

    def name(self):
        return "sen2cor"

    def displayName(self):
        return "Stand-in Sen2Cor"

    def createInstance(self):
        return type(self)()

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile("INPUT_FOLDER", "L1C folder",
                                                     QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))

    def processAlgorithm(self, parameters, context, feedback):
        from osgeo import gdal

        source = self.parameterAsFile(parameters, "INPUT_FOLDER", context)
        folder = self.parameterAsString(parameters, "OUTPUT_FOLDER", context)
        os.makedirs(folder, exist_ok=True)
        products = sorted(name for name in os.listdir(source) if name.endswith(".SAFE"))  # as the real one looks
        RECORDED["sen2cor"] = {"input": source, "products": products, "folder": folder}
        for name in products:
            path = os.path.join(folder, name.replace("MSIL1C", "MSIL2A").replace(".SAFE", "_TCI.tif"))
            raster = gdal.GetDriverByName("GTiff").Create(path, 4, 4, 3, gdal.GDT_Byte)
            raster.SetGeoTransform([400000, 10, 0, 4800000, 0, -10])
            raster = None
            layers.load_on_completion(context, path, os.path.basename(path)[:-4], "OUTPUT_LAYERS", group=L2A_GROUP)
        return {"OUTPUT_FOLDER": folder}


class StandInMosaic(QgsProcessingAlgorithm):
    """``sentinel2:l3amosaic``'s parameter names; records what it was given."""

    def name(self):
        return "l3amosaic"

    def displayName(self):
        return "Stand-in L3A mosaic"

    def createInstance(self):
        return type(self)()

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource("AOI", "Area", [POLYGONS]))
        self.addParameter(QgsProcessingParameterString("START_MONTH", "From"))
        self.addParameter(QgsProcessingParameterString("END_MONTH", "To"))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))

    def processAlgorithm(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, "AOI", context)
        [area] = [f.geometry() for f in source.getFeatures()]
        RECORDED["l3amosaic"] = {"area": area.asWkt(6), "crs": source.sourceCrs().authid(),
                                 "months": [self.parameterAsString(parameters, k, context)
                                            for k in ("START_MONTH", "END_MONTH")],
                                 "folder": self.parameterAsString(parameters, "OUTPUT_FOLDER", context)}
        return {"OUTPUT_FOLDER": RECORDED["l3amosaic"]["folder"]}


class StandInProvider(QgsProcessingProvider):
    def id(self):
        return "s2panel"

    def name(self):
        return "Sentinel-2 panel stand-ins"

    def loadAlgorithms(self):
        self.addAlgorithm(StandInDownload())
        self.addAlgorithm(StandInSen2Cor())
        self.addAlgorithm(StandInMosaic())


@pytest.fixture
def stand_ins(qgis_processing, monkeypatch):
    provider = StandInProvider()
    assert QgsApplication.processingRegistry().addProvider(provider)
    monkeypatch.setitem(search_dock.ALGORITHMS, "download", "s2panel:download")
    monkeypatch.setitem(search_dock.ALGORITHMS, "sen2cor", "s2panel:sen2cor")
    monkeypatch.setitem(search_dock.ALGORITHMS, "l3amosaic", "s2panel:l3amosaic")
    RECORDED.clear()
    HOLD.clear()
    yield
    HOLD.clear()
    wait_for(lambda: not QgsApplication.taskManager().countActiveTasks(), timeout=30)
    QgsApplication.processingRegistry().removeProvider(provider)


def wait_for_panel_tasks(panel, timeout=60):
    wait_for(lambda: not panel.running_tasks(), timeout)


def test_download_then_sen2cor_runs_as_a_chain_of_tasks_and_adds_grouped_layers(dock, stand_ins, project, iface,
                                                                              tmp_path):
    layer = search(dock)
    select_rows(dock, [0, 3])
    selected = sorted(f["name"] for f in layer.selectedFeatures())
    dock.pipeline.source.setCurrentText("aws")
    dock.pipeline.parallel.setValue(3)

    task = dock.run_action(CHAIN)
    assert task is not None and task.description() == "Sentinel-2 download of 2 products"
    wait_for(lambda: "sen2cor" in RECORDED and not dock.running_tasks(), 60)

    downloads = str(tmp_path / "downloads")
    assert RECORDED["download"] == {"names": selected, "source": "aws", "auth": "", "parallel": 3,
                                    "folder": downloads}
    assert RECORDED["sen2cor"]["input"] == downloads and RECORDED["sen2cor"]["products"] == selected
    assert RECORDED["sen2cor"]["folder"] == os.path.join(downloads, "L2A")
    # The algorithm's own grouping is kept (the panel adds no group of its own to Sen2Cor's layers).
    group = project.layerTreeRoot().findGroup(L2A_GROUP)
    corrected = [node.layer() for node in group.findLayers()]
    assert sorted(lyr.name() for lyr in corrected) == sorted(
        n.replace("MSIL1C", "MSIL2A").replace(".SAFE", "_TCI") for n in selected)
    assert messages(iface, Qgis.MessageLevel.Success) == [
        f"Sentinel-2:Downloaded 2, already there 0, failed 0: {downloads}",
        f"Sentinel-2:Sen2Cor finished: the L2A products are in {os.path.join(downloads, 'L2A')}"]


def test_a_plain_download_starts_nothing_after_it(dock, stand_ins):
    search(dock)
    select_rows(dock, [1])
    dock.pipeline.source.setCurrentText("aws")
    assert dock.run_action(DOWNLOAD) is not None
    wait_for_panel_tasks(dock)
    assert "download" in RECORDED and "sen2cor" not in RECORDED


@pytest.mark.parametrize("action, setup, field, message", [
    (DOWNLOAD, "nothing selected", "selection", "Select products in the table or on the map first."),
    (CHAIN, "L2A selected", "selection", "Sen2Cor turns L1C into L2A products: select L1C products."),
    (DOWNLOAD, "cdse without account", "auth", "Downloading from cdse needs a Copernicus Data Space account: "
                                               "choose it as the authentication of the catalogue cdse (or in "
                                               "Settings…)."),
    (DOWNLOAD, "no folder", "folder", "Choose an output folder."),
    (MOSAIC, "tiles only", "selection", "The L3A mosaic needs an area: choose an area (map extent, drawn or a "
                                        "layer)."),
])
def test_actions_explain_what_is_missing_and_start_nothing(dock, stand_ins, action, setup, field, message):
    if setup == "L2A selected":
        dock.form.level.setCurrentText("L2A")
    search(dock)
    dock.pipeline.source.setCurrentText("cdse" if setup == "cdse without account" else "aws")
    if setup not in ("nothing selected", "tiles only"):
        select_rows(dock, [0])
    if setup == "no folder":
        dock.pipeline.folder.setFilePath("")
    if setup == "tiles only":
        dock.form.set_area_mode(TILES_ONLY)

    assert dock.run_action(action) is None

    label = dock.pipeline.error_labels[field]
    assert not label.isHidden() and label.text() == message
    assert tasks.running_tasks() == [] and RECORDED == {}  # no algorithm started (a quicklook may load)


def test_l3a_mosaic_of_the_drawn_area_for_the_months_of_the_dates(dock, stand_ins, iface, tmp_path):
    drawn = area_around("33UUU")
    dock.form.set_drawn_area(drawn, WGS84)
    dock.form.end.setDate(QDate(2023, 8, 15))

    assert dock.run_action(MOSAIC) is not None  # no search or selection needed: the area is enough
    wait_for_panel_tasks(dock)

    assert RECORDED["l3amosaic"] == {"area": drawn.asWkt(6), "crs": "EPSG:4326", "months": ["2023-06", "2023-08"],
                                     "folder": str(tmp_path / "downloads" / "L3A")}
    assert messages(iface, Qgis.MessageLevel.Success) == [
        f"Sentinel-2:L3A mosaics finished: they are in {tmp_path / 'downloads' / 'L3A'}"]


def test_an_algorithm_that_is_not_registered_is_reported_not_run(dock, stand_ins, iface, monkeypatch):
    monkeypatch.setitem(search_dock.ALGORITHMS, "l3amosaic", "s2panel:nothing")
    search(dock)

    assert dock.run_action(MOSAIC) is None

    assert messages(iface, Qgis.MessageLevel.Warning) == [
        "Sentinel-2:The algorithm s2panel:nothing is not available in this version of the plugin."]
    assert tasks.running_tasks() == []


def test_cancelling_the_download_task_stops_the_chain(dock, stand_ins, iface):
    search(dock)
    select_rows(dock, [0])
    dock.pipeline.source.setCurrentText("aws")
    HOLD.set()
    task = dock.run_action(CHAIN)
    wait_for(lambda: "download" in RECORDED, 30)

    task.cancel()  # what the task manager's cancel button does
    wait_for_panel_tasks(dock)

    assert RECORDED["download"].get("cancelled") and "sen2cor" not in RECORDED
    folder = RECORDED["download"]["folder"]
    assert not any(os.path.isdir(os.path.join(folder, name)) for name in RECORDED["download"]["names"])
    assert messages(iface, Qgis.MessageLevel.Info) == ["Sentinel-2 download of 1 product:Cancelled."]


def test_closing_the_panel_cancels_its_tasks(dock, stand_ins, project, iface):
    search(dock)
    select_rows(dock, [0])
    dock.pipeline.source.setCurrentText("aws")
    HOLD.set()
    dock.run_action(CHAIN)
    wait_for(lambda: "download" in RECORDED, 30)
    layers_before = set(project.mapLayers())
    dock.form.start_drawing("polygon")
    assert iface.mapCanvas().mapTool() is dock.form.tool

    dock.close()
    wait_for_panel_tasks(dock)

    assert RECORDED["download"].get("cancelled") and "sen2cor" not in RECORDED
    assert set(project.mapLayers()) == layers_before
    assert iface.mapCanvas().mapTool() is None and dock.form.band is None  # nothing left on the map


def test_closing_the_panel_during_a_search_cancels_it(dock, project, replica):
    replica.products.fail(faults.stall(2.0))
    layers_before = set(project.mapLayers())
    task = dock.search()

    dock.close()
    wait_for(lambda: dock.search_task is None, 30)

    assert task.isCanceled() and dock.layer is None
    assert set(project.mapLayers()) == layers_before


def test_unloading_during_a_search_removes_the_panel_and_loads_nothing(plugin, dock, iface, project, replica):
    replica.products.fail(faults.stall(2.0))
    layers_before = set(project.mapLayers())
    dock.search()

    plugin.unload()
    flush_deletions()
    wait_for(lambda: not QgsApplication.taskManager().countActiveTasks(), 30)

    assert plugin.search_dock is None
    assert not [d for d in iface.mainWindow().findChildren(QDockWidget) if d.objectName() == "Sentinel2SearchDock"]
    assert set(project.mapLayers()) == layers_before
    plugin.initGui()  # the fixture unloads once more


def test_the_actions_show_one_panel_and_the_settings_dialog(plugin, iface, monkeypatch):
    from sentinel2_pipeline.ui import settings_dialog

    actions = {a.text(): a for a in plugin.actions}
    actions["Search panel"].trigger()
    first = plugin.search_dock
    first.close()
    assert first.isHidden()
    actions["Search panel"].trigger()  # shows the same panel again (the main window itself is not shown here)
    assert plugin.search_dock is first and not first.isHidden()
    assert [d for d in iface.mainWindow().findChildren(QDockWidget) if d.objectName() == "Sentinel2SearchDock"] == [
        first]

    shown = []
    monkeypatch.setattr(settings_dialog.SettingsDialog, "exec", lambda self: shown.append(self) or 0)
    actions["Settings…"].trigger()
    assert len(shown) == 1 and shown[0].parent() is iface.mainWindow()


def test_loading_and_unloading_twice_with_the_panel_open_leaves_no_panel(iface, project, qgis_processing):
    docks = len(iface.mainWindow().findChildren(QDockWidget))
    for _ in range(2):
        loaded = classFactory(iface)
        loaded.initGui()
        dock = loaded.show_search_panel()
        dock.form.start_drawing("polygon")
        assert iface.mapCanvas().mapTool() is dock.form.tool
        assert len(iface.mainWindow().findChildren(QDockWidget)) == docks + 1
        loaded.unload()
        flush_deletions()
        assert iface.mapCanvas().mapTool() is None
    assert len(iface.mainWindow().findChildren(QDockWidget)) == docks


# ---- the real algorithms ------------------------------------------------------------------------------------

def require(*alg_ids):
    missing = [a for a in alg_ids if QgsApplication.processingRegistry().algorithmById(a) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} is not registered in this build of the plugin yet")


def test_the_panel_gives_the_real_algorithms_parameters_they_accept(dock, monkeypatch, tmp_path):
    """What each button hands to plugin.tasks passes the real algorithm's own checks (names and values)."""
    require(*search_dock.ALGORITHMS.values())
    started = []

    def record(alg_id, params, on_finished=None, description=None, styles=None, group=None):
        started.append((alg_id, params))
        if on_finished and alg_id.endswith(":download"):
            os.makedirs(params["OUTPUT_FOLDER"], exist_ok=True)
            on_finished(True, {"OUTPUT_FOLDER": params["OUTPUT_FOLDER"]})  # so the chain goes on to Sen2Cor
        return None

    layer = search(dock)
    monkeypatch.setattr(search_dock.tasks, "run_algorithm_task", record)
    settings.set_auth_config("cdse", "abc1234")  # an id is all the panel needs to hand on
    select_rows(dock, [0])
    dock.search()
    dock.run_action(CHAIN)
    dock.run_action(MOSAIC)

    assert [alg for alg, _ in started] == ["sentinel2:search", "sentinel2:download", "sentinel2:sen2cor",
                                           "sentinel2:l3amosaic"]
    from qgis.core import QgsProcessingContext

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    for alg_id, params in started:
        algorithm = QgsApplication.processingRegistry().algorithmById(alg_id)
        names = {p.name() for p in algorithm.parameterDefinitions()}
        assert set(params) <= names, (alg_id, set(params) - names)
        params = dict(params, AUTH=None) if "AUTH" in params else params  # no such configuration here
        ok, message = algorithm.checkParameterValues(params, context)
        assert ok, (alg_id, message)
    source = started[1][1]["INPUT"]
    assert source.source.staticValue() == layer.id() and source.selectedFeaturesOnly


@pytest.fixture
def cdse_service(tmp_path, monkeypatch):
    """A local Copernicus Data Space for a real download: the catalogue (three L1C products of 31TCJ whose zips
    are real-layout SAFEs), their ``$value`` downloads behind a token, the identity service, and the account
    as a QGIS authentication configuration remembered for cdse."""
    from replicas.identity import Identity
    from test_download import safe_zip

    server = odata.odata_test_server(odata.ODataReplica([]))
    identity = Identity(server, "alice@example.org", "pa55-W0rd!cdse")
    for product in odata.generate_products(["31TCJ"], dt.date(2023, 6, 1), dt.date(2023, 6, 3), 1):
        body = safe_zip(tmp_path, product["Name"])
        served = odata.with_content(product, body)
        server.replica.records.append(odata._Record(served, {}))
        server.route(odata.value_path(served), handler=lambda request, body=body: (
            (401, {}, b"") if identity.check(request.headers.get("Authorization")) else
            (200, {"Content-Type": "application/zip"}, body)))
    monkeypatch.setenv("SENTINEL2_CDSE_DOWNLOAD_URL", server.odata_url)
    monkeypatch.setenv("SENTINEL2_CDSE_TOKEN_URL", identity.url)
    authcfg = basic_auth_config("CDSE (panel test)", "alice@example.org", "pa55-W0rd!cdse")
    settings.set_auth_config("cdse", authcfg)
    yield server
    server.stop()
    QgsApplication.authManager().removeAuthenticationConfig(authcfg)


def test_real_download_of_the_selection(dock, cdse_service, iface, tmp_path):
    require("sentinel2:download")
    dock.form.url.setText(cdse_service.odata_url)
    layer = search(dock)
    select_rows(dock, [1])
    [name] = [f["name"] for f in layer.selectedFeatures()]
    dock.pipeline.source.setCurrentText("auto")

    assert dock.run_action(DOWNLOAD) is not None
    wait_for_panel_tasks(dock, 120)

    folder = str(tmp_path / "downloads")
    assert sorted(n for n in os.listdir(folder) if n.endswith(".SAFE")) == [name]
    assert os.path.isfile(os.path.join(folder, name, "manifest.safe"))
    assert messages(iface, Qgis.MessageLevel.Success) == [
        f"Sentinel-2:Downloaded 1, already there 0, failed 0: {folder}"]


def test_real_download_then_sen2cor_adds_the_corrected_layers(dock, cdse_service, iface, project, tmp_path,
                                                            monkeypatch):
    require("sentinel2:download", "sentinel2:sen2cor")
    standin = os.path.join(ROOT, "tests", "standins", "L2A_Process")
    settings.set_value(settings.SEN2COR, standin)  # the algorithm finds Sen2Cor through the plugin setting
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "0.2")
    monkeypatch.setenv("STANDIN_SEN2COR_PIXELS", "30")
    dock.form.url.setText(cdse_service.odata_url)
    layer = search(dock)
    select_rows(dock, [0])
    [name] = [f["name"] for f in layer.selectedFeatures()]

    assert dock.run_action(CHAIN) is not None
    l2a = str(tmp_path / "downloads" / "L2A")
    done = f"Sentinel-2:Sen2Cor finished: the L2A products are in {l2a}"
    wait_for(lambda: done in messages(iface, Qgis.MessageLevel.Success)
             or messages(iface, Qgis.MessageLevel.Critical), 180)

    assert messages(iface, Qgis.MessageLevel.Critical) == []
    [product] = [n for n in os.listdir(l2a) if n.endswith(".SAFE")]
    assert "MSIL2A" in product and "_T31TCJ_" in product and name.split("_")[2] in product
    added = [lyr for lyr in project.mapLayers().values() if lyr.source().startswith(os.path.join(l2a, product))]
    assert len(added) == 2  # the true colour image and the scene classification, in the product's group
    group = project.layerTreeRoot().findGroup(product[:-len(".SAFE")])
    assert group is not None and {node.layer() for node in group.findLayers()} == set(added)

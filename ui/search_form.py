"""The search half of the panel: catalogue, credentials, area, dates, level, cloud, tiles; validation shown next
to the fields; the parameters of ``sentinel2:search`` built from what the user chose.

The area is the map canvas extent, a rectangle or polygon drawn on the map, a polygon layer (its selected
features when it has a selection), or none when tiles are given. Drawn and canvas areas become a memory layer
made here, on the main thread, which the algorithm only reads (no temporary file to write or to clean up).
"""

import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsMapLayerProxyModel,
    QgsProcessingFeatureSourceDefinition,
    QgsVectorLayer,
)
from qgis.gui import QgsAuthConfigSelect, QgsDateEdit, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QDate, QDateTime, QTime, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..plugin import settings
from ..plugin.engine import catalogs, grid
from ..plugin.engine.errors import ParameterError
from .area_tool import POLYGON, RECTANGLE, AreaTool, new_band, remove_band

CANVAS, DRAWN, LAYER, TILES_ONLY = "canvas", "drawn", "layer", "tiles"
AREA_MODES = [(CANVAS, "Map canvas extent"), (DRAWN, "Drawn on the map"), (LAYER, "Layer"),
              (TILES_ONLY, "None (tiles only)")]
LEVELS = ["L2A", "L1C"]
# Catalogues whose search needs an account: (label, environment variables that may stand in for AUTH).
SEARCH_NEEDS_AUTH = {"dhus": ("a DHuS account", ("DHUS_USER", "DHUS_PASSWORD")),
                     "sentinelhub": ("a Sentinel Hub OAuth client", ())}
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
ERROR_STYLE = "color: #c0392b;"


def search_errors(catalog, authcfg, url, area_error, start, end, tiles, environ=None):
    """``{field: sentence}`` for what stops a search before any request; empty when it may start.

    ``area_error``: what is wrong with the chosen area ('' when it is usable); ``start``/``end``: QDates.
    """
    environ = os.environ if environ is None else environ
    errors = {}
    needed = SEARCH_NEEDS_AUTH.get(catalog)
    if needed and not authcfg and not (needed[1] and all(environ.get(name) for name in needed[1])):
        errors["auth"] = f"The catalogue {catalog} needs {needed[0]}: choose its authentication configuration."
    if not url and not catalogs.default_url(catalog) and not environ.get("DHUS_URL"):
        errors["url"] = f"The catalogue {catalog} has no default address: give its service URL."
    if area_error:
        errors["area"] = area_error
    if not start.isValid() or not end.isValid():
        errors["dates"] = "Choose a start and an end date."
    elif start > end:
        errors["dates"] = (f"The end ({end.toString('yyyy-MM-dd')}) is before the start "
                           f"({start.toString('yyyy-MM-dd')}).")
    try:
        grid.parse_tile_list(tiles)
    except ParameterError as error:
        message = str(error)
        errors["tiles"] = message[len("TILES: "):] if message.startswith("TILES: ") else message
    return errors


class SearchForm(QWidget):
    """Emits ``searchRequested`` when the Search button is pressed (the dock validates and runs)."""

    searchRequested = pyqtSignal()

    def __init__(self, iface, parent=None):
        super().__init__(parent)
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.drawn, self.drawn_crs = None, None
        self.tool, self.band = None, None
        self.error_labels = {}
        self._urls, self._url_catalog = {}, None  # service URL typed per catalogue (a mirror fits one only)
        self._build()
        self.set_catalog(settings.default_catalog())

    # --- widgets --------------------------------------------------------------------------------------
    def _build(self):
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.catalog = QComboBox()
        self.catalog.addItems(list(catalogs.CATALOGS))
        self.catalog.currentTextChanged.connect(self._catalog_changed)
        form.addRow("Catalogue", self.catalog)
        self.auth = QgsAuthConfigSelect(self)
        self.auth.selectedConfigIdChanged.connect(self._auth_changed)
        form.addRow("Authentication", self.auth)
        self._error_row(form, "auth")
        self.url = QLineEdit()
        self.url.setClearButtonEnabled(True)
        form.addRow("Service URL", self.url)
        self._error_row(form, "url")
        form.addRow("Area", self._area_widgets())
        self._error_row(form, "area")
        form.addRow("Dates", self._date_widgets())
        self._error_row(form, "dates")
        form.addRow("Level", self._level_widgets())
        self.tiles = QLineEdit()
        self.tiles.setPlaceholderText("optional, e.g. 31TCJ, 31TDJ")
        form.addRow("Tiles", self.tiles)
        self._error_row(form, "tiles")
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.searchRequested)
        form.addRow(self.search_button)

    def _error_row(self, form, field):
        label = QLabel()
        label.setObjectName(f"error_{field}")
        label.setStyleSheet(ERROR_STYLE)
        label.setWordWrap(True)
        label.hide()
        form.addRow("", label)
        self.error_labels[field] = label

    def _area_widgets(self):
        box = QWidget()
        column = QFormLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        self.area_mode = QComboBox()
        for mode, label in AREA_MODES:
            self.area_mode.addItem(label, mode)
        self.area_mode.currentIndexChanged.connect(self._area_mode_changed)
        column.addRow(self.area_mode)
        self.draw_buttons = QWidget()
        row = QHBoxLayout(self.draw_buttons)
        row.setContentsMargins(0, 0, 0, 0)
        for mode, text in ((RECTANGLE, "Draw rectangle"), (POLYGON, "Draw polygon")):
            button = QPushButton(text)
            button.setObjectName(f"draw_{mode}")
            button.clicked.connect(lambda _checked=False, m=mode: self.start_drawing(m))
            row.addWidget(button)
        column.addRow(self.draw_buttons)
        self.layer = QgsMapLayerComboBox()
        self.layer.setFilters(_polygon_layer_filter())
        self.layer.setToolTip("Its selected features when it has a selection, otherwise all of them.")
        column.addRow(self.layer)
        self._area_mode_changed()
        return box

    def _date_widgets(self):
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        today = QDate.currentDate()
        self.start, self.end = QgsDateEdit(), QgsDateEdit()
        for edit, value in ((self.start, today.addDays(-30)), (self.end, today)):
            edit.setAllowNull(False)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setCalendarPopup(True)
            edit.setDate(value)
        row.addWidget(self.start)
        row.addWidget(QLabel("to"))
        row.addWidget(self.end)
        return box

    def _level_widgets(self):
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        self.level = QComboBox()
        self.level.addItems(LEVELS)
        row.addWidget(self.level)
        row.addWidget(QLabel("Max. cloud"))
        self.max_cloud = QSpinBox()
        self.max_cloud.setRange(0, 100)
        self.max_cloud.setValue(100)
        self.max_cloud.setSuffix(" %")
        row.addWidget(self.max_cloud)
        return box

    # --- catalogue and credentials --------------------------------------------------------------------
    def set_catalog(self, catalog):
        index = self.catalog.findText(catalog)
        self.catalog.setCurrentIndex(max(index, 0))
        self._catalog_changed(self.catalog.currentText())

    def _catalog_changed(self, catalog):
        if self._url_catalog not in (None, catalog):
            self._urls[self._url_catalog] = self.url.text()
            self.url.setText(self._urls.get(catalog, ""))
        self._url_catalog = catalog
        self.auth.blockSignals(True)  # showing the remembered id is not a new choice to remember
        self.auth.setConfigId(settings.auth_config(catalog))
        self.auth.blockSignals(False)
        self.url.setPlaceholderText(catalogs.default_url(catalog) or "required: the DHuS root, or DHUS_URL")

    def _auth_changed(self, authcfg):
        settings.set_auth_config(self.catalog.currentText(), authcfg)

    # --- area -----------------------------------------------------------------------------------------
    def area_mode_value(self):
        return self.area_mode.currentData()

    def set_area_mode(self, mode):
        self.area_mode.setCurrentIndex(self.area_mode.findData(mode))

    def _area_mode_changed(self):
        mode = self.area_mode_value()
        self.draw_buttons.setVisible(mode == DRAWN)
        self.layer.setVisible(mode == LAYER)
        if mode != DRAWN:
            self.stop_drawing()
        self._show_band(mode == DRAWN)

    def start_drawing(self, mode):
        """Make the area tool the canvas' map tool; the next area drawn becomes the search area."""
        self.stop_drawing()
        self.set_area_mode(DRAWN)
        self.tool = AreaTool(self.canvas, mode)
        self.tool.areaDrawn.connect(self.set_drawn_area)
        self.canvas.setMapTool(self.tool)

    def stop_drawing(self):
        if self.tool is not None:
            if self.canvas.mapTool() is self.tool:
                self.canvas.unsetMapTool(self.tool)
            self.tool.reset()
            self.tool = None

    def set_drawn_area(self, geometry, crs=None):
        """Use ``geometry`` (in ``crs``, default the canvas CRS) as the drawn area and show it on the map."""
        self.drawn = QgsGeometry(geometry)
        self.drawn_crs = crs or self.canvas.mapSettings().destinationCrs()
        self.set_area_mode(DRAWN)
        self._show_band(True)
        self.show_errors({})

    def _show_band(self, visible):
        remove_band(self.canvas, self.band)
        self.band = None
        if visible and self.drawn is not None:
            self.band = new_band(self.canvas)
            self.band.setToGeometry(self.drawn, self.drawn_crs)

    def area_error(self):
        """What is wrong with the chosen area, or ''."""
        mode = self.area_mode_value()
        if mode == DRAWN and self.drawn is None:
            return "Draw a rectangle or a polygon on the map first."
        if mode == CANVAS and not self.canvas.mapSettings().destinationCrs().isValid():
            return "The map has no coordinate reference system: choose another area."
        if mode == LAYER:
            layer = self.layer.currentLayer()
            if layer is None:
                return "Choose a polygon layer."
            if layer.featureCount() == 0:
                return f"The layer {layer.name()} has no features."
        if mode == TILES_ONLY and not self.tiles.text().strip():
            return "Choose an area, or give tiles below."
        return ""

    def area_parameter(self):
        """The AOI value for the algorithms (None for tiles only); call after validation. A memory layer must
        be kept alive by the caller until the algorithm has finished."""
        mode = self.area_mode_value()
        if mode == LAYER:
            layer = self.layer.currentLayer()
            return QgsProcessingFeatureSourceDefinition(layer.id(), layer.selectedFeatureCount() > 0)
        if mode == CANVAS:
            crs = self.canvas.mapSettings().destinationCrs()
            return area_layer(QgsGeometry.fromRect(self.canvas.extent()), crs)
        if mode == DRAWN:
            return area_layer(self.drawn, self.drawn_crs)
        return None

    # --- validation and parameters --------------------------------------------------------------------
    def errors(self):
        return search_errors(self.catalog.currentText(), self.auth.configId(), self.url.text().strip(),
                             self.area_error(),
                             self.start.date(), self.end.date(), self.tiles.text())

    def show_errors(self, errors):
        for field, label in self.error_labels.items():
            label.setText(errors.get(field, ""))
            label.setVisible(field in errors)

    def validate(self):
        errors = self.errors()
        self.show_errors(errors)
        return not errors

    def parameters(self):
        """``sentinel2:search`` parameters, without OUTPUT; call after :meth:`validate`."""
        params = {"CATALOG": self.catalog.currentText(), "AUTH": self.auth.configId() or None,
                  "START": QDateTime(self.start.date(), QTime(0, 0)), "END": QDateTime(self.end.date(), QTime(0, 0)),
                  "LEVEL": self.level.currentText(), "MAX_CLOUD": float(self.max_cloud.value()),
                  "TILES": self.tiles.text().strip()}
        if self.url.text().strip():
            params["URL"] = self.url.text().strip()
        area = self.area_parameter()
        if area is not None:
            params["AOI"] = area
        return params

    def service_url(self):
        catalog = self.catalog.currentText()
        return self.url.text().strip() or catalogs.default_url(catalog)

    def shutdown(self):
        """Leave nothing on the canvas: our map tool and the area outline (the panel closes or unloads)."""
        self.stop_drawing()
        remove_band(self.canvas, self.band)
        self.band = None

    def restore(self):
        self._show_band(self.area_mode_value() == DRAWN)


def area_layer(geometry, crs):
    """A memory layer holding ``geometry`` in ``crs`` (the algorithms reproject and densify it themselves)."""
    layer = QgsVectorLayer("Polygon", "Sentinel-2 search area", "memory")
    layer.setCrs(crs)
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry(geometry))
    layer.dataProvider().addFeature(feature)
    return layer


def _polygon_layer_filter():
    """Polygon layers: ``Qgis.LayerFilter`` from QGIS 3.34, QgsMapLayerProxyModel's enum before."""
    from qgis.core import Qgis

    if hasattr(Qgis, "LayerFilter"):
        return Qgis.LayerFilter.PolygonLayer
    return QgsMapLayerProxyModel.Filter.PolygonLayer

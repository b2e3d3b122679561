"""A map tool to draw the search area: a rectangle (press, drag, release) or a polygon (left click per vertex,
right click or Enter to finish, Backspace removes the last vertex, Esc starts again)."""

from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle, QgsWkbTypes
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

RECTANGLE, POLYGON = "rectangle", "polygon"
AREA_COLOR = QColor(227, 26, 28)


def polygon_geometry_type():
    """The polygon geometry type for rubber bands: ``Qgis.GeometryType`` from QGIS 3.30, QgsWkbTypes before."""
    from qgis.core import Qgis

    if hasattr(Qgis, "GeometryType"):
        return Qgis.GeometryType.Polygon
    return QgsWkbTypes.GeometryType.PolygonGeometry


def new_band(canvas, fill_alpha=40):
    band = QgsRubberBand(canvas, polygon_geometry_type())
    band.setStrokeColor(AREA_COLOR)
    band.setFillColor(QColor(AREA_COLOR.red(), AREA_COLOR.green(), AREA_COLOR.blue(), fill_alpha))
    band.setWidth(2)
    return band


def remove_band(canvas, band):
    """Take a rubber band off the canvas (the scene owns it; leaving it there would outlive the plugin)."""
    if band is not None and band.scene() is not None:
        band.scene().removeItem(band)


class AreaTool(QgsMapTool):
    """Emits ``areaDrawn`` with the polygon in the canvas CRS, then stays active for another one."""

    areaDrawn = pyqtSignal(QgsGeometry)

    def __init__(self, canvas, mode=RECTANGLE):
        super().__init__(canvas)
        self.mode = mode
        self.band = None
        self.points = []
        self.start = None
        self.setCursor(Qt.CursorShape.CrossCursor)

    def canvasPressEvent(self, event):  # noqa: N802 (QGIS API name)
        if self.mode == RECTANGLE and event.button() == Qt.MouseButton.LeftButton:
            self.start = self.toMapCoordinates(event.pos())

    def canvasMoveEvent(self, event):  # noqa: N802 (QGIS API name)
        point = self.toMapCoordinates(event.pos())
        if self.mode == RECTANGLE and self.start is not None:
            self._sketch(QgsGeometry.fromRect(QgsRectangle(self.start, point)))
        elif self.mode == POLYGON and self.points:
            self._sketch(_polygon(self.points + [point]))

    def canvasReleaseEvent(self, event):  # noqa: N802 (QGIS API name)
        point = self.toMapCoordinates(event.pos())
        if self.mode == RECTANGLE:
            if self.start is not None and event.button() == Qt.MouseButton.LeftButton:
                self._finish(QgsGeometry.fromRect(QgsRectangle(self.start, point)))
        elif event.button() == Qt.MouseButton.RightButton:
            self._finish(_polygon(self.points))
        elif event.button() == Qt.MouseButton.LeftButton:
            self.points.append(QgsPointXY(point))
            self._sketch(_polygon(self.points))

    def keyPressEvent(self, event):  # noqa: N802 (QGIS API name)
        key = event.key()
        if key == Qt.Key.Key_Escape:
            self.reset()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.mode == POLYGON:
            self._finish(_polygon(self.points))
        elif key == Qt.Key.Key_Backspace and self.points:
            self.points.pop()
            self._sketch(_polygon(self.points))
        else:
            event.ignore()
            return
        event.accept()

    def deactivate(self):
        self.reset()
        super().deactivate()

    def reset(self):
        self.points, self.start = [], None
        remove_band(self.canvas(), self.band)
        self.band = None

    def _sketch(self, geometry):
        if self.band is None:
            self.band = new_band(self.canvas(), fill_alpha=20)
        self.band.setToGeometry(geometry, None)

    def _finish(self, geometry):
        self.reset()
        # A click without dragging, or fewer than three vertices, is not an area: ignore it quietly.
        if geometry is not None and not geometry.isEmpty() and geometry.area() > 0:
            self.areaDrawn.emit(geometry)


def _polygon(points):
    if len(points) < 3:
        return QgsGeometry.fromPolylineXY(points) if len(points) == 2 else QgsGeometry()
    return QgsGeometry.fromPolygonXY([points + [points[0]]])

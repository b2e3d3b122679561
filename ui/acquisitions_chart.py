"""The acquisition overview under the search results: one mark per product, sensing date across, cloud cover up,
coloured by tile or by relative orbit. Clicking a mark selects its product (Ctrl adds or removes it), dragging a
rectangle selects every product inside, a click on empty ground clears; the panel keeps this selection, the
table's and the map's the same.

A plain QWidget painted with QPainter: Qt Charts is not installed with QGIS everywhere.
"""

import datetime as dt

from qgis.PyQt.QtCore import QPoint, QRect, QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QPainter, QPen
from qgis.PyQt.QtWidgets import QRubberBand, QToolTip, QWidget

# Qualitative colours (ColorBrewer Set1 and Dark2), distinguishable on white; repeated past the sixteenth key.
PALETTE = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999",
           "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
RADIUS = 4
PICK = 7  # pixels from a mark that still pick it
MARGIN_RIGHT = 10
LEGEND_KEYS = 8  # keys named above the plot; more are summed up as "+N"
COLOUR_KEYS = {"tile": "tile_id", "orbit": "relative_orbit"}


class Mark:
    __slots__ = ("fid", "when", "cloud", "key", "label")

    def __init__(self, fid, when, cloud, key, label):
        self.fid, self.when, self.cloud, self.key, self.label = fid, when, cloud, key, label


class AcquisitionChart(QWidget):
    """``set_rows`` gives the products, ``set_selected`` the selection to draw; ``selectionRequested(fids, add)``
    asks for a new selection (``add``: toggle ``fids`` in the current one)."""

    selectionRequested = pyqtSignal(list, bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.marks = []
        self._rows = []
        self.selected = set()
        self.colour_by = "tile"
        self._origin = None
        self._band = QRubberBand(QRubberBand.Shape.Rectangle, self)
        self.setMinimumHeight(110)
        self.setMouseTracking(True)
        self.setToolTip("Sensing date and cloud cover of each product: click or drag to select")

    def sizeHint(self):  # noqa: N802 (Qt API name)
        return QSize(320, 140)

    # --- data -------------------------------------------------------------------------------------------------
    def set_rows(self, rows):
        """``rows``: results_model Rows (fid and attribute values); products without date or cloud are left out."""
        self.marks = []
        for row in rows:
            when, cloud = _timestamp(row.values.get("sensing_start")), row.values.get("cloud_cover")
            if when is None or cloud is None:
                continue
            key = row.values.get(COLOUR_KEYS[self.colour_by])
            self.marks.append(Mark(row.fid, when, float(cloud), "" if key is None else str(key),
                                   row.values.get("name") or ""))
        self._rows = list(rows)
        self.update()

    def set_colour_by(self, what):
        self.colour_by = what
        self.set_rows(self._rows)

    def set_selected(self, fids):
        self.selected = set(fids)
        self.update()

    def keys(self):
        """The colour keys in legend order (tiles or orbits, sorted)."""
        return sorted({m.key for m in self.marks}, key=lambda k: (len(k), k) if k.isdigit() else (0, k))

    def colour_of(self, key):
        keys = self.keys()
        return QColor(PALETTE[keys.index(key) % len(PALETTE)]) if key in keys else QColor("#000000")

    # --- geometry ---------------------------------------------------------------------------------------------
    def _margins(self):
        """(left, top, bottom): room for the cloud labels, the legend and the dates, in the widget's font."""
        metrics = self.fontMetrics()
        return metrics.horizontalAdvance("100%") + 8, metrics.height() + 4, metrics.height() + 2

    def _plot(self):
        left, top, bottom = self._margins()
        return QRect(left, top, max(self.width() - left - MARGIN_RIGHT, 1), max(self.height() - top - bottom, 1))

    def _span(self):
        times = [m.when for m in self.marks]
        start, end = min(times), max(times)
        pad = max((end - start) * 0.03, 3600.0)
        return start - pad, end + pad

    def point_of(self, fid):
        """Where the mark of ``fid`` is drawn (None when it has none)."""
        for mark in self.marks:
            if mark.fid == fid:
                return self._point(mark)
        return None

    def _point(self, mark):
        plot = self._plot()
        start, end = self._span()
        x = plot.left() + (mark.when - start) / (end - start) * plot.width()
        y = plot.bottom() - min(max(mark.cloud, 0.0), 100.0) / 100.0 * plot.height()
        return QPoint(round(x), round(y))

    def mark_at(self, position):
        best, best_distance = None, PICK * PICK
        for mark in self.marks:
            point = self._point(mark)
            distance = (point.x() - position.x()) ** 2 + (point.y() - position.y()) ** 2
            if distance <= best_distance:
                best, best_distance = mark, distance
        return best

    # --- painting ---------------------------------------------------------------------------------------------
    def paintEvent(self, event):  # noqa: N802 (Qt API name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        plot = self._plot()
        painter.fillRect(self.rect(), self.palette().base())
        painter.setPen(QPen(self.palette().mid().color()))
        painter.drawRect(plot)
        text = self.palette().text().color()
        painter.setPen(text)
        left, top, bottom = self._margins()
        for cloud in (0, 50, 100):
            y = plot.bottom() - cloud / 100 * plot.height()
            painter.drawText(QRect(0, int(y) - top // 2, left - 4, top),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{cloud}%")
        if not self.marks:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No products to show")
            return
        start, end = self._span()
        for when, align in ((start, Qt.AlignmentFlag.AlignLeft), (end, Qt.AlignmentFlag.AlignRight)):
            label = dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%d")
            painter.drawText(QRect(plot.left(), plot.bottom() + 2, plot.width(), bottom),
                             align | Qt.AlignmentFlag.AlignTop, label)
        self._legend(painter, plot, text, top)
        for mark in sorted(self.marks, key=lambda m: m.fid in self.selected):  # selected marks on top
            colour = self.colour_of(mark.key)
            point = self._point(mark)
            chosen = mark.fid in self.selected
            painter.setPen(QPen(text if chosen else colour.darker(130), 2 if chosen else 1))
            painter.setBrush(colour)
            radius = RADIUS + (2 if chosen else 0)
            painter.drawEllipse(point, radius, radius)

    def _legend(self, painter, plot, text, top):
        x = plot.left()
        keys = self.keys()
        metrics = painter.fontMetrics()
        for key in keys[:LEGEND_KEYS]:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self.colour_of(key))
            painter.drawEllipse(QPoint(x + RADIUS, top // 2), RADIUS, RADIUS)
            painter.setPen(text)
            painter.drawText(x + 2 * RADIUS + 3, top // 2 + metrics.ascent() // 2 - 1, key)
            x += 2 * RADIUS + 10 + metrics.horizontalAdvance(key)
        if len(keys) > LEGEND_KEYS:
            painter.drawText(x, top // 2 + metrics.ascent() // 2 - 1, f"+{len(keys) - LEGEND_KEYS}")

    # --- mouse ------------------------------------------------------------------------------------------------
    def mousePressEvent(self, event):  # noqa: N802 (Qt API name)
        if event.button() != Qt.MouseButton.LeftButton:
            return
        self._origin = _position(event)
        self._band.setGeometry(QRect(self._origin, QSize()))
        self._band.show()

    def mouseMoveEvent(self, event):  # noqa: N802 (Qt API name)
        position = _position(event)
        if self._origin is not None:
            self._band.setGeometry(QRect(self._origin, position).normalized())
            return
        mark = self.mark_at(position)
        if mark is not None:
            when = dt.datetime.fromtimestamp(mark.when, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            QToolTip.showText(_global(event), f"{mark.label}\n{when}, {mark.cloud:.1f} % cloud, "
                                              f"{self.colour_by} {mark.key}", self)

    def mouseReleaseEvent(self, event):  # noqa: N802 (Qt API name)
        if self._origin is None:
            return
        origin, position = self._origin, _position(event)
        self._origin = None
        self._band.hide()
        add = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        area = QRect(origin, position).normalized()
        if area.width() > PICK or area.height() > PICK:
            fids = [m.fid for m in self.marks if area.contains(self._point(m))]
        else:
            mark = self.mark_at(position)
            fids = [mark.fid] if mark is not None else []
        if fids or not add:
            self.selectionRequested.emit(fids, add)


def _timestamp(value):
    """Seconds since the epoch of a QDateTime, a datetime or an ISO text; None when there is no date."""
    if value is None:
        return None
    if hasattr(value, "toMSecsSinceEpoch"):
        return value.toMSecsSinceEpoch() / 1000.0 if value.isValid() else None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp()


def _position(event):
    """The event's position in widget pixels (Qt 5 ``pos()``, Qt 6 ``position()``)."""
    if hasattr(event, "position"):
        return event.position().toPoint()
    return event.pos()


def _global(event):
    if hasattr(event, "globalPosition"):
        return event.globalPosition().toPoint()
    return event.globalPos()

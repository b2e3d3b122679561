"""The search results as a table: one row per feature of a footprints layer, sortable and filterable by column.

Rows are read once from the layer (a local GeoPackage written by ``sentinel2:search``) and keyed by feature
id, which is what keeps the table and the map selection in step.
"""

import re

from qgis.PyQt.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QVariant

# (field of the footprints schema, header)
COLUMNS = [("name", "Name"), ("sensing_start", "Date"), ("tile_id", "Tile"), ("cloud_cover", "Cloud %"),
           ("size_bytes", "MB"), ("online", "Online")]
FIELDS = [field for field, _ in COLUMNS] + ["id", "provider", "level", "relative_orbit"]  # orbit: the chart
SORT_ROLE = Qt.ItemDataRole.UserRole  # raw values, so dates and numbers sort as such
FID_ROLE = Qt.ItemDataRole.UserRole + 1
NUMBER_ROLE = Qt.ItemDataRole.UserRole + 2  # what numeric filters (< 20) compare: cloud %, size in MB
NUMERIC = {"cloud_cover", "size_bytes"}
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
RIGHT = int(getattr(_RIGHT, "value", _RIGHT))  # views read alignment as an int (PyQt6 flags carry it in .value)


def plain(value):
    """None for NULL (QGIS 3 gives a null QVariant, QGIS 4 None), the value otherwise."""
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    return value


class Row:
    __slots__ = ("fid", "values")

    def __init__(self, feature):
        self.fid = feature.id()
        names = feature.fields().names()
        self.values = {name: plain(feature[name]) if name in names else None for name in FIELDS}


class FootprintsModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows = []
        self._by_fid = {}

    def set_features(self, features):
        self.beginResetModel()
        self.rows = [Row(feature) for feature in features]
        self._by_fid = {row.fid: index for index, row in enumerate(self.rows)}
        self.endResetModel()

    def row_of_fid(self, fid):
        return self._by_fid.get(fid)

    def rowCount(self, parent=QModelIndex()):  # noqa: B008,N802 (Qt API)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):  # noqa: B008,N802 (Qt API)
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 (Qt API)
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][1]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        field = COLUMNS[index.column()][0]
        value = row.values[field]
        if role == Qt.ItemDataRole.DisplayRole:
            return display(field, value)
        if role == SORT_ROLE:
            return sort_key(field, value)
        if role == NUMBER_ROLE:
            return number(field, value)
        if role == FID_ROLE:
            return row.fid
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip(row.values)
        if role == Qt.ItemDataRole.TextAlignmentRole and field in NUMERIC:
            return RIGHT
        return None


def display(field, value):
    if value is None:
        return "?" if field == "online" else ""
    if field == "sensing_start":  # the day: the time is in the tooltip, and sorting uses it
        return value.toString("yyyy-MM-dd") if hasattr(value, "toString") else str(value)[:10]
    if field == "cloud_cover":
        return f"{value:.1f}"
    if field == "size_bytes":
        return f"{value / 1e6:,.0f}"
    if field == "online":
        return "yes" if value else "no"
    return str(value)


def tooltip(values):
    sensing = values["sensing_start"]
    when = sensing.toUTC().toString("yyyy-MM-dd HH:mm:ss 'UTC'") if hasattr(sensing, "toUTC") else str(sensing)
    return f"{values['name']}\nsensed {when}\n{values['provider']} · {values['level']} · id {values['id']}"


def number(field, value):
    if value is None or field not in NUMERIC:
        return None
    return value / 1e6 if field == "size_bytes" else float(value)


def sort_key(field, value):
    if field == "sensing_start":
        return value.toMSecsSinceEpoch() if value is not None and hasattr(value, "toMSecsSinceEpoch") else -1
    if field in NUMERIC:
        return -1.0 if value is None else float(value)
    if field == "online":
        return -1 if value is None else int(bool(value))
    return "" if value is None else str(value)


_COMPARISON = re.compile(r"^\s*(<=|>=|<|>|=)\s*(-?\d+(?:\.\d*)?)\s*$")
_OPERATORS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__, "=": float.__eq__}


class FootprintsFilter(QSortFilterProxyModel):
    """Keeps rows whose column (or any column) contains the text, case-insensitively; for the cloud and size
    columns a comparison such as ``< 20`` or ``>= 500`` (MB) filters by value."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.text, self.column = "", -1

    def set_filter(self, text, column=-1):
        self.text, self.column = text.strip(), column
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row, source_parent):  # noqa: N802 (Qt API)
        if not self.text:
            return True
        columns = [self.column] if self.column >= 0 else range(len(COLUMNS))
        model = self.sourceModel()
        return any(self._matches(model.index(source_row, column, source_parent)) for column in columns)

    def _matches(self, index):
        comparison = _COMPARISON.match(self.text)
        if comparison and COLUMNS[index.column()][0] in NUMERIC:
            value = index.data(NUMBER_ROLE)
            return value is not None and _OPERATORS[comparison.group(1)](float(value), float(comparison.group(2)))
        return self.text.lower() in (index.data(Qt.ItemDataRole.DisplayRole) or "").lower()

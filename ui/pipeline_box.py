"""The actions half of the panel: download options (those of ``sentinel2:download``) and the buttons Download,
Download then Sen2Cor, and L3A mosaic of the area, with their checks shown before anything starts.

Credentials are the accounts remembered per catalogue (the panel's authentication selector and the settings
dialog): a download from the Copernicus Data Space uses the ``cdse`` account, and so on.
"""

import os

from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QWidget

from ..plugin import settings

SOURCES = ["auto", "cdse", "aws", "dhus", "stac"]
# Whose account a download uses, when it needs one (aws takes the standard AWS environment or profile).
ACCOUNT_NEEDED = {"cdse": "a Copernicus Data Space account", "cdse-stac": "a Copernicus Data Space account",
                  "geodes": "a GEODES API key", "dhus": "a DHuS account",
                  "sentinelhub": "a Copernicus Data Space account"}
DOWNLOAD, CHAIN, MOSAIC = "download", "chain", "mosaic"
ERROR_STYLE = "color: #c0392b;"


def account_catalog(source, providers):
    """The catalogue whose remembered account a download from ``source`` uses ('' for none)."""
    if source in ("cdse", "dhus"):
        return source
    if source == "aws" or not providers:
        return ""
    return sorted(providers)[0]  # auto/stac: where the products were found


def download_errors(action, source, providers, levels, folder, authcfg, area_error="", environ=None):
    """``{field: sentence}`` for what stops ``action`` (DOWNLOAD, CHAIN or MOSAIC) before it starts.

    ``providers``/``levels``: of the selected products; ``authcfg``: the account :func:`account_catalog` gives.
    """
    environ = os.environ if environ is None else environ
    errors = {}
    if not folder:
        errors["folder"] = "Choose an output folder."
    if action == MOSAIC:
        if area_error:
            errors["selection"] = f"The L3A mosaic needs an area: {area_error[0].lower()}{area_error[1:]}"
        return errors
    if not providers:
        errors["selection"] = "Select products in the table or on the map first."
    elif action == CHAIN and "L1C" not in levels:
        errors["selection"] = "Sen2Cor turns L1C into L2A products: select L1C products."
    catalog = account_catalog(source, providers)
    dhus_from_environment = catalog == "dhus" and environ.get("DHUS_USER") and environ.get("DHUS_PASSWORD")
    if catalog in ACCOUNT_NEEDED and not authcfg and not dhus_from_environment:
        errors["auth"] = (f"Downloading from {catalog} needs {ACCOUNT_NEEDED[catalog]}: choose it as the "
                          f"authentication of the catalogue {catalog} (or in Settings…).")
    return errors


class PipelineBox(QgsCollapsibleGroupBox):
    """Options and buttons; emits ``actionRequested(action)`` with DOWNLOAD, CHAIN or MOSAIC."""

    actionRequested = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__("Download and process", parent)
        self.error_labels = {}
        form = QFormLayout(self)
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setToolTip("auto: the catalogue each product was found in")
        self.parallel = QSpinBox()
        self.parallel.setRange(1, 16)
        self.parallel.setValue(settings.parallel_downloads())
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(self.source, 1)
        line.addWidget(QLabel("Parallel"))
        line.addWidget(self.parallel)
        form.addRow("Source", row)
        self._error_row(form, "auth")
        self.folder = QgsFileWidget()
        self.folder.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder.setFilePath(settings.download_folder())
        form.addRow("Output folder", self.folder)
        self._error_row(form, "folder")
        form.addRow(self._buttons())
        self._error_row(form, "selection")

    def _buttons(self):
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        self.buttons = {}
        for action, text, tip in (
                (DOWNLOAD, "Download", "Download the selected products"),
                (CHAIN, "Download + Sen2Cor", "Download the selected L1C products, then correct them to L2A"),
                (MOSAIC, "L3A mosaic", "DLR's monthly Level-3A mosaics of the area for the months of the dates")):
            button = QPushButton(text)
            button.setObjectName(f"action_{action}")
            button.setToolTip(tip)
            button.clicked.connect(lambda _checked=False, a=action: self.actionRequested.emit(a))
            row.addWidget(button)
            self.buttons[action] = button
        return box

    def _error_row(self, form, field):
        label = QLabel()
        label.setObjectName(f"error_{field}")
        label.setStyleSheet(ERROR_STYLE)
        label.setWordWrap(True)
        label.hide()
        form.addRow("", label)
        self.error_labels[field] = label

    def show_errors(self, errors):
        for field, label in self.error_labels.items():
            label.setText(errors.get(field, ""))
            label.setVisible(field in errors)

    def output_folder(self):
        return self.folder.filePath().strip()

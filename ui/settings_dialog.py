"""The plugin's settings dialog (Raster ▸ Sentinel-2 ▸ Settings…).

Accounts are chosen as QGIS authentication configurations with QGIS's own selector, which can also create and
edit them; passwords and keys are typed only into QGIS's encrypted authentication database, never here.
"""

from qgis.gui import QgsAuthConfigSelect, QgsFileWidget
from qgis.PyQt.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QGroupBox, QSpinBox, QVBoxLayout

from ..plugin import settings
from ..plugin.engine import catalogs

ACCOUNTS = [("cdse", "Copernicus Data Space"), ("geodes", "GEODES (API key)"), ("dhus", "DHuS mirror"),
            ("sentinelhub", "Sentinel Hub (OAuth client)")]


class SettingsDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Sentinel-2 Pipeline settings")
        layout = QVBoxLayout(self)
        layout.addWidget(self._general())
        layout.addWidget(self._accounts())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.load()

    def _general(self):
        box = QGroupBox("General")
        form = QFormLayout(box)
        self.catalog = QComboBox()
        self.catalog.addItems(list(catalogs.CATALOGS))
        form.addRow("Default catalogue", self.catalog)
        self.download_folder = _file_widget(QgsFileWidget.StorageMode.GetDirectory)
        form.addRow("Download folder", self.download_folder)
        self.parallel = QSpinBox()
        self.parallel.setRange(1, 16)
        self.parallel.setToolTip("The Copernicus Data Space allows 4 downloads at a time per user.")
        form.addRow("Parallel downloads", self.parallel)
        self.sen2cor = _file_widget(QgsFileWidget.StorageMode.GetFile)
        self.sen2cor.setToolTip("L2A_Process (L2A_Process.bat on Windows); empty: found on PATH or in the usual "
                                "installation folders")
        form.addRow("Sen2Cor executable", self.sen2cor)
        self.maja = _file_widget(QgsFileWidget.StorageMode.GetFile)
        form.addRow("MAJA executable", self.maja)
        self.cache = QSpinBox()
        self.cache.setRange(0, 100_000)
        self.cache.setSuffix(" MB")
        form.addRow("Quicklook cache", self.cache)
        return box

    def _accounts(self):
        box = QGroupBox("Accounts (QGIS authentication configurations)")
        form = QFormLayout(box)
        self.accounts = {}
        for catalog, label in ACCOUNTS:
            selector = QgsAuthConfigSelect(self)
            selector.setObjectName(f"auth_{catalog}")
            form.addRow(label, selector)
            self.accounts[catalog] = selector
        return box

    def load(self):
        self.catalog.setCurrentIndex(max(0, self.catalog.findText(settings.default_catalog())))
        self.download_folder.setFilePath(settings.download_folder())
        self.parallel.setValue(settings.parallel_downloads())
        self.sen2cor.setFilePath(settings.sen2cor_executable())
        self.maja.setFilePath(settings.maja_executable())
        self.cache.setValue(settings.quicklook_cache_mb())
        for catalog, selector in self.accounts.items():
            selector.setConfigId(settings.auth_config(catalog))

    def save(self):
        settings.set_value(settings.CATALOG, self.catalog.currentText())
        settings.set_value(settings.DOWNLOAD_FOLDER, self.download_folder.filePath().strip())
        settings.set_value(settings.PARALLEL, self.parallel.value())
        settings.set_value(settings.SEN2COR, self.sen2cor.filePath().strip())
        settings.set_value(settings.MAJA, self.maja.filePath().strip())
        settings.set_value(settings.CACHE_MB, self.cache.value())
        for catalog, selector in self.accounts.items():
            settings.set_auth_config(catalog, selector.configId())

    def accept(self):
        self.save()
        super().accept()


def _file_widget(mode):
    widget = QgsFileWidget()
    widget.setStorageMode(mode)
    return widget

"""The Sentinel-2 search panel: search a catalogue for an area and dates, see the footprints on the map and in a
table that stay selected together, preview quicklooks, and download, correct or mosaic in the background.

Everything that touches the network runs in QGIS tasks: the Processing algorithms through :mod:`..plugin.tasks`
(the same ``sentinel2:*`` algorithms the toolbox runs, so panel and toolbox behave the same) and the quicklooks
through :mod:`.quicklook`. Closing the panel cancels what it started; the plugin's unload calls
:meth:`SearchDock.shutdown` before deleting it.
"""

import os

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProject,
    QgsTask,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFilterLineEdit
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QItemSelection, QItemSelectionModel, Qt
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..plugin import settings, tasks
from ..plugin.plugin import RESULTS_GROUP as GROUP
from .acquisitions_chart import AcquisitionChart
from .pipeline_box import CHAIN, DOWNLOAD, MOSAIC, PipelineBox, account_catalog, download_errors
from .quicklook import QuicklookLoader, key_of
from .results_model import COLUMNS, FID_ROLE, FootprintsFilter, FootprintsModel
from .search_form import TILES_ONLY, SearchForm

TITLE = "Sentinel-2"
# The algorithms the panel drives, by role (ids are looked up when an action runs: some may not exist yet).
ALGORITHMS = {"search": "sentinel2:search", "download": "sentinel2:download", "sen2cor": "sentinel2:sen2cor",
              "l3amosaic": "sentinel2:l3amosaic"}
NEEDED = {DOWNLOAD: ("download",), CHAIN: ("download", "sen2cor"), MOSAIC: ("l3amosaic",)}
QUICKLOOK_SIZE = 240
NAME_WIDTH = 180
MORE = "more"  # the catalogue holds more products than shown and does not say how many
FINISHED = (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated)


class SearchDock(QgsDockWidget):
    def __init__(self, iface, parent=None):
        super().__init__("Sentinel-2 search", parent)
        self.setObjectName("Sentinel2SearchDock")  # QGIS restores dock positions by object name
        self.iface = iface
        self.layer = None  # the footprints layer shown in the table
        self.matched = None  # what the catalogue holds for the last search (see bind)
        self.search_task = None
        self.tasks = []  # every algorithm task started here (search, downloads, Sen2Cor, mosaics)
        self.chains = set()  # download → Sen2Cor chains still allowed to start their second step
        self.urls = {}  # catalogue -> service root of the last search there (quicklooks are looked up there)
        self.quicklook_key = None
        self._syncing = False  # set while one side of the table/map selection updates the other
        self._shut = False
        self._build()
        QgsProject.instance().layersWillBeRemoved.connect(self._layers_removed)

    # --- widgets --------------------------------------------------------------------------------------
    def _build(self):
        content = QWidget()
        layout = QVBoxLayout(content)
        search_box = QgsCollapsibleGroupBox("Search")
        self.form = SearchForm(self.iface, search_box)
        self.form.searchRequested.connect(self.search)
        QVBoxLayout(search_box).addWidget(self.form)
        layout.addWidget(search_box)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.hide()
        layout.addWidget(self.progress)
        self.summary = QLabel("No search yet.")
        layout.addWidget(self.summary)
        layout.addLayout(self._filter_row())
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self._table())
        splitter.addWidget(self._chart())
        self.quicklook = QLabel("Select one product to see its quicklook.")
        self.quicklook.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.quicklook.setMinimumHeight(QUICKLOOK_SIZE // 2)
        self.quicklook.setWordWrap(True)
        splitter.addWidget(self.quicklook)
        layout.addWidget(splitter, 1)
        self.pipeline = PipelineBox()
        self.pipeline.actionRequested.connect(self.run_action)
        layout.addWidget(self.pipeline)
        self.setWidget(content)
        self.loader = QuicklookLoader(self)
        self.loader.loaded.connect(self._quicklook_loaded)
        self.loader.failed.connect(self._quicklook_failed)

    def _filter_row(self):
        row = QHBoxLayout()
        self.filter_column = QComboBox()
        self.filter_column.addItem("All columns", -1)
        for index, (_, header) in enumerate(COLUMNS):
            self.filter_column.addItem(header, index)
        self.filter_text = QgsFilterLineEdit()
        self.filter_text.setPlaceholderText("Filter (text, or < 20 for cloud and size)")
        self.filter_text.textChanged.connect(self._filter_changed)
        self.filter_column.currentIndexChanged.connect(self._filter_changed)
        row.addWidget(self.filter_column)
        row.addWidget(self.filter_text, 1)
        return row

    def _chart(self):
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Acquisitions, coloured by"))
        self.chart_colour = QComboBox()
        self.chart_colour.addItems(["tile", "orbit"])
        row.addWidget(self.chart_colour)
        row.addStretch(1)
        layout.addLayout(row)
        self.chart = AcquisitionChart()
        self.chart.selectionRequested.connect(self._chart_selection_requested)
        self.chart_colour.currentTextChanged.connect(self.chart.set_colour_by)
        layout.addWidget(self.chart, 1)
        return box

    def _chart_rows(self):
        """The rows the table shows (the filter applies to the chart too)."""
        rows = []
        for proxy_row in range(self.proxy.rowCount()):
            source = self.proxy.mapToSource(self.proxy.index(proxy_row, 0))
            rows.append(self.model.rows[source.row()])
        return rows

    def _chart_selection_requested(self, fids, add):
        if self.layer is None:
            return
        if add:  # Ctrl: toggle these products in the selection
            fids = set(self.layer.selectedFeatureIds()) ^ set(fids)
        self.layer.selectByIds(list(fids))  # the layer's selectionChanged updates the table and the chart

    def _table(self):
        self.model = FootprintsModel(self)
        self.proxy = FootprintsFilter(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().hide()
        # Product names are long: the name column gets a useful width of its own (the user can resize it) and
        # shows their start, platform, level and date; the tooltip has the whole name.
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, NAME_WIDTH)
        header.setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._table_selection_changed)
        self.table.doubleClicked.connect(self._zoom_to_row)
        return self.table

    # --- search ---------------------------------------------------------------------------------------
    def search(self):
        """Validate, then run ``sentinel2:search`` in the background (a second press cancels it)."""
        if self.search_task is not None:
            self.search_task.cancel()
            return None
        if not self.form.validate():
            return None
        params = self.form.parameters()
        path = QgsProcessingUtils.generateTempFilename("sentinel2_footprints.gpkg")
        output = QgsProcessingOutputLayerDefinition(path, QgsProject.instance())
        start, end = (params[k].date().toString("yyyy-MM-dd") for k in ("START", "END"))
        output.destinationName = f"Sentinel-2 footprints ({params['CATALOG']} {start} to {end})"
        params["OUTPUT"] = output
        self.urls[params["CATALOG"]] = self.form.service_url()
        area = params.get("AOI")  # a memory layer must live until the search is over: the lambda keeps it
        limit = params.get("MAX_RESULTS", _default("search", "MAX_RESULTS")) or 0
        task = self._start("search", params,
                           lambda ok, results: self._search_finished(path, ok, results, area, limit),
                           f"Sentinel-2 search in {params['CATALOG']}")
        if task is not None:
            self.search_task = task
            task.progressChanged.connect(self._search_progress)
            self.form.search_button.setText("Cancel search")
            self.progress.setValue(0)
            self.progress.show()
        return task

    def _search_progress(self, value):
        if self._alive():
            self.progress.setValue(int(value))

    def _search_finished(self, path, ok, results, area=None, max_results=0):
        # ``area`` is only held until here: the algorithm may read a memory layer until it has finished.
        self.search_task = None
        if not self._alive():
            return
        self.form.search_button.setText("Search")
        self.progress.hide()
        if not ok:
            return
        layer = _layer_with_source(path)
        if layer is None:
            self._message("The footprints layer was not added to the project.", Qgis.MessageLevel.Warning)
            return
        self.bind(layer, _matched(results, max_results))

    def bind(self, layer, matched=None):
        """Show ``layer`` (a footprints layer) in the table and keep both selections in step; ``matched``: how
        many products the catalogue holds (the search's MATCHED), when MAX_RESULTS showed fewer."""
        self.unbind()
        self.layer = layer
        self.matched = matched
        self.model.set_features(layer.getFeatures())
        self.chart.set_rows(self._chart_rows())
        layer.selectionChanged.connect(self._layer_selection_changed)
        self._show_summary()
        self._layer_selection_changed()

    def unbind(self):
        if self.layer is not None and not sip.isdeleted(self.layer):
            self.layer.selectionChanged.disconnect(self._layer_selection_changed)
        self.layer = None
        self.model.set_features([])
        self.chart.set_rows([])
        self.chart.set_selected([])
        self.summary.setText("No search yet.")
        self._show_quicklook_text("Select one product to see its quicklook.")

    def _show_summary(self):
        rows = [row.values for row in self.model.rows]
        size = sum(values["size_bytes"] or 0 for values in rows) / 1e9
        offline = sum(1 for values in rows if values["online"] is False)
        shown = f"{len(rows):,}"
        if self.matched == MORE:  # stopped at MAX_RESULTS, and the catalogue gives no total (Sentinel Hub)
            shown += "+"
        elif self.matched is not None and int(self.matched) > len(rows):
            shown = f"{len(rows):,} of {int(self.matched):,}"
        text = f"{shown} products, {size:.1f} GB" if rows else "No products found."
        self.summary.setText(text + (f", {offline} offline (long-term archive)." if offline else ""))

    def _layers_removed(self, layer_ids):
        if self.layer is not None and self.layer.id() in layer_ids:
            self.unbind()

    # --- selection: table <-> map ---------------------------------------------------------------------
    def _table_selection_changed(self, *_):
        if self._syncing or self.layer is None:
            return
        fids = [index.data(FID_ROLE) for index in self.table.selectionModel().selectedRows()]
        self._syncing = True
        try:
            self.layer.selectByIds(fids)
        finally:
            self._syncing = False
        self.chart.set_selected(self.layer.selectedFeatureIds())
        self._update_quicklook()

    def _layer_selection_changed(self, *_):
        if self._syncing or self.layer is None:
            return
        selection = QItemSelection()
        for fid in self.layer.selectedFeatureIds():
            row = self.model.row_of_fid(fid)
            index = self.proxy.mapFromSource(self.model.index(row, 0)) if row is not None else None
            if index is not None and index.isValid():
                selection.select(index, index.siblingAtColumn(len(COLUMNS) - 1))
        flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        self._syncing = True
        try:
            self.table.selectionModel().select(selection, flags)
        finally:
            self._syncing = False
        if not selection.isEmpty():
            self.table.scrollTo(selection.indexes()[0])
        self.chart.set_selected(self.layer.selectedFeatureIds())
        self._update_quicklook()

    def _filter_changed(self, *_):
        # Rows hidden by the filter drop out of the table's selection: keep the map's selection as it was.
        self._syncing = True
        try:
            self.proxy.set_filter(self.filter_text.text(), self.filter_column.currentData())
        finally:
            self._syncing = False
        self.chart.set_rows(self._chart_rows())
        self._layer_selection_changed()

    def _zoom_to_row(self, index):
        if self.layer is not None:
            self.iface.mapCanvas().zoomToFeatureIds(self.layer, [index.data(FID_ROLE)])

    def selected_values(self):
        """Attribute values of the selected products (the layer's selection, which the actions use)."""
        if self.layer is None:
            return []
        rows = (self.model.row_of_fid(fid) for fid in self.layer.selectedFeatureIds())
        return [self.model.rows[row].values for row in rows if row is not None]

    # --- quicklooks -----------------------------------------------------------------------------------
    def _update_quicklook(self):
        selected = self.selected_values()
        if len(selected) != 1:
            self.quicklook_key = None
            self._show_quicklook_text("Select one product to see its quicklook.")
            return
        catalog, product_id = selected[0]["provider"] or "", selected[0]["id"] or ""
        self.quicklook_key = key_of(catalog, product_id)
        self._show_quicklook_text("Loading the quicklook…")
        self.loader.request(catalog, product_id, self.urls.get(catalog))

    def _quicklook_loaded(self, key, path):
        if key != self.quicklook_key or not self._alive():
            return
        pixmap = QPixmap(path)
        if pixmap.isNull():
            self._show_quicklook_text("The quicklook is not an image QGIS can show.")
            return
        self.quicklook.setPixmap(pixmap.scaled(QUICKLOOK_SIZE, QUICKLOOK_SIZE, Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))

    def _quicklook_failed(self, key, message):
        if key == self.quicklook_key and self._alive():
            self._show_quicklook_text(message)

    def _show_quicklook_text(self, text):
        self.quicklook.setPixmap(QPixmap())
        self.quicklook.setText(text)

    # --- actions --------------------------------------------------------------------------------------
    def run_action(self, action):
        """Check, then start DOWNLOAD, CHAIN (download then Sen2Cor) or MOSAIC; returns the first task or None."""
        selected = self.selected_values() if action != MOSAIC else []
        providers = {values["provider"] for values in selected if values["provider"]}
        source = self.pipeline.source.currentText()
        account = account_catalog(source, providers)
        authcfg = settings.auth_config(account) if account else ""
        errors = download_errors(action, source, providers, {values["level"] for values in selected},
                                 self.pipeline.output_folder(), authcfg, self._mosaic_area_error(action))
        self.pipeline.show_errors(errors)
        if errors or not self._algorithms_available(NEEDED[action]):
            return None
        if action == MOSAIC:
            return self._start_mosaic()
        chain = object() if action == CHAIN else None
        if chain is not None:
            self.chains.add(chain)
        params = {"INPUT": QgsProcessingFeatureSourceDefinition(self.layer.id(), True), "SOURCE": source,
                  "AUTH": authcfg or None, "PARALLEL": self.pipeline.parallel.value(),
                  "OUTPUT_FOLDER": self.pipeline.output_folder()}
        return self._start("download", params, lambda ok, results: self._download_finished(chain, ok, results),
                           f"Sentinel-2 download of {len(selected)} product{'' if len(selected) == 1 else 's'}")

    def _mosaic_area_error(self, action):
        if action != MOSAIC:
            return ""
        if self.form.area_mode_value() == TILES_ONLY:
            return "Choose an area (map extent, drawn or a layer)."
        return self.form.area_error()

    def _start_mosaic(self):
        params = {"AOI": self.form.area_parameter(), "START_MONTH": self.form.start.date().toString("yyyy-MM"),
                  "END_MONTH": self.form.end.date().toString("yyyy-MM"),
                  "OUTPUT_FOLDER": os.path.join(self.pipeline.output_folder(), "L3A")}
        # The algorithm groups its mosaics itself ("Sentinel-2 L3A"): a group here would flatten that.
        return self._start("l3amosaic", params, self._done("L3A mosaics finished: they are in", params["AOI"]),
                           f"Sentinel-2 L3A mosaic {params['START_MONTH']} to {params['END_MONTH']}", group=None)

    def _download_finished(self, chain, ok, results):
        if ok and self._alive():
            self._message(download_summary(results), Qgis.MessageLevel.Success)
        if chain is None or chain not in self.chains:
            return  # a plain download, or the panel was closed meanwhile: nothing follows
        self.chains.discard(chain)
        if not ok or not self._alive():
            return
        folder = results.get("OUTPUT_FOLDER") or self.pipeline.output_folder()
        # Beside the L1C products, in a subfolder the product scan ignores (it is not a .SAFE).
        params = {"INPUT_FOLDER": folder, "OUTPUT_FOLDER": os.path.join(folder, "L2A")}
        # Sen2Cor puts each product's layers in a group of its own: a group here would flatten that.
        self._start("sen2cor", params, self._done("Sen2Cor finished: the L2A products are in"),
                    "Sentinel-2 Sen2Cor on the downloaded products", group=None)

    def _done(self, sentence, keep=None):
        """An ``on_finished`` telling where the results are (failures are told by plugin.tasks); it holds
        ``keep`` (an area layer the algorithm reads) until then."""

        def finished(ok, results, _keep=keep):
            if ok and self._alive():
                self._message(f"{sentence} {results.get('OUTPUT_FOLDER') or ''}", Qgis.MessageLevel.Success)

        return finished

    def _algorithms_available(self, roles):
        alg_ids = [ALGORITHMS[role] for role in roles]
        missing = [alg for alg in alg_ids if QgsApplication.processingRegistry().algorithmById(alg) is None]
        if missing:
            self._message(f"The algorithm {', '.join(missing)} is not available in this version of the plugin.",
                          Qgis.MessageLevel.Warning)
        return not missing

    def _start(self, role, params, on_finished, description, group=GROUP):
        """Run the algorithm of ``role`` as a task of the plugin (task manager, progress, cancel, output layers
        added styled and grouped). ``group=None`` leaves the grouping to the algorithm."""
        if not self._algorithms_available((role,)):
            if on_finished:
                on_finished(False, {})
            return None
        task = tasks.run_algorithm_task(ALGORITHMS[role], params, on_finished=on_finished, description=description,
                                        group=group)
        if task is not None:
            self.tasks.append(task)
        return task

    # --- lifetime -------------------------------------------------------------------------------------
    def running_tasks(self):
        """Tasks started from the panel (algorithms and quicklooks) that have not finished."""
        self.tasks = [t for t in self.tasks if not sip.isdeleted(t) and t.status() not in FINISHED]
        return self.tasks + self.loader.running()

    def cancel_tasks(self):
        self.chains.clear()  # a download cancelled now must not start Sen2Cor either
        for task in self.running_tasks():
            if not sip.isdeleted(task):
                task.cancel()
        self.loader.cancel_all()

    def closeEvent(self, event):  # noqa: N802 (Qt API name)
        self.cancel_tasks()
        self.form.shutdown()
        super().closeEvent(event)

    def showEvent(self, event):  # noqa: N802 (Qt API name)
        super().showEvent(event)
        self.form.restore()

    def shutdown(self):
        """Before the plugin deletes the panel: cancel its tasks, leave nothing on the canvas or connected."""
        self.cancel_tasks()
        self.form.shutdown()
        self.unbind()
        QgsProject.instance().layersWillBeRemoved.disconnect(self._layers_removed)
        self._shut = True

    def _alive(self):
        return not self._shut and not sip.isdeleted(self)

    def _message(self, text, level):
        self.iface.messageBar().pushMessage(TITLE, text, level, 8)


def _default(role, name):
    """The default value of the parameter ``name`` of the algorithm of ``role`` (declared once, there)."""
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHMS[role])
    definition = algorithm.parameterDefinition(name) if algorithm else None
    return definition.defaultValue() if definition else None


def _matched(results, max_results):
    """The search's MATCHED for the summary; MORE when it stopped at MAX_RESULTS without the catalogue's total."""
    matched = results.get("MATCHED")
    if matched in (None, ""):
        count = results.get("COUNT")
        return MORE if max_results and count is not None and int(count) >= max_results else None
    return int(matched)


def download_summary(results):
    """One line from ``sentinel2:download``'s outputs, with the first failure's reason when there is one."""

    def count(name):
        value = results.get(name)
        return len(value) if isinstance(value, (list, tuple)) else int(value or 0)

    text = (f"Downloaded {count('DOWNLOADED')}, already there {count('SKIPPED')}, failed {count('FAILED_COUNT')}: "
            f"{results.get('OUTPUT_FOLDER') or ''}")
    failures = str(results.get("FAILED") or "").splitlines()
    return text + (f" (first failure: {failures[0]})" if failures else "")


def _layer_with_source(path):
    """The project layer reading the file ``path`` (the algorithm's output, added by the task)."""
    wanted = os.path.normcase(os.path.abspath(path))
    for layer in QgsProject.instance().mapLayers().values():
        source = layer.source().split("|")[0]
        if source and os.path.normcase(os.path.abspath(source)) == wanted:
            return layer
    return None

"""Background tasks (plugin.tasks) and styled loading through the processing context (plugin.layers).

A small test provider supplies algorithms that record which thread they ran on, load outputs with
``load_on_completion``, run until cancelled, or fail. The tasks go through the real QGIS task manager.
"""

import time

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingProvider,
    QgsProject,
    QgsRectangle,
    QgsTask,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication, Qt, QThread, QVariant
from qgis.PyQt.QtGui import QColor
from qtwait import wait_for

from sentinel2_pipeline.plugin import layers, tasks

MAIN_THREAD = QCoreApplication.instance().thread()  # pytest-qgis starts the application before collection
THREADS = {}  # what ran where: filled by the test algorithms and post-processors


def _fields():
    fields = QgsFields()
    fields.append(QgsField("tile_id", QVariant.String))
    return fields


def _write_squares(sink, count):
    for index in range(count):
        feature = QgsFeature(_fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(index, 0, index + 1, 1)))
        feature.setAttributes([f"T{index:02d}"])
        sink.addFeature(feature, QgsFeatureSink.FastInsert)


class _TestAlgorithm(QgsProcessingAlgorithm):
    def createInstance(self):
        return type(self)()

    def displayName(self):
        return self.name()


class SquaresAlgorithm(_TestAlgorithm):
    """Writes squares to OUTPUT and asks for it to be loaded styled, into a group, via layers.load_on_completion."""

    def name(self):
        return "squares"

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterNumber("COUNT", "count", defaultValue=3))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", "Squares", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):
        THREADS["algorithm"] = QThread.currentThread()
        sink, dest_id = self.parameterAsSink(
            parameters, "OUTPUT", context, _fields(), QgsWkbTypes.Polygon, QgsProject.instance().crs()
        )
        _write_squares(sink, self.parameterAsInt(parameters, "COUNT", context))
        if context.willLoadLayerOnCompletion(dest_id):
            layers.load_on_completion(context, dest_id, "Squares", "OUTPUT", style="tiles", group="Test group")
        return {"OUTPUT": dest_id}


class MemoryLayerAlgorithm(_TestAlgorithm):
    """Builds a memory layer itself and hands the layer object to load_on_completion, with a callable style."""

    def name(self):
        return "memory"

    def initAlgorithm(self, config=None):
        pass

    def processAlgorithm(self, parameters, context, feedback):
        THREADS["algorithm"] = QThread.currentThread()
        layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=tile_id:string", "scratch", "memory")
        _write_squares(layer.dataProvider(), 2)
        layer.updateExtents()
        layers.load_on_completion(context, layer, "Memory squares", "OUTPUT", style=_red_and_record)
        return {"OUTPUT": layer.id()}


def _red_and_record(layer):
    THREADS["post_processor"] = QThread.currentThread()
    layer.renderer().symbol().setColor(QColor(255, 0, 0))


class SleeperAlgorithm(_TestAlgorithm):
    """Runs for up to a minute, reporting progress, until cancelled."""

    def name(self):
        return "sleeper"

    def initAlgorithm(self, config=None):
        pass

    def processAlgorithm(self, parameters, context, feedback):
        start = time.monotonic()
        while time.monotonic() - start < 60 and not feedback.isCanceled():
            feedback.setProgress(min(99.0, (time.monotonic() - start) * 10))
            time.sleep(0.02)
        return {}


class FailingAlgorithm(_TestAlgorithm):
    def name(self):
        return "failing"

    def initAlgorithm(self, config=None):
        pass

    def processAlgorithm(self, parameters, context, feedback):
        raise QgsProcessingException("URL: the service answered 500 Internal Server Error.")


class TaskTestProvider(QgsProcessingProvider):
    def id(self):
        return "s2tasktest"

    def name(self):
        return "Sentinel-2 task tests"

    def loadAlgorithms(self):
        for algorithm in (SquaresAlgorithm(), MemoryLayerAlgorithm(), SleeperAlgorithm(), FailingAlgorithm()):
            self.addAlgorithm(algorithm)


@pytest.fixture(scope="module")
def test_provider(qgis_processing):
    provider = TaskTestProvider()
    assert QgsApplication.processingRegistry().addProvider(provider)
    yield provider
    QgsApplication.processingRegistry().removeProvider(provider)


@pytest.fixture()
def project(qgis_new_project, qgis_iface, test_provider):
    for messages in qgis_iface.messageBar().messages.values():  # pytest-qgis 2.x has no clear_messages()
        messages.clear()
    THREADS.clear()
    yield QgsProject.instance()
    tasks.cancel_all(discard=True)
    wait_for(lambda: not tasks.running_tasks())


class Finished:
    """An ``on_finished`` callback that remembers what it got."""

    def __init__(self):
        self.calls = []

    def __call__(self, ok, results):
        self.calls.append((ok, results))

    @property
    def done(self):
        return bool(self.calls)


def _output(tmp_path, project, name="out.gpkg"):
    return QgsProcessingOutputLayerDefinition(str(tmp_path / name), project)


def _messages(qgis_iface, level):
    return qgis_iface.messageBar().get_messages(level)


def test_results_load_on_the_main_thread_styled_and_grouped(project, tmp_path):
    finished = Finished()
    task = tasks.run_algorithm_task(
        "s2tasktest:squares", {"COUNT": 4, "OUTPUT": _output(tmp_path, project)}, finished, "Squares please"
    )
    assert isinstance(task, QgsTask)
    wait_for(lambda: finished.done)

    ok, results = finished.calls[0]
    assert ok, results
    assert THREADS["algorithm"] is not MAIN_THREAD  # ran in the background

    [layer] = project.mapLayersByName("Squares")
    assert layer.featureCount() == 4
    # tiles.qml: outline only, labelled with tile_id
    symbol_layer = layer.renderer().symbol().symbolLayer(0)
    assert symbol_layer.brushStyle() == Qt.BrushStyle.NoBrush
    settings = layer.labeling().settings()
    assert layer.labelsEnabled() and settings.fieldName == "tile_id"

    group = project.layerTreeRoot().findGroup("Test group")
    assert group is not None and group.findLayer(layer.id()) is not None
    assert len(project.layerTreeRoot().findLayers()) == 1  # moved into the group, not duplicated


def test_layer_object_output_gets_a_callable_style_on_the_main_thread(project):
    finished = Finished()
    tasks.run_algorithm_task("s2tasktest:memory", {}, finished)
    wait_for(lambda: finished.done)

    assert finished.calls[0][0]
    [layer] = project.mapLayersByName("Memory squares")
    assert layer.featureCount() == 2
    assert layer.renderer().symbol().color() == QColor(255, 0, 0)
    assert THREADS["algorithm"] is not MAIN_THREAD
    assert THREADS["post_processor"] is MAIN_THREAD


def test_caller_styles_and_group_apply_to_outputs_without_a_post_processor(project, tmp_path):
    source = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt("POINT(5 45)"))
    source.dataProvider().addFeatures([feature])
    project.addMapLayer(source)
    output = _output(tmp_path, project, "buffer.gpkg")
    output.destinationName = "Buffered"

    finished = Finished()
    tasks.run_algorithm_task(
        "native:buffer",
        {"INPUT": source.id(), "DISTANCE": 0.5, "OUTPUT": output},
        finished,
        styles={"OUTPUT": "tiles"},
        group="Results",
    )
    wait_for(lambda: finished.done)

    assert finished.calls[0][0]
    loaded = [layer for layer in project.mapLayers().values() if layer is not source]
    assert len(loaded) == 1
    layer = loaded[0]
    assert layer.renderer().symbol().symbolLayer(0).brushStyle() == Qt.BrushStyle.NoBrush
    assert project.layerTreeRoot().findGroup("Results").findLayer(layer.id()) is not None


def test_a_long_task_shows_progress_in_the_task_manager_and_cancels_quickly(project, qgis_iface):
    finished = Finished()
    task = tasks.run_algorithm_task("s2tasktest:sleeper", {}, finished, "Sleeping")
    assert task in QgsApplication.taskManager().tasks()
    assert task.description() == "Sleeping"
    wait_for(lambda: task.progress() > 0, timeout=5)
    assert tasks.running_tasks() == [task]

    started = time.monotonic()
    task.cancel()
    wait_for(lambda: finished.done, timeout=5)
    assert time.monotonic() - started < 2.0

    assert finished.calls[0][0] is False
    assert any("Cancelled" in message for message in _messages(qgis_iface, Qgis.MessageLevel.Info))
    assert not _messages(qgis_iface, Qgis.MessageLevel.Critical)
    assert tasks.running_tasks() == []


def test_cancel_all_stops_tasks_and_discards_their_results(project, qgis_iface):
    finished = Finished()
    task = tasks.run_algorithm_task("s2tasktest:sleeper", {}, finished)
    wait_for(lambda: task.status() == QgsTask.TaskStatus.Running, timeout=5)

    assert tasks.cancel_all(discard=True) == 1
    wait_for(lambda: not tasks.running_tasks(), timeout=5)
    wait_for(lambda: task not in QgsApplication.taskManager().tasks(), timeout=5)
    assert finished.calls == []  # discarded: nothing reported after unload
    assert not _messages(qgis_iface, Qgis.MessageLevel.Info)


def test_a_failing_algorithm_reports_its_sentence(project, qgis_iface):
    finished = Finished()
    tasks.run_algorithm_task("s2tasktest:failing", {}, finished, "Failing")
    wait_for(lambda: finished.done)

    assert finished.calls[0][0] is False
    [message] = _messages(qgis_iface, Qgis.MessageLevel.Critical)
    assert message == "Failing:Failed: URL: the service answered 500 Internal Server Error."


def test_invalid_parameters_do_not_start_a_task(project, qgis_iface):
    finished = Finished()
    count = len(QgsApplication.taskManager().tasks())
    assert tasks.run_algorithm_task("native:buffer", {"DISTANCE": 1}, finished) is None
    assert finished.calls == [(False, {})]
    assert len(QgsApplication.taskManager().tasks()) == count
    [message] = _messages(qgis_iface, Qgis.MessageLevel.Critical)
    assert "INPUT" in message


def test_an_unknown_algorithm_is_a_programming_error(project):
    with pytest.raises(ValueError, match="sentinel2:nope"):
        tasks.run_algorithm_task("sentinel2:nope", {})


def test_load_on_completion_records_details_and_the_post_processor(project, tmp_path):
    context = QgsProcessingContext()
    context.setProject(project)
    identifier = layers.load_on_completion(context, str(tmp_path / "x.gpkg"), "Tiles", "OUTPUT", style="tiles")
    details = context.layersToLoadOnCompletion()[identifier]
    assert (details.name, details.outputName) == ("Tiles", "OUTPUT")
    assert isinstance(details.postProcessor(), layers.StylePostProcessor)
    assert details.postProcessor().style == "tiles"

    plain = layers.load_on_completion(context, str(tmp_path / "y.gpkg"), "Plain", "OTHER")
    assert context.layersToLoadOnCompletion()[plain].postProcessor() is None


def test_style_names_resolve_to_the_plugin_styles():
    assert layers.style_path("tiles").endswith("ui/styles/tiles.qml")
    assert layers.style_path("/somewhere/own.qml") == "/somewhere/own.qml"


def test_a_missing_style_is_reported_not_raised(project):
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "p", "memory")
    project.addMapLayer(layer)

    class Feedback:
        errors = []

        def reportError(self, error, fatal=False):  # noqa: N802
            self.errors.append(error)

    feedback = Feedback()
    layers.StylePostProcessor("no_such_style", "G").postProcessLayer(layer, _context_for(project), feedback)
    assert "no_such_style.qml" in feedback.errors[0]
    assert project.layerTreeRoot().findGroup("G").findLayer(layer.id()) is not None


def _context_for(project):
    context = QgsProcessingContext()
    context.setProject(project)
    return context

"""Running Processing algorithms as background tasks from the plugin's own UI (menu actions, the dock).

The algorithm runs in a ``QgsProcessingAlgRunnerTask`` (visible in the QGIS task manager, with progress and
cancel). Its ``executed`` signal arrives on the main thread, which is where the output layers are added to
the project and their post-processors (styles, groups) run, as the Processing toolbox does.
"""

import itertools

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsMessageLog,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProject,
)
from qgis.PyQt import sip

from . import layers

LOG_TAG = "Sentinel-2"

# Python must keep the task, its context and its feedback alive until ``executed``: the task manager owns the
# C++ task, but the context and feedback are referenced by it without being owned.
_RUNS = {}
_KEYS = itertools.count()


class TaskFeedback(QgsProcessingFeedback):
    """Remembers reported errors (from the worker thread) so the message bar can say why a task failed."""

    def __init__(self):
        super().__init__()
        self.errors = []

    def reportError(self, error, fatalError=False):  # noqa: N802,N803 (QGIS API names)
        self.errors.append(error)
        super().reportError(error, fatalError)


class _Run:
    def __init__(self, task, context, feedback, on_finished, styles, group):
        self.task = task
        self.context = context
        self.feedback = feedback
        self.on_finished = on_finished
        self.styles = styles or {}
        self.group = group
        self.discard = False


def run_algorithm_task(alg_id, params, on_finished=None, description=None, styles=None, group=None):
    """Run ``alg_id`` with ``params`` in the background; returns the task, or ``None`` when it cannot start.

    ``on_finished(ok, results)`` is called on the main thread after the output layers were loaded.
    Layers the algorithm asked to load keep their own post-processors; the others get ``styles``
    (output name -> style name, QML path or callable, see :mod:`.layers`). With ``group`` (a group name)
    every loaded layer goes into that group.
    """
    algorithm = QgsApplication.processingRegistry().algorithmById(alg_id)
    if algorithm is None:
        raise ValueError(f"The Processing algorithm {alg_id} is not available.")
    title = description or algorithm.displayName()
    feedback = TaskFeedback()
    context = _context(QgsProject.instance(), feedback)
    ok, message = algorithm.checkParameterValues(params, context)
    if ok:
        task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
        ok = not task.isCanceled()  # the constructor cancels the task when the algorithm cannot prepare
        message = "; ".join(feedback.errors) or message
    if not ok:
        _notify(title, message or "The algorithm could not start.", Qgis.MessageLevel.Critical)
        if on_finished:
            on_finished(False, {})
        return None
    task.setDescription(title)
    key = next(_KEYS)
    _RUNS[key] = _Run(task, context, feedback, on_finished, styles, group)
    task.executed.connect(lambda success, results: _on_executed(key, success, results))
    QgsApplication.taskManager().addTask(task)
    return task


def running_tasks():
    """The tasks started here that have not reported back yet."""
    return [run.task for run in _RUNS.values()]


def cancel_all(discard=False):
    """Cancel every task started here; with ``discard`` (plugin unload) their results are not loaded."""
    runs = list(_RUNS.values())
    for run in runs:
        run.discard = discard
        if not sip.isdeleted(run.task):
            run.task.cancel()
    return len(runs)


def _context(project, feedback):
    context = QgsProcessingContext()
    context.setProject(project)
    context.setFeedback(feedback)
    expression_context = QgsExpressionContext()
    expression_context.appendScopes(QgsExpressionContextUtils.globalProjectLayerScopes(None))
    context.setExpressionContext(expression_context)
    return context


def _on_executed(key, ok, results):
    run = _RUNS.pop(key, None)
    if run is None or run.discard:
        return
    title = run.task.description()
    if ok:
        failed = _load_layers(run)
        if failed:
            _notify(title, f"These outputs could not be loaded: {', '.join(failed)}.", Qgis.MessageLevel.Warning)
    elif run.feedback.isCanceled():
        _notify(title, "Cancelled.", Qgis.MessageLevel.Info)
    else:
        reason = run.feedback.errors[-1] if run.feedback.errors else "see the log messages for details"
        _notify(title, f"Failed: {reason}", Qgis.MessageLevel.Critical)
    if run.on_finished:
        run.on_finished(ok, results)


def _load_layers(run):
    """Add the layers the context holds for loading, then run their post-processors (main thread)."""
    context, feedback = run.context, run.feedback
    failed = []
    for identifier, details in context.layersToLoadOnCompletion().items():
        layer = QgsProcessingUtils.mapLayerFromString(identifier, context, True, details.layerTypeHint)
        if layer is None:
            failed.append(identifier)
            continue
        details.setOutputLayerName(layer)
        project = details.project or context.project()
        if project.mapLayer(layer.id()) is None:
            # Ownership moves from the context's temporary store to the project.
            project.addMapLayer(context.takeResultLayer(layer.id()) or layer)
        # The algorithm's own post-processor wins over the caller's style; the caller's group applies to all.
        processor = details.postProcessor()
        if processor is None and run.styles.get(details.outputName) is not None:
            processor = layers.StylePostProcessor(run.styles[details.outputName])
        if processor is not None:
            processor.postProcessLayer(layer, context, feedback)
        if run.group:
            layers.move_to_group(layer, run.group, project)
    return failed


def _notify(title, text, level):
    QgsMessageLog.logMessage(f"{title}: {text}", LOG_TAG, level)
    from qgis.utils import iface  # None headless

    if iface is not None:
        iface.messageBar().pushMessage(title, text, level, 10 if level == Qgis.MessageLevel.Info else 0)

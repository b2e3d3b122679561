"""Loading algorithm outputs into the project, styled, through the processing context.

Algorithms never add layers to a project themselves (they may run in a worker thread, in a model, or under
qgis_process where there is no project to show them). They ask the context to load an output on completion;
whoever runs the algorithm on the main thread (the Processing toolbox, or :mod:`.tasks`) adds the layer and
then calls the layer's post-processor, which applies the style and moves the layer into a group.
"""

import os

from qgis.core import QgsMapLayer, QgsProcessingContext, QgsProcessingLayerPostProcessorInterface, QgsProject
from qgis.PyQt import sip

STYLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ui", "styles")

# The context owns (and deletes) post-processors, but sip lets the Python half of a Python subclass be
# collected once nobody in Python refers to it; QGIS would then call a dead object. Keep them alive here.
_ALIVE = []


def style_path(style):
    """The QML file for a style name (``ui/styles/<name>.qml``) or a path given as is."""
    if style.lower().endswith(".qml"):
        return style
    return os.path.join(STYLES_DIR, f"{style}.qml")


def load_on_completion(context, layer_or_path, name, output_name, style=None, group=None):
    """Ask ``context`` to load a layer into its project when the algorithm completes.

    ``layer_or_path``: a file path, a layer id, or a map layer (which is moved into the context's temporary
    layer store so it survives until loading). ``style``: a name in ``ui/styles``, a QML path, or a callable
    ``style(layer)``. ``group``: the name of a layer tree group (created at the top when missing).
    Returns the identifier the context uses for the layer.
    """
    identifier = _identifier(context, layer_or_path)
    details = QgsProcessingContext.LayerDetails(name, context.project(), output_name)
    if style is not None or group:
        details.setPostProcessor(post_processor(style, group))
    context.addLayerToLoadOnCompletion(identifier, details)
    return identifier


def details_copy(details):
    """The same load request with a post-processor of its own (for a layer whose path changed)."""
    copy = QgsProcessingContext.LayerDetails(details.name, details.project, details.outputName)
    processor = details.postProcessor()
    if isinstance(processor, StylePostProcessor):
        copy.setPostProcessor(post_processor(processor.style, processor.group))
    return copy


def post_processor(style=None, group=None):
    """A post-processor applying ``style`` and ``group``; kept alive for as long as QGIS may call it."""
    processor = StylePostProcessor(style, group)
    _ALIVE[:] = [alive for alive in _ALIVE if not sip.isdeleted(alive)]
    _ALIVE.append(processor)
    return processor


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies a QML style (or a callable) and puts the layer into a named group. Runs on the main thread."""

    def __init__(self, style=None, group=None):
        super().__init__()
        self.style = style
        self.group = group

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        if self.style is not None:
            self._apply_style(layer, feedback)
        if self.group:
            move_to_group(layer, self.group, context.project() or QgsProject.instance())

    def _apply_style(self, layer, feedback):
        if callable(self.style):
            self.style(layer)
        else:
            path = style_path(self.style)
            message, ok = layer.loadNamedStyle(path)
            if not ok and feedback is not None:
                feedback.reportError(f"Could not apply the style {path} to {layer.name()}: {message}", False)
        layer.triggerRepaint()


def move_to_group(layer, group_name, project):
    """Put ``layer`` into the top-level group ``group_name`` of ``project`` (created first when missing)."""
    root = project.layerTreeRoot()
    group = root.findGroup(group_name) or root.insertGroup(0, group_name)
    node = root.findLayer(layer.id())
    if node is None:
        group.addLayer(layer)
        return
    if node.parent() is group:
        return
    # Layer tree nodes cannot be re-parented: insert a clone, then drop the original node.
    group.insertChildNode(0, node.clone())
    node.parent().removeChildNode(node)


def _identifier(context, layer_or_path):
    if isinstance(layer_or_path, QgsMapLayer):
        store = context.temporaryLayerStore()
        if store.mapLayer(layer_or_path.id()) is None:
            store.addMapLayer(layer_or_path)
        return layer_or_path.id()
    return str(layer_or_path)

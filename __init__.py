"""Sentinel-2 Pipeline: QGIS plugin entry point.

QGIS calls ``classFactory`` with ``iface`` (``None`` under qgis_process), so nothing here may touch the GUI.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin.plugin import Sentinel2Plugin

    return Sentinel2Plugin(iface)

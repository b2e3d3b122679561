"""QGIS-facing glue: plugin class, tasks, layer loading, settings and credentials."""

"""Plugin name and version, read once from metadata.txt (the single source of the version)."""

import configparser
import functools
import os

PLUGIN_NAME = "sentinel2_pipeline"


@functools.lru_cache(maxsize=1)
def plugin_version():
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(os.path.join(os.path.dirname(__file__), "..", "..", "metadata.txt"), encoding="utf-8")
    return meta.get("general", "version", fallback="0")


def user_agent():
    return f"QGIS-{PLUGIN_NAME}/{plugin_version()}"

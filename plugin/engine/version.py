"""Plugin name, version and home, read once from metadata.txt (the single source of both: its ``repository``
is where the code, the documentation and the bug tracker live; ``make package REPOSITORY=...`` sets it)."""

import configparser
import functools
import os

PLUGIN_NAME = "sentinel2_pipeline"


@functools.lru_cache(maxsize=1)
def _metadata():
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(os.path.join(os.path.dirname(__file__), "..", "..", "metadata.txt"), encoding="utf-8")
    return meta


def plugin_version():
    return _metadata().get("general", "version", fallback="0")


def repository():
    """The project's home (README, help pages); its tracker is ``<repository>/issues``."""
    return _metadata().get("general", "repository", fallback="").rstrip("/")


def help_url(anchor):
    """The README section that documents ``anchor`` (an algorithm's name)."""
    return f"{repository()}#{anchor}"


def user_agent():
    return f"QGIS-{PLUGIN_NAME}/{plugin_version()}"

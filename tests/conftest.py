"""Test set-up shared by every test: makes the repository importable under its plugin folder name.

The repository root is the plugin folder; QGIS imports it as ``sentinel2_pipeline``. Tests do the same through
a symbolic link in ``build/pluginpath`` so relative imports inside the plugin work unchanged.
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_NAME = "sentinel2_pipeline"
PLUGIN_PATH = os.path.join(ROOT, "build", "pluginpath")
FIXTURES = os.path.normpath(os.path.join(ROOT, "..", "shared", "fixtures"))


def _link_plugin():
    os.makedirs(PLUGIN_PATH, exist_ok=True)
    link = os.path.join(PLUGIN_PATH, PLUGIN_NAME)
    if os.path.islink(link) and os.path.realpath(link) != ROOT:
        os.unlink(link)
    if not os.path.lexists(link):
        os.symlink(ROOT, link)
    if PLUGIN_PATH not in sys.path:
        sys.path.insert(0, PLUGIN_PATH)


_link_plugin()
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="module")
def provider(qgis_processing):
    """The plugin's provider, registered the way qgis_process loads it (classFactory(None) + initProcessing)."""
    from sentinel2_pipeline import classFactory

    plugin = classFactory(None)
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


_SESSIONS = []


def tracked_session(**kwargs):
    """The production session factory with short waits so retry tests stay fast; closed after each test."""
    from sentinel2_pipeline.plugin.engine import http

    kwargs.setdefault("backoff", 0.01)
    made = http.new_session(**kwargs)
    _SESSIONS.append(made)
    return made


@pytest.fixture(autouse=True)
def close_tracked_sessions():
    yield
    while _SESSIONS:
        _SESSIONS.pop().close()

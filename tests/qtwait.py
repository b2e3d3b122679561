"""Waiting on the Qt event loop in QGIS tests (task results arrive through it)."""

import time

from qgis.PyQt.QtCore import QCoreApplication


def wait_for(predicate, timeout=20.0):
    """Process Qt events until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        QCoreApplication.processEvents()
        time.sleep(0.005)

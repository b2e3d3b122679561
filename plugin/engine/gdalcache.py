"""GDAL's block cache, bounded while the engine streams rasters.

GDAL's default cache is 5 % of RAM (1.2 GB on a 24 GB node). Streaming work reads and writes each block once,
so a large cache only holds blocks that are never used again, and the process grows to the whole cache: bad on
shared HPC nodes, where memory is what the scheduler kills for. The cache is global to the process and writers
may run in parallel threads: the lowest limit wins while any of them runs, and GDAL's own value comes back when
the last one is done.
"""

import contextlib
import threading

_LOCK = threading.Lock()
_USERS = 0
_SAVED = None


@contextlib.contextmanager
def bounded(limit):
    """GDAL's cache at most ``limit`` bytes inside the block."""
    global _USERS, _SAVED
    from osgeo import gdal

    with _LOCK:
        if _USERS == 0:
            _SAVED = gdal.GetCacheMax()
        _USERS += 1
        if limit < gdal.GetCacheMax():
            gdal.SetCacheMax(int(limit))
    try:
        yield
    finally:
        with _LOCK:
            _USERS -= 1
            if _USERS == 0:
                gdal.SetCacheMax(_SAVED)

"""GDAL's Python bindings report failures either by return values (None, error codes) or by RuntimeError,
depending on a switch the host may flip: QGIS 3.44's Processing plugin calls ``gdal.UseExceptions()`` when it
is imported, so inside QGIS exceptions are on, while GDAL 3.6 (QGIS 3.22 on Debian 12) leaves them off. The
engine checks return values and words its own sentences, so its GDAL calls run with exceptions off, for the
calling thread only (``ExceptionMgr``, GDAL >= 3.7). GDAL 3.6 has one switch per process: a script that turned
it on gets it back when the block ends."""

import contextlib


class return_codes(contextlib.ContextDecorator):  # noqa: N801 (used like a function: a decorator and a with block)
    """``with return_codes():`` or ``@return_codes()``: GDAL, OGR and OSR without exceptions in this thread."""

    def _recreate_cm(self):  # a decorated function may run in several threads at once: a state per call
        return type(self)()

    def __enter__(self):
        from osgeo import gdal, ogr, osr

        modules = (gdal, ogr, osr)
        self.managers = [m.ExceptionMgr(useExceptions=False) for m in modules if hasattr(m, "ExceptionMgr")]
        self.switched = [m for m in modules if not hasattr(m, "ExceptionMgr") and m.GetUseExceptions()]
        for manager in self.managers:
            manager.__enter__()
        for module in self.switched:
            module.DontUseExceptions()
        return self

    def __exit__(self, *exc):
        for manager in reversed(self.managers):
            manager.__exit__(*exc)
        for module in self.switched:
            module.UseExceptions()
        return False

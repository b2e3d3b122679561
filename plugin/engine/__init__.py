"""The domain library of the plugin: pure Python, never imports qgis.

Conventions shared by every module:
- long work takes ``progress(fraction, message)`` (fraction in 0..1, message may be empty) and
  ``is_cancelled() -> bool`` callbacks; both default to no-ops so the engine runs outside QGIS;
- failures a user can fix raise :class:`~.errors.S2Error` (or a subclass) with one clear sentence;
- heavy modules (GDAL, pyproj, requests) are imported inside functions so loading the plugin stays fast.
"""

"""The plugin's settings (QgsSettings under ``sentinel2_pipeline/``), with typed getters and setters.

They live in the QGIS profile, so ``qgis_process`` reads the same values as the desktop. Credentials are never
stored here: only ids of QGIS authentication configurations, whose secrets stay in the encrypted database.
"""

import os

from qgis.core import QgsApplication, QgsSettings

PREFIX = "sentinel2_pipeline/"
CATALOG, DOWNLOAD_FOLDER, PARALLEL = "default_catalog", "download_folder", "parallel_downloads"
SEN2COR, MAJA = "sen2cor_executable", "maja_executable"  # SEN2COR is also read by engine/sen2cor.py
CACHE_MB, CACHE_FOLDER = "quicklook_cache_mb", "quicklook_cache_folder"
AUTH = "auth/"  # + catalogue name -> authentication configuration id
DEFAULTS = {CATALOG: "cdse", PARALLEL: 4, SEN2COR: "", MAJA: "", CACHE_MB: 100}


def _value(key, kind):
    value = QgsSettings().value(PREFIX + key, DEFAULTS.get(key, kind()), type=kind)
    return kind() if value is None else value


def set_value(key, value):
    QgsSettings().setValue(PREFIX + key, value)


def default_catalog():
    return _value(CATALOG, str) or DEFAULTS[CATALOG]


def download_folder():
    return _value(DOWNLOAD_FOLDER, str) or os.path.join(os.path.expanduser("~"), "Sentinel-2")


def parallel_downloads():
    return max(1, _value(PARALLEL, int))


def sen2cor_executable():
    return _value(SEN2COR, str)


def maja_executable():
    return _value(MAJA, str)


def quicklook_cache_mb():
    return max(0, _value(CACHE_MB, int))


def quicklook_cache_folder():
    # Not in the dialog: the profile's cache folder is right for users; tests point it elsewhere.
    default = os.path.join(QgsApplication.qgisSettingsDirPath(), "cache", "sentinel2_pipeline", "quicklooks")
    return _value(CACHE_FOLDER, str) or default


def auth_config(catalog):
    """The authentication configuration id remembered for ``catalog`` ('' when none)."""
    return _value(AUTH + catalog, str)


def set_auth_config(catalog, authcfg):
    set_value(AUTH + catalog, authcfg or "")

"""plugin.settings and the settings dialog: values round-trip through QgsSettings under sentinel2_pipeline/, the
Sen2Cor algorithm reads the same key, and accounts are kept as authentication configuration ids only."""

import os

import pytest
from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsSettings
from qgis.gui import QgsAuthConfigSelect, QgsFileWidget
from qgis.PyQt.QtWidgets import QLineEdit

from sentinel2_pipeline.plugin import settings
from sentinel2_pipeline.ui.settings_dialog import SettingsDialog

SECRET = "s3cret-Pa55word"


@pytest.fixture(autouse=True)
def clean_settings(qgis_app):
    QgsSettings().remove("sentinel2_pipeline")
    yield
    QgsSettings().remove("sentinel2_pipeline")


def basic_auth_config(name, username, password):
    """Store a Basic configuration in the test profile's authentication database; returns its id.

    The session shares one database: when another test module already set a master password, it is used as is.
    """
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("test master password", True)
    config = QgsAuthMethodConfig()
    config.setName(name)
    config.setMethod("Basic")
    config.setConfig("username", username)
    config.setConfig("password", password)
    ok, config = manager.storeAuthenticationConfig(config)
    assert ok
    return config.id()


@pytest.fixture
def authcfg():
    authcfg = basic_auth_config("CDSE test account", "alice@example.org", SECRET)
    yield authcfg
    QgsApplication.authManager().removeAuthenticationConfig(authcfg)


def test_defaults_when_nothing_is_set():
    assert settings.default_catalog() == "cdse"
    assert settings.parallel_downloads() == 4
    assert settings.download_folder() == os.path.join(os.path.expanduser("~"), "Sentinel-2")
    assert settings.sen2cor_executable() == settings.maja_executable() == ""
    assert settings.quicklook_cache_mb() == 100
    assert settings.quicklook_cache_folder().startswith(QgsApplication.qgisSettingsDirPath())
    assert settings.auth_config("cdse") == ""


def test_values_round_trip_typed(tmp_path):
    settings.set_value(settings.CATALOG, "earth-search")
    settings.set_value(settings.PARALLEL, 7)
    settings.set_value(settings.DOWNLOAD_FOLDER, str(tmp_path))
    settings.set_value(settings.CACHE_MB, 12)
    settings.set_auth_config("geodes", "abc1234")

    assert settings.default_catalog() == "earth-search"
    assert settings.parallel_downloads() == 7 and isinstance(settings.parallel_downloads(), int)
    assert settings.download_folder() == str(tmp_path)
    assert settings.quicklook_cache_mb() == 12
    assert settings.auth_config("geodes") == "abc1234" and settings.auth_config("cdse") == ""
    assert QgsSettings().value("sentinel2_pipeline/parallel_downloads") in (7, "7")


def test_the_sen2cor_key_is_the_one_the_engine_reads():
    from sentinel2_pipeline.plugin.engine import sen2cor

    settings.set_value(settings.SEN2COR, "/opt/Sen2Cor-02.11.00-Linux64/bin/L2A_Process")
    assert QgsSettings().value(sen2cor.SETTING_KEY, "", type=str) == settings.sen2cor_executable()


def test_the_dialog_shows_and_saves_every_setting(tmp_path, authcfg):
    settings.set_value(settings.CATALOG, "geodes")
    settings.set_value(settings.PARALLEL, 2)
    dialog = SettingsDialog()
    assert dialog.catalog.currentText() == "geodes" and dialog.parallel.value() == 2

    dialog.catalog.setCurrentText("dhus")
    dialog.download_folder.setFilePath(str(tmp_path / "s2"))
    dialog.parallel.setValue(6)
    dialog.sen2cor.setFilePath("/opt/sen2cor/bin/L2A_Process")
    dialog.maja.setFilePath("/opt/maja/bin/maja")
    dialog.cache.setValue(250)
    dialog.accounts["cdse"].setConfigId(authcfg)
    dialog.accept()

    assert (settings.default_catalog(), settings.download_folder(), settings.parallel_downloads()) == (
        "dhus", str(tmp_path / "s2"), 6)
    assert settings.sen2cor_executable() == "/opt/sen2cor/bin/L2A_Process"
    assert settings.maja_executable() == "/opt/maja/bin/maja"
    assert settings.quicklook_cache_mb() == 250
    assert settings.auth_config("cdse") == authcfg
    reopened = SettingsDialog()
    assert reopened.accounts["cdse"].configId() == authcfg and reopened.cache.value() == 250


def test_cancel_saves_nothing():
    dialog = SettingsDialog()
    dialog.parallel.setValue(9)
    dialog.reject()
    assert settings.parallel_downloads() == 4


def test_no_password_is_typed_or_stored_in_the_settings(authcfg):
    dialog = SettingsDialog()
    dialog.accounts["cdse"].setConfigId(authcfg)
    dialog.accept()
    # Accounts are chosen with QGIS's selector only: the dialog has no text field of its own for secrets...
    editors = [e for e in dialog.findChildren(QLineEdit)
               if not any(isinstance(p, (QgsAuthConfigSelect, QgsFileWidget)) for p in _ancestors(e, dialog))]
    assert all(e.echoMode() == QLineEdit.EchoMode.Normal for e in editors)
    assert len(dialog.findChildren(QgsAuthConfigSelect)) == 4
    # ...and the profile's settings hold the id, never the password.
    QgsSettings().sync()
    with open(QgsSettings().fileName(), encoding="utf-8", errors="replace") as stream:
        assert SECRET not in stream.read()
    assert settings.auth_config("cdse") == authcfg


def _ancestors(widget, stop):
    parent = widget.parentWidget()
    while parent is not None and parent is not stop:
        yield parent
        parent = parent.parentWidget()

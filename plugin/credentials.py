"""Credentials from the QGIS authentication database, chosen by an authentication configuration id (``AUTH``).

Supported methods:
- ``basic_credentials``: method *Basic* (username and password), e.g. a Copernicus Data Space account.
- ``s3_credentials``: *Basic* (access key id as username, secret key as password, the configuration's URL as the
  endpoint of an S3-compatible store) or, on QGIS 3.28 and later, *AWS S3* (username, password, region).
- ``api_key``: QGIS 3.22 has no API-key method, so a key is stored as a *Basic* configuration with the key in
  the password field (the username may be empty or anything). On newer QGIS the *API Header* method also
  works: the value of its first header is the key.

Headless runs (qgis_process, scripts) cannot prompt for the master password: they unlock the database with
``QGIS_AUTH_PASSWORD_FILE`` (a file whose first line is the master password). Secrets are returned to the
caller only; this module never logs or prints them, and error messages never contain them.
"""

import os

from qgis.core import QgsApplication, QgsAuthMethodConfig

from .engine.errors import ParameterError

PARAMETER = "AUTH"
PASSWORD_FILE_VARIABLE = "QGIS_AUTH_PASSWORD_FILE"


def basic_credentials(authcfg):
    """``(username, password)`` of a *Basic* authentication configuration."""
    config = _load(authcfg)
    if config.method() != "Basic":
        raise _wrong_method(authcfg, config.method(), "Basic (username and password)")
    return config.config("username", ""), config.config("password", "")


def s3_credentials(authcfg, parameter="OUTPUT_AUTH"):
    """The :class:`~.engine.storage.Credentials` of a *Basic* or *AWS S3* configuration."""
    from .engine.storage import Credentials

    config = _load(authcfg, parameter)
    if config.method() not in ("Basic", "AWSS3"):
        raise _wrong_method(authcfg, config.method(), "Basic or AWS S3 (access key and secret key)", parameter)
    return Credentials(config.config("username", "") or None, config.config("password", "") or None,
                       config.uri() or None, config.config("region", "") or None)


def api_key(authcfg):
    """The API key of a *Basic* configuration (key in the password field) or of an *API Header* configuration."""
    config = _load(authcfg)
    if config.method() == "Basic":
        key = config.config("password", "")
    elif config.method() == "APIHeader":
        # Newer QGIS: header name -> value pairs; services using one key have one header.
        values = [value for value in config.configMap().values() if value]
        key = values[0] if values else ""
    else:
        raise _wrong_method(authcfg, config.method(), "Basic (key in the password field) or API Header")
    if not key:
        raise ParameterError(PARAMETER, f"the authentication configuration '{authcfg}' holds no API key.")
    return key


def _load(authcfg, parameter=PARAMETER):
    """The full (decrypted) configuration, or one clear sentence saying why it cannot be read."""
    manager = QgsApplication.authManager()
    if not authcfg:
        raise ParameterError(parameter, "no authentication configuration was chosen.")
    if manager.isDisabled():
        raise ParameterError(
            parameter, f"the QGIS authentication system is disabled ({manager.disabledMessage().strip()})."
        )
    if authcfg not in manager.configIds():
        raise ParameterError(
            parameter, f"there is no authentication configuration with the id '{authcfg}' in this QGIS profile."
        )
    _unlock(manager, parameter)
    ok, config = manager.loadAuthenticationConfig(authcfg, QgsAuthMethodConfig(), True)
    if not ok or not config.isValid():
        raise ParameterError(parameter, f"the authentication configuration '{authcfg}' could not be decrypted.")
    return config


def _unlock(manager, parameter=PARAMETER):
    """Make sure the master password is set; only the desktop application may ask the user for it."""
    if manager.masterPasswordIsSet():
        return
    # In the desktop this shows QGIS's own master password dialog; headless there is nobody to ask.
    if QgsApplication.instance().platform() == "desktop" and manager.setMasterPassword(True):
        return
    raise ParameterError(parameter, _locked_sentence())


def _locked_sentence():
    path = os.environ.get(PASSWORD_FILE_VARIABLE, "")
    if not path:
        return (
            "the QGIS authentication database is locked because no master password is set; for headless runs "
            f"set {PASSWORD_FILE_VARIABLE} to a file that contains the master password."
        )
    if not os.path.isfile(path):
        return f"the master password file named by {PASSWORD_FILE_VARIABLE} does not exist: {path}."
    return (
        f"the master password in {PASSWORD_FILE_VARIABLE} ({path}) does not unlock the QGIS authentication "
        "database of this profile."
    )


def _wrong_method(authcfg, method, expected, parameter=PARAMETER):
    return ParameterError(
        parameter,
        f"the authentication configuration '{authcfg}' uses the method {method or 'unknown'}, expected {expected}.",
    )

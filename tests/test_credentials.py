"""plugin.credentials read headless, as qgis_process and batch scripts do: separate Python processes, an isolated
profile and authentication database, the master password given through QGIS_AUTH_PASSWORD_FILE.

The secrets never leave the child processes: they print the username and True/False comparisons only, and the
tests check that no output contains a secret.
"""

import json
import os
import subprocess
import sys

import pytest

from sentinel2_pipeline.plugin import credentials
from sentinel2_pipeline.plugin.engine.errors import ParameterError

TESTS = os.path.dirname(os.path.abspath(__file__))
PLUGIN_PATH = os.path.join(os.path.dirname(TESTS), "build", "pluginpath")  # made by conftest.py
MASTER_PASSWORD = "correct horse battery staple"
PASSWORD = "pa55-W0rd!cdse"
KEY = "PLAK-0123456789abcdef"
SECRETS = (MASTER_PASSWORD, PASSWORD, KEY)

START_QGIS = """
import json, os, sys
from qgis.core import QgsApplication, QgsAuthMethodConfig
app = QgsApplication([], False)
app.initQgis()
"""

CREATE = START_QGIS + """
manager = QgsApplication.authManager()
assert manager.setMasterPassword(os.environ["TEST_MASTER_PASSWORD"], True)

def store(name, method, values):
    config = QgsAuthMethodConfig()
    config.setName(name)
    config.setMethod(method)
    for key, value in values.items():
        config.setConfig(key, value)
    ok, config = manager.storeAuthenticationConfig(config)
    assert ok, name
    return config.id()

ids = {
    "basic": store("CDSE", "Basic", {"username": "alice@example.org", "password": os.environ["TEST_PASSWORD"]}),
    "key": store("Some API", "Basic", {"username": "", "password": os.environ["TEST_KEY"]}),
    "token": store("Esri", "EsriToken", {"token": "not-a-basic-config"}),
}
print("IDS=" + json.dumps(ids))
app.exitQgis()
"""

# Each check: [function, authcfg]; prints the username and comparisons, or the error sentence.
READ = START_QGIS + """
sys.path.insert(0, os.environ["TEST_PLUGIN_PATH"])
from sentinel2_pipeline.plugin import credentials
from sentinel2_pipeline.plugin.engine.errors import ParameterError

answers = []
for function, authcfg in json.loads(sys.argv[1]):
    try:
        value = getattr(credentials, function)(authcfg)
    except ParameterError as error:
        answers.append({"error": str(error)})
        continue
    if function == "basic_credentials":
        answers.append({"username": value[0], "password_ok": value[1] == os.environ["TEST_PASSWORD"]})
    else:
        answers.append({"key_ok": value == os.environ["TEST_KEY"]})
print("ANSWERS=" + json.dumps(answers))
app.exitQgis()
"""


def _run(script, profile, args=(), password_file=None):
    env = dict(os.environ)
    env.pop("QGIS_AUTH_PASSWORD_FILE", None)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_CUSTOM_CONFIG_PATH=str(profile / "config"),
        QGIS_AUTH_DB_DIR_PATH=str(profile / "auth"),
        TEST_PLUGIN_PATH=PLUGIN_PATH,
        TEST_MASTER_PASSWORD=MASTER_PASSWORD,
        TEST_PASSWORD=PASSWORD,
        TEST_KEY=KEY,
    )
    if password_file is not None:
        env["QGIS_AUTH_PASSWORD_FILE"] = str(password_file)
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def _tagged(output, tag):
    [line] = [line for line in output.splitlines() if line.startswith(tag)]
    return json.loads(line[len(tag):])


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """An isolated profile whose auth database holds a Basic config, an API key config and an EsriToken config."""
    base = tmp_path_factory.mktemp("auth_profile")
    (base / "auth").mkdir()
    created = _run(CREATE, base)
    ids = _tagged(created.stdout, "IDS=")
    assert (base / "auth" / "qgis-auth.db").is_file()  # the isolated database, not the user's
    right = base / "master.txt"
    right.write_text(MASTER_PASSWORD + "\n")
    wrong = base / "wrong.txt"
    wrong.write_text("not the master password\n")
    return {"dir": base, "ids": ids, "right": right, "wrong": wrong}


def _read(profile, checks, password_file=None):
    done = _run(READ, profile["dir"], [json.dumps(checks)], password_file)
    for secret in SECRETS:
        assert secret not in done.stdout and secret not in done.stderr
    return _tagged(done.stdout, "ANSWERS=")


def test_basic_and_api_key_are_read_headless_with_the_password_file(profile):
    ids = profile["ids"]
    answers = _read(
        profile,
        [["basic_credentials", ids["basic"]], ["api_key", ids["key"]], ["api_key", ids["basic"]]],
        profile["right"],
    )
    assert answers[0] == {"username": "alice@example.org", "password_ok": True}
    assert answers[1] == {"key_ok": True}
    assert answers[2] == {"key_ok": False}  # a Basic config's password is its key: not this one


def test_without_a_master_password_the_sentence_says_how_to_unlock(profile):
    [answer] = _read(profile, [["basic_credentials", profile["ids"]["basic"]]])
    assert answer["error"] == (
        "AUTH: the QGIS authentication database is locked because no master password is set; for headless runs "
        "set QGIS_AUTH_PASSWORD_FILE to a file that contains the master password."
    )


def test_a_wrong_master_password_is_named(profile):
    [answer] = _read(profile, [["api_key", profile["ids"]["key"]]], profile["wrong"])
    assert answer["error"] == (
        f"AUTH: the master password in QGIS_AUTH_PASSWORD_FILE ({profile['wrong']}) does not unlock the QGIS "
        "authentication database of this profile."
    )


def test_a_missing_password_file_is_named(profile):
    missing = profile["dir"] / "nowhere.txt"
    [answer] = _read(profile, [["basic_credentials", profile["ids"]["basic"]]], missing)
    expected = f"AUTH: the master password file named by QGIS_AUTH_PASSWORD_FILE does not exist: {missing}."
    assert answer["error"] == expected


def test_unknown_ids_and_wrong_methods(profile):
    token = profile["ids"]["token"]
    answers = _read(
        profile,
        [["basic_credentials", "zzzzzzz"], ["basic_credentials", token], ["api_key", token]],
        profile["right"],
    )
    assert answers[0]["error"] == (
        "AUTH: there is no authentication configuration with the id 'zzzzzzz' in this QGIS profile."
    )
    assert answers[1]["error"] == (
        f"AUTH: the authentication configuration '{token}' uses the method EsriToken, "
        "expected Basic (username and password)."
    )
    assert "expected Basic (key in the password field) or API Header" in answers[2]["error"]


@pytest.mark.parametrize("function", [credentials.basic_credentials, credentials.api_key])
def test_in_process_errors_are_parameter_errors(function):
    with pytest.raises(ParameterError, match="^AUTH: no authentication configuration was chosen"):
        function("")
    with pytest.raises(ParameterError, match="no authentication configuration with the id 'abc1234'"):
        function("abc1234")

"""The plugin as a headless user meets it: ``qgis_process.bin`` in an isolated profile, and the release zip.

All of these call real executables (``qgis_process.bin``, ``make``); nothing is mocked.
"""

import configparser
import os
import re
import subprocess
import sys
import zipfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import PLUGIN_NAME, ROOT, QgisProcess, find_qgis_process, package_script, qgis_process  # noqa: E402, F401

TILES_PARAMETERS = ("AOI", "MINIMAL", "OUTPUT")
TILES_OUTPUTS = ("OUTPUT", "TILE_IDS")

needs_qgis_process = pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")


@pytest.fixture(scope="session")
def listing(qgis_process):
    return qgis_process.list().check().json


def _tiles_registered(listing):
    algorithms = ((listing.get("providers") or {}).get("sentinel2") or {}).get("algorithms") or {}
    return "sentinel2:tiles" in algorithms


@pytest.mark.headless
@needs_qgis_process
def test_plugin_is_listed_and_loaded_in_the_isolated_profile(qgis_process):
    text = qgis_process.plugins().check()
    assert text.json is not None, text.describe()
    plugin = text.json["plugins"].get(PLUGIN_NAME)
    assert plugin is not None, f"{PLUGIN_NAME} not found by qgis_process:\n{text.describe()}"
    assert plugin["loaded"] is True

    # The plain-text listing marks loaded Processing plugins with '*'.
    plain = qgis_process.run(["plugins"]).check()
    assert re.search(rf"^\*\s+{PLUGIN_NAME}\s*$", plain.stdout, re.MULTILINE), plain.stdout


@pytest.mark.headless
@needs_qgis_process
def test_the_profile_is_isolated(qgis_process):
    ini = os.path.join(qgis_process.profile_dir, "profiles", "default", "QGIS", "QGIS3.ini")
    settings = configparser.ConfigParser(interpolation=None, strict=False)
    settings.optionxform = str
    settings.read(ini, encoding="utf-8")
    assert settings.get("PythonPlugins", PLUGIN_NAME) == "true"
    assert os.path.realpath(os.path.join(qgis_process.plugin_path, PLUGIN_NAME)) == os.path.realpath(ROOT)


@pytest.mark.headless
@needs_qgis_process
def test_list_shows_the_sentinel2_provider(listing):
    provider = listing["providers"].get("sentinel2")
    assert provider is not None, f"providers: {sorted(listing['providers'])}"
    assert provider["is_active"] is True
    assert provider["name"] == "Sentinel-2"
    for algorithm_id in provider["algorithms"]:
        assert algorithm_id.startswith("sentinel2:")


@pytest.mark.headless
@needs_qgis_process
def test_help_of_tiles_shows_its_description_parameters_and_outputs(qgis_process, listing):
    if not _tiles_registered(listing):
        pytest.skip("sentinel2:tiles is not registered yet")
    text = qgis_process.help("sentinel2:tiles").check().stdout
    description = text.split("Description", 1)[1].split("Arguments", 1)[0].strip("-\n ")
    assert description, f"no short help string:\n{text}"
    for name in TILES_PARAMETERS:
        assert re.search(rf"^{name}:", text, re.MULTILINE), f"parameter {name} missing from help:\n{text}"
    outputs = text.split("Outputs", 1)[1]
    for name in TILES_OUTPUTS:
        assert re.search(rf"^{name}:", outputs, re.MULTILINE), f"output {name} missing from help:\n{text}"

    details = qgis_process.help("sentinel2:tiles", json_output=True).check().json
    assert set(TILES_PARAMETERS) <= set(details["parameters"]), sorted(details["parameters"])
    assert set(TILES_OUTPUTS) <= set(details["outputs"]), sorted(details["outputs"])
    assert details["parameters"]["MINIMAL"]["type"]["id"] == "boolean"
    assert details["outputs"]["TILE_IDS"]["type"] == "outputString"
    assert details["algorithm_details"]["help_url"], "no help URL"


def test_harness_makes_the_venv_visible_to_qgis_process():
    """qgis_process.bin embeds the system Python: the venv's site-packages must come first on its PYTHONPATH."""
    harness = QgisProcess(base=os.path.join(ROOT, "build", "headless"))
    env = harness.env()
    assert env["QT_QPA_PLATFORM"] == "offscreen"
    assert env["QGIS_CUSTOM_CONFIG_PATH"].startswith(harness.base)
    if sys.prefix == sys.base_prefix or not os.path.exists("/usr/bin/python3"):
        pytest.skip("tests are not running in a venv over /usr/bin/python3")
    first = env["PYTHONPATH"].split(os.pathsep)[0]
    assert os.path.realpath(first).startswith(os.path.realpath(sys.prefix)), env["PYTHONPATH"]
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import pytest; print(pytest.__file__)"], env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr


@pytest.mark.headless
@needs_qgis_process
def test_unknown_algorithm_fails_cleanly(qgis_process):
    result = qgis_process.run(["run", "sentinel2:no_such_algorithm", "--", "A=1"])
    assert result.returncode != 0
    assert "Traceback" not in result.output


# -- the release zip -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def release_zip(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        ["make", "--no-print-directory", "-C", ROOT, "package", f"DIST={dist}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    zips = sorted(dist.glob("*.zip"))
    assert len(zips) == 1, completed.stdout
    return zips[0]


def _metadata_version():
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read(os.path.join(ROOT, "metadata.txt"), encoding="utf-8")
    return parser.get("general", "version")


def test_package_is_accepted_by_the_plugin_repository_rules(release_zip):
    assert release_zip.name == f"{PLUGIN_NAME}-{_metadata_version()}.zip"
    assert release_zip.stat().st_size < 25_000_000
    with zipfile.ZipFile(release_zip) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {PLUGIN_NAME}
    assert re.match(r"^[a-z_][a-z0-9_]*$", PLUGIN_NAME)
    for required in ("__init__.py", "metadata.txt", "LICENSE", "plugin/plugin.py", "processing_provider/provider.py"):
        assert f"{PLUGIN_NAME}/{required}" in names, f"{required} missing"
    forbidden_parts = {"__pycache__", ".git", "__MACOSX", "tests", "benchmarks", "scripts", "data", "build", "dist",
                       ".venv", ".ci", ".pytest_cache", ".ruff_cache"}
    forbidden_files = {"Makefile", "requirements-dev.txt", "constraints.txt", "pytest.ini", "ruff.toml", "conftest.py",
                       ".gitignore"}
    for name in names:
        parts = name.rstrip("/").split("/")[1:]
        assert not forbidden_parts & set(parts), name
        assert not (parts and parts[-1] in forbidden_files), name
        assert ".pyc" not in name and ".." not in name, name


def test_package_holds_every_runtime_file(release_zip):
    """Every Python module, style, icon and model of the plugin folders is in the zip."""
    with zipfile.ZipFile(release_zip) as archive:
        names = set(archive.namelist())
    for folder in ("plugin", "processing_provider", "ui", "models"):
        for directory, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [name for name in dirs if name != "__pycache__"]
            for name in files:
                if name.endswith((".pyc", "~")) or name.startswith("."):
                    continue
                rel = os.path.relpath(os.path.join(directory, name), ROOT).replace(os.sep, "/")
                assert f"{PLUGIN_NAME}/{rel}" in names, f"{rel} is not packaged"


@pytest.mark.headless
@needs_qgis_process
def test_installed_from_the_zip_the_plugin_loads_headless(release_zip, tmp_path):
    """Unpack the zip as QGIS's installer would and load it with qgis_process in a fresh profile."""
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(release_zip) as archive:
        archive.extractall(unpacked)
    harness = QgisProcess.prepared(base=str(tmp_path / "qgis"), plugin_source=str(unpacked / PLUGIN_NAME))
    plugins = harness.plugins().check().json["plugins"]
    assert plugins[PLUGIN_NAME]["loaded"] is True
    listing = harness.list().check().json
    assert "sentinel2" in listing["providers"]


def _rezipped(source, target, replace=None, add=None, drop=()):
    """A copy of the release zip with entries changed, as a careless release script would make it."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            if item.filename in drop:
                continue
            data = original.read(item.filename)
            if replace and item.filename in replace:
                data = replace[item.filename](data)
            copy.writestr(item, data)
        for name, data in (add or {}).items():
            copy.writestr(name, data)
    return target


def test_one_repository_setting_moves_every_link_of_the_package(tmp_path):
    package = package_script()
    path = package.build(dist=str(tmp_path), repository="https://git.example.org/team/sentinel2_pipeline/")
    assert package.check(path) == []
    with zipfile.ZipFile(path) as archive:
        metadata = package.read_metadata(archive.read(f"{PLUGIN_NAME}/metadata.txt").decode("utf-8"))
    home = "https://git.example.org/team/sentinel2_pipeline"
    assert (metadata["repository"], metadata["homepage"], metadata["tracker"]) == (home, home, f"{home}/issues")


@pytest.mark.parametrize("change, problem", [
    ({"drop": (f"{PLUGIN_NAME}/LICENSE",)}, "LICENSE is missing"),
    ({"add": {f"{PLUGIN_NAME}/plugin/__pycache__/plugin.cpython-311.pyc": b"\0"}}, "compiled Python file"),
    ({"replace": {f"{PLUGIN_NAME}/metadata.txt": lambda data: re.sub(rb"tracker=\S+", b"tracker=http://bugs", data)}},
     "tracker is not a valid URL"),
    ({"replace": {f"{PLUGIN_NAME}/metadata.txt": lambda data: re.sub(rb"\nemail=\S+", b"", data)}},
     "metadata.txt lacks email"),
    ({"replace": {f"{PLUGIN_NAME}/metadata.txt": lambda data: data.replace(b"author=", b"author=a/b ")}},
     "author contains '/'"),
    ({"replace": {f"{PLUGIN_NAME}/metadata.txt": lambda data: re.sub(rb"homepage=\S+", b"homepage=https://a.example",
                                                                      data)}},
     "tracker and homepage are not the repository's"),
])
def test_the_package_check_refuses_what_the_plugin_repository_refuses(release_zip, tmp_path, change, problem):
    package = package_script()
    assert package.check(str(release_zip)) == []
    broken = _rezipped(release_zip, tmp_path / release_zip.name, **change)
    assert any(problem in line for line in package.check(str(broken))), package.check(str(broken))

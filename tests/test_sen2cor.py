"""Engine tests of the Sen2Cor runner (no QGIS): finding Sen2Cor, its version, GIPP patching for every fixture
version, and batches run against the stand-in ``tests/standins/L2A_Process`` (real command line, real progress
lines, real L2A layout, failures on demand). The runner under test is the production code."""

import difflib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import FIXTURES, ROOT
from test_safe import L1C, make_l1c, zip_folder

from sentinel2_pipeline.plugin.engine import processes, safe, sen2cor
from sentinel2_pipeline.plugin.engine.errors import Cancelled, ParameterError, S2Error

STANDIN = os.path.join(ROOT, "tests", "standins", "L2A_Process")
GIPPS = os.path.join(FIXTURES, "sen2cor")
GIPP_28 = os.path.join(GIPPS, "L2A_GIPP_sen2cor-2.8_c-core-labs.xml")
GIPP_210 = os.path.join(GIPPS, "L2A_GIPP_sen2cor-2.10.0_marujore.xml")
PB_GIPP = os.path.join(GIPPS, "L2A_PB_GIPP_sen2cor-2.8_c-core-labs.xml")


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def l1c_name(tile):
    return L1C.replace("T34UDD", tile)


def make_products(folder, *tiles):
    os.makedirs(folder, exist_ok=True)
    return [make_l1c(str(folder), l1c_name(tile)) for tile in tiles]


def executable(path, body):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(body)
    os.chmod(path, 0o755)
    return path


def wrapper(path, version, extra_env=""):
    """A launcher like Sen2Cor's bin/L2A_Process (a shell script that execs the real program)."""
    return executable(path, f'#!/bin/sh\nexec env STANDIN_SEN2COR_VERSION={version} {extra_env} "{STANDIN}" "$@"\n')


def records(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def alive(pid):
    """Running (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def final_l2a(folder):
    return sorted(n for n in os.listdir(folder) if "_MSIL2A_" in n and not n.startswith("."))


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """Stand-in settings for one test; returns the record file it appends one JSON line per run to."""
    record = str(tmp_path / "record.jsonl")
    monkeypatch.setenv("STANDIN_SEN2COR_RECORD", record)
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "0.3")
    monkeypatch.setenv("STANDIN_SEN2COR_PIXELS", "30")
    for name in ("FAIL", "HANG", "CRASH", "NO_OUTPUT", "ORPHAN", "IGNORE_TERM", "VERSION"):
        monkeypatch.delenv(f"STANDIN_SEN2COR_{name}", raising=False)
    yield record
    for entry in records(record):  # a failed test must not leave processes behind for the next ones
        for pid in (entry["pid"], entry["child"]):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def batch(tmp_path, options=None, executable=STANDIN, **kwargs):
    return sen2cor.plan(str(tmp_path / "in"), str(tmp_path / "out"), options or sen2cor.Options(gipp=GIPP_210),
                        executable=executable, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Finding Sen2Cor and its version
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def installs(tmp_path):
    """One fake L2A_Process in every place the search looks, each printing its own name."""
    home = tmp_path / "home"
    places = {
        "explicit": tmp_path / "chosen" / "L2A_Process",
        "setting": tmp_path / "set" / "L2A_Process",
        "path": tmp_path / "pathdir" / "L2A_Process",
        "sen2cor_home": tmp_path / "s2c_home" / "bin" / "L2A_Process",
        "sen2cor_bin": tmp_path / "s2c_install" / "bin" / "L2A_Process",
        "home_old": home / "Sen2Cor-02.08.00-Linux64" / "bin" / "L2A_Process",
        "home_new": home / "Sen2Cor-02.12.03-Linux64" / "bin" / "L2A_Process",
        "snap": home / ".snap" / "auxdata" / "Sen2Cor-02.11.00-Linux64" / "bin" / "L2A_Process",
    }
    for name, path in places.items():
        executable(str(path), f"#!/bin/sh\necho {name}\n")
    os.makedirs(tmp_path / "s2c_install" / "lib" / "python2.7" / "site-packages" / "sen2cor", exist_ok=True)
    environ = {"PATH": str(tmp_path / "pathdir"), "SEN2COR_HOME": str(tmp_path / "s2c_home"),
               "SEN2COR_BIN": str(tmp_path / "s2c_install" / "lib" / "python2.7" / "site-packages" / "sen2cor")}
    return {name: str(path) for name, path in places.items()}, environ, str(home)


def test_executable_search_order(installs):
    places, environ, home = installs

    def found(**kwargs):
        return sen2cor.find_executable(environ=environ, home=home, **kwargs)

    assert found(executable=places["explicit"], setting=places["setting"]) == places["explicit"]
    assert found(setting=places["setting"]) == places["setting"]
    assert found() == places["path"]
    del environ["PATH"]
    assert found() == places["sen2cor_home"]
    del environ["SEN2COR_HOME"]
    assert found() == places["sen2cor_bin"]
    del environ["SEN2COR_BIN"]
    assert found() == places["home_new"]  # newest of ~/Sen2Cor-*, before SNAP's copy
    shutil.rmtree(os.path.join(home, "Sen2Cor-02.12.03-Linux64"))
    shutil.rmtree(os.path.join(home, "Sen2Cor-02.08.00-Linux64"))
    assert found() == places["snap"]


def test_not_found_is_one_sentence_saying_where_and_how(tmp_path):
    with pytest.raises(S2Error) as error:
        sen2cor.find_executable(environ={"PATH": str(tmp_path)}, home=str(tmp_path))
    message = str(error.value)
    for where in ("EXECUTABLE", "the plugin setting", "PATH", "~/Sen2Cor-*", "~/.snap/auxdata/Sen2Cor-*",
                  sen2cor.INSTALL_URL):
        assert where in message
    assert message.endswith(".") and "\n" not in message and message.count(". ") == 0


def test_explicit_paths_are_checked_and_an_install_folder_is_accepted(installs, tmp_path):
    places, environ, home = installs
    with pytest.raises(ParameterError, match=r"^EXECUTABLE: .*nowhere does not exist\.$"):
        sen2cor.find_executable(executable=str(tmp_path / "nowhere"), environ=environ, home=home)
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    with pytest.raises(ParameterError, match="is not executable"):
        sen2cor.find_executable(executable=str(plain), environ=environ, home=home)
    with pytest.raises(S2Error, match=r"plugin settings .*gone does not exist"):
        sen2cor.find_executable(setting=str(tmp_path / "gone"), environ=environ, home=home)
    folder = os.path.join(home, "Sen2Cor-02.08.00-Linux64")
    assert sen2cor.find_executable(executable=folder, environ=environ, home=home) == places["home_old"]


def test_windows_installs_are_found_by_their_bat(tmp_path):
    bat = tmp_path / "Sen2Cor-02.11.00-win64" / "L2A_Process.bat"
    bat.parent.mkdir()
    bat.write_text("@echo off\n")  # no execute bit on Windows
    assert sen2cor.find_executable(environ={}, home=str(tmp_path), platform="win32") == str(bat)


@pytest.mark.parametrize("text, version", [
    ("Sentinel-2 Level 2A Processor (Sen2Cor). Version: 2.8.0, created: 2019.02.20,\nsupporting Level-1C "
     "product version 14.2 - 14.5.", (2, 8, 0)),
    ("Sen2Cor. Version: 03.02.00, created: 2024.12.18, supporting Level-1C product version 15.0", (3, 2, 0)),
    ("usage: L2A_Process.py ...\nSen2Cor 02.09.00", (2, 9, 0)),
    ("/opt/Sen2Cor-02.10.01-Linux64/bin/L2A_Process", (2, 10, 1)),
    ("usage: L2A_Process.py [-h] input_dir", None),
])
def test_version_from_help_text_or_folder(text, version):
    assert sen2cor.parse_version(text) == version


@pytest.mark.parametrize("claimed, expected", [("2.8.0", (2, 8, 0)), ("2.10.1", (2, 10, 1)), ("3.2.0", (3, 2, 0))])
def test_version_detected_by_running_help(tmp_path, claimed, expected):
    launcher = wrapper(str(tmp_path / claimed / "bin" / "L2A_Process"), claimed)
    installation = sen2cor.locate(executable=launcher)
    assert installation.version == expected
    assert installation.accepts("--processing_baseline")
    assert installation.accepts("--Hyper_MS") == (expected[0] >= 3)


def test_version_falls_back_to_the_install_folder_name(tmp_path):
    launcher = executable(str(tmp_path / "Sen2Cor-02.10.01-Linux64" / "bin" / "L2A_Process"),
                          "#!/bin/sh\necho 'usage: L2A_Process.py [-h] input_dir'\n")
    assert sen2cor.locate(executable=launcher).version == (2, 10, 1)


def test_the_installations_own_gipp_is_found(tmp_path):
    root = tmp_path / "Sen2Cor-02.08.00-Linux64"
    launcher = wrapper(str(root / "bin" / "L2A_Process"), "2.8.0")
    cfg = root / "lib" / "python2.7" / "site-packages" / "sen2cor" / "cfg"
    cfg.mkdir(parents=True)
    shutil.copy(GIPP_28, cfg / "L2A_GIPP.xml")
    user_copy = tmp_path / "home" / "sen2cor" / "2.8" / "cfg"
    user_copy.mkdir(parents=True)
    shutil.copy(GIPP_210, user_copy / "L2A_GIPP.xml")  # an older install's copy: the package's own wins
    installation = sen2cor.locate(executable=launcher, environ={}, home=str(tmp_path / "home"))
    assert installation.gipp == str(cfg / "L2A_GIPP.xml")
    os.remove(cfg / "L2A_GIPP.xml")
    assert sen2cor.find_install_gipp(launcher, (2, 8, 0), {}, str(tmp_path / "home")) == str(
        user_copy / "L2A_GIPP.xml")


# ---------------------------------------------------------------------------------------------------------------
# GIPP patching
# ---------------------------------------------------------------------------------------------------------------

UNKNOWN_GIPP = textwrap.dedent("""\
    <?xml version="1.0" encoding="ISO-8859-1"?>
    <!-- a future Sen2Cor: new elements, DEM settings grouped, a default namespace -->
    <Level-2A_Ground_Image_Processing_Parameter xmlns="urn:example:l2a-gipp:v4"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:example:l2a-gipp:v4 x.xsd">
      <Common_Section>
        <Log_Level>INFO</Log_Level>
        <Future_Switch mode="fast">ON</Future_Switch>
        <Nr_Threads>AUTO</Nr_Threads>
        <DEM>
          <DEM_Directory>NONE</DEM_Directory>
          <!-- <DEM_Reference>https://copernicus-dem-90m.s3.eu-central-1.amazonaws.com/</DEM_Reference> -->
          <DEM_Reference>NONE</DEM_Reference>
        </DEM>
        <Generate_TCI_Output>FALSE</Generate_TCI_Output>
        <Caf\xe9_Note>d\xe9j\xe0 vu</Caf\xe9_Note>
      </Common_Section>
    </Level-2A_Ground_Image_Processing_Parameter>
    """)


def gipp_cases(tmp_path):
    unknown = tmp_path / "L2A_GIPP_future.xml"
    unknown.write_bytes(UNKNOWN_GIPP.encode("iso-8859-1"))
    return {"2.8": GIPP_28, "2.8.0": os.path.join(GIPPS, "L2A_GIPP_sen2cor-2.8.0_marujore.xml"),
            "2.9": os.path.join(GIPPS, "L2A_GIPP_sen2cor-2.9.0_marujore.xml"), "2.10": GIPP_210,
            "unknown": str(unknown)}


def _elements(path):
    """[(path of local names, text, attributes)] in document order, comments included."""
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    root = ET.parse(path, parser).getroot()
    rows = []

    def walk(element, trail):
        name = "#comment" if element.tag is ET.Comment else element.tag.rsplit("}", 1)[-1]
        rows.append(("/".join(trail + [name]), (element.text or "").strip(), dict(element.attrib)))
        for child in element:
            walk(child, trail + [name])

    walk(root, [])
    return rows


@pytest.mark.parametrize("version", ["2.8", "2.8.0", "2.9", "2.10", "unknown"])
def test_gipp_patching_changes_only_the_intended_elements(tmp_path, version):
    source = gipp_cases(tmp_path)[version]
    dem = tmp_path / "dem"
    dem.mkdir()
    (dem / "srtm_38_03.tif").write_bytes(b"")
    target = str(tmp_path / "run_gipp.xml")
    gipp = sen2cor.read_gipp(source)
    installation = sen2cor.Installation("L2A_Process", (2, 10, 0))
    changes = sen2cor.gipp_changes(gipp, installation, str(dem), threads=3)
    applied = sen2cor.patch_gipp(source, target, changes)

    expected = {"Nr_Threads": "3", "DEM_Directory": str(dem), "DEM_Reference": sen2cor.SRTM_URL,
                "Generate_TCI_Output": "TRUE"}
    assert {name: new for name, (_, new) in applied.items()} == expected
    before, after = _elements(source), _elements(target)
    assert [row[0] for row in before] == [row[0] for row in after]  # same elements, comments, order
    for (trail, old_text, old_attrs), (_, new_text, new_attrs) in zip(before, after):
        name = trail.rsplit("/", 1)[-1]
        assert new_attrs == old_attrs
        assert new_text == (expected[name] if name in expected else old_text), trail

    with open(source, "rb") as a, open(target, "rb") as b:
        original, written = a.read(), b.read()
    encoding = "iso-8859-1" if version == "unknown" else "utf-8"
    old_lines, new_lines = original.decode(encoding).splitlines(), written.decode(encoding).splitlines()
    assert new_lines[0] == old_lines[0]  # the declaration, verbatim
    changed = [line for line in difflib.ndiff(old_lines, new_lines) if line[:2] in ("- ", "+ ")]
    assert all(re.search(r"<(?:\w+:)?(Nr_Threads|DEM_Directory|DEM_Reference|Generate_TCI_Output)>", line)
               for line in changed), changed  # nothing else differs, not even whitespace or comments
    assert 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"' in "\n".join(new_lines[:4])


def test_empty_elements_get_a_value_and_prefixes_stay(tmp_path):
    source = tmp_path / "g.xml"
    source.write_text('<?xml version="1.0"?>\n<g:Level-2A_Ground_Image_Processing_Parameter xmlns:g="urn:x">'
                      '<g:Common_Section><g:Nr_Threads a="1" /><g:DEM_Directory></g:DEM_Directory>'
                      '</g:Common_Section></g:Level-2A_Ground_Image_Processing_Parameter>\n')
    sen2cor.patch_gipp(str(source), str(tmp_path / "out.xml"), {"Nr_Threads": "2", "DEM_Directory": "/d&m"})
    assert (tmp_path / "out.xml").read_text() == (
        '<?xml version="1.0"?>\n<g:Level-2A_Ground_Image_Processing_Parameter xmlns:g="urn:x">'
        '<g:Common_Section><g:Nr_Threads a="1">2</g:Nr_Threads><g:DEM_Directory>/d&amp;m</g:DEM_Directory>'
        '</g:Common_Section></g:Level-2A_Ground_Image_Processing_Parameter>\n')


def test_gipp_without_dem_keeps_the_dem_settings(tmp_path):
    target = str(tmp_path / "g.xml")
    gipp = sen2cor.read_gipp(GIPP_28)
    applied = sen2cor.patch_gipp(GIPP_28, target, sen2cor.gipp_changes(
        gipp, sen2cor.Installation("x", (2, 8, 0)), None, threads=1))
    assert set(applied) == {"Nr_Threads", "Generate_TCI_Output"}
    assert sen2cor.read_gipp(target).value("DEM_Directory") == "NONE"


@pytest.mark.parametrize("files, version, current, reference", [
    (["srtm_38_03.tif"], (2, 9, 0), "NONE", sen2cor.SRTM_URL),
    (["Copernicus_DSM_30_N45_00_E006_00_DEM.tif"], (2, 12, 3), "NONE", "CDSE-GLO-90"),
    (["Copernicus_DSM_10_N45_00_E006_00_DEM.tif"], (2, 12, 3), "NONE", "CDSE-GLO-30"),
    (["Copernicus_DSM_30_N45_00_E006_00_DEM.tif"], (2, 10, 1), "NONE", sen2cor.PRISM_GLO90_URL),
    ([], (2, 12, 3), "https://copernicus-dem-90m.s3.eu-central-1.amazonaws.com/",
     "https://copernicus-dem-90m.s3.eu-central-1.amazonaws.com/"),
    ([], (2, 8, 0), "NONE", sen2cor.SRTM_URL),
])
def test_dem_reference_follows_the_tiles_in_the_folder(tmp_path, files, version, current, reference):
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert sen2cor.dem_reference(str(tmp_path), version, current) == reference


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("<not xml", "is not a readable XML file"),
    (PB_GIPP, "its root element is GS2_PROCESSING_BASELINE_PARAMETERS"),
])
def test_bad_gipp_is_one_sentence_naming_the_parameter(tmp_path, content, words):
    path = tmp_path / "gipp.xml"
    if content == PB_GIPP:
        shutil.copy(PB_GIPP, path)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ParameterError) as error:
        sen2cor.read_gipp(str(path))
    assert str(error.value).startswith("GIPP: ") and words in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Progress lines and automatic parallelism
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, percent", [
    ("Progress[%]: 14.20 : PID-584932, L2A_AtmCorr: end of water vapour retrieval, elapsed time[s]: 104.328, "
     "total: 0:06:02.100277", 14.2),
    ("[INFO] Progress[%]: 9.48 : L2A_DEM: list read, elapsed time[s]: 0.042, total: 0:00:01.367092", 9.48),
    ("Progress[%]:  0.00 : Generating datastrip metadata", 0.0),
    ("Progress[%]: 100.00 : Application terminated successfully.", 100.0),
    ("Product version: 14.5", None),
])
def test_progress_lines_of_2x_and_3x(line, percent):
    match = sen2cor.PROGRESS_LINE.match(line)
    assert (float(match.group(1)) if match else None) == percent


def test_automatic_parallel_is_cores_or_memory_over_4_gb():
    gb = 1 << 30
    assert sen2cor.automatic_parallel(10, cores=8, memory=10 * gb) == 2
    assert sen2cor.automatic_parallel(10, cores=2, memory=64 * gb) == 2
    assert sen2cor.automatic_parallel(10, cores=8, memory=1 * gb) == 1
    assert sen2cor.automatic_parallel(1, cores=8, memory=64 * gb) == 1
    assert sen2cor.available_memory() > 0 and sen2cor.cpu_count() >= 1


# ---------------------------------------------------------------------------------------------------------------
# Planning: every check before any work
# ---------------------------------------------------------------------------------------------------------------

def test_plan_refuses_bad_input_with_one_sentence_naming_the_parameter(tmp_path, standin):
    cases = [
        ({}, "INPUT_FOLDER: the folder"),
        ({"filter": "*T99XXX*"}, "INPUT_FOLDER: no Level-1C product"),
        ({"gipp": PB_GIPP}, "GIPP: "),
        ({"baseline": "5.1"}, "PROCESSING_BASELINE: '5.1' is not a baseline"),
        ({"dem": str(tmp_path / "no_dem")}, "DEM_FOLDER: the folder"),
        ({"parallel": -1}, "PARALLEL: "),
        ({"executable": str(tmp_path / "missing")}, "EXECUTABLE: "),
    ]
    for index, (case, start) in enumerate(cases):
        if index == 1:
            make_products(tmp_path / "in", "T34UDD")
        options = sen2cor.Options(gipp=case.get("gipp", GIPP_210), product_filter=case.get("filter"),
                                  processing_baseline=case.get("baseline"), dem_folder=case.get("dem"),
                                  parallel=case.get("parallel", 0))
        with pytest.raises(ParameterError) as error:
            batch(tmp_path, options, executable=case.get("executable", STANDIN))
        assert str(error.value).startswith(start), (case, str(error.value))
        assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing written while checking


def test_level_2a_input_is_refused(tmp_path, standin):
    from test_safe import make_l2a

    make_l2a(str(tmp_path / "in"))
    with pytest.raises(ParameterError, match=r"^INPUT_FOLDER: the 1 product\(s\) in .* are not Level-1C"):
        batch(tmp_path)


def test_baseline_refused_when_the_installation_lacks_the_option(tmp_path, standin):
    make_products(tmp_path / "in", "T34UDD")
    old = executable(str(tmp_path / "Sen2Cor-02.05.05-Linux64" / "bin" / "L2A_Process"),
                     "#!/bin/sh\necho 'usage: L2A_Process.py [-h] [--resolution {10,20,60}] input_dir'\n")
    with pytest.raises(ParameterError, match="^PROCESSING_BASELINE: Sen2Cor 2.5.5 has no --processing_baseline"):
        batch(tmp_path, sen2cor.Options(gipp=GIPP_210, processing_baseline="05.10"), executable=old)


# ---------------------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------------------

def test_command_line_gipp_and_output_of_one_run(tmp_path, standin):
    make_products(tmp_path / "in", "T34UDD")
    dem = tmp_path / "dem"
    dem.mkdir()
    (dem / "srtm_38_03.tif").write_bytes(b"")
    plan = batch(tmp_path, sen2cor.Options(gipp=GIPP_210, dem_folder=str(dem), processing_baseline="5.10",
                                           parallel=1))
    result = sen2cor.execute(plan)
    [entry] = records(standin)
    staging = os.path.join(str(tmp_path / "out"), ".sen2cor-" + l1c_name("T34UDD")[:-5])
    assert entry["argv"] == [str(tmp_path / "in" / l1c_name("T34UDD")), "--output_dir", staging + "/output",
                             "--GIP_L2A", staging + "/L2A_GIPP.xml", "--resolution", "10",
                             "--processing_baseline", "05.10"]
    assert entry["gipp"]["Nr_Threads"] == str(plan.threads)
    assert entry["gipp"]["DEM_Directory"] == str(dem)
    assert entry["gipp"]["DEM_Reference"] == sen2cor.SRTM_URL
    [product] = result.products
    assert re.match(r"S2B_MSIL2A_20230601T094549_N0510_R079_T34UDD_\d{8}T\d{6}\.SAFE$", os.path.basename(product))
    assert os.path.dirname(product) == str(tmp_path / "out")
    assert safe.check(product, "L2A") == []
    assert set(sen2cor.layers_of(product)) == {"TCI", "SCL"}
    assert sen2cor.layers_of(product)["TCI"].endswith("_TCI_10m.jp2")
    assert not os.path.exists(staging)
    with open(result.logs[l1c_name("T34UDD")[:-5]]) as handle:
        log = handle.read()
    assert "Progress[%]: 100.00 : Application terminated successfully." in log and "=== exit code 0" in log


def test_mixed_batch_one_failure_never_stops_the_others(tmp_path, standin, monkeypatch):
    sources = make_products(tmp_path / "in", "T34UDD", "T34UDE", "T34UFA", "T34UFB", "T34UFC", "T34UFD")
    zip_folder(sources[1], str(tmp_path / "in" / (l1c_name("T34UDE")[:-5] + ".zip")))
    shutil.rmtree(sources[1])  # the second product only as a zip
    for folder in ("AUX_DATA", "HTML", "rep_info"):  # as copied from a bucket: Sen2Cor fails without these
        shutil.rmtree(os.path.join(sources[0], folder))
    monkeypatch.setenv("STANDIN_SEN2COR_FAIL", "T34UFA")
    monkeypatch.setenv("STANDIN_SEN2COR_CRASH", "T34UFB")
    monkeypatch.setenv("STANDIN_SEN2COR_NO_OUTPUT", "T34UFC")
    os.remove(os.path.join(sources[5], "MTD_MSIL1C.xml"))  # an unusable input: refused before Sen2Cor runs
    messages = []
    result = sen2cor.execute(batch(tmp_path, sen2cor.Options(gipp=GIPP_210, parallel=2)), log=messages.append)

    made = sorted(os.path.basename(p).split("_")[5] for p in result.products)
    assert made == ["T34UDD", "T34UDE"]
    reasons = {name.split("_")[5]: reason for name, reason in result.failed.items()}
    assert set(reasons) == {"T34UFA", "T34UFB", "T34UFC", "T34UFD"}
    assert reasons["T34UFA"].startswith("Sen2Cor exited with code 1 after")
    assert "ValueError: operands could not be broadcast" in reasons["T34UFA"]
    assert "Error in tile processing" in reasons["T34UFA"] and ".sen2cor.log)." in reasons["T34UFA"]
    assert reasons["T34UFB"].startswith("Sen2Cor crashed (SIGSEGV)")
    assert "wrote no L2A product" in reasons["T34UFC"]
    assert "has no product metadata" in reasons["T34UFD"]
    assert final_l2a(str(tmp_path / "out")) == sorted(os.path.basename(p) for p in result.products)
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]  # no staging left
    assert os.path.isfile(tmp_path / "in" / (l1c_name("T34UDE")[:-5] + ".zip"))  # the zip stays
    assert not os.path.exists(tmp_path / "in" / l1c_name("T34UDE"))  # extracted for the run only
    assert os.path.isdir(os.path.join(sources[0], "AUX_DATA"))  # repaired
    assert any("created the missing folders" in m for m in messages)
    assert len(result.logs) == 6 and all(os.path.isfile(p) for p in result.logs.values())
    for reason in result.failed.values():
        assert reason.endswith(".") and "\n" not in reason


def test_timeout_stops_the_product_and_its_children(tmp_path, standin, monkeypatch):
    make_products(tmp_path / "in", "T34UDD", "T34UDE")
    monkeypatch.setenv("STANDIN_SEN2COR_HANG", "T34UDE")
    started = time.monotonic()
    result = sen2cor.execute(batch(tmp_path, sen2cor.Options(gipp=GIPP_210, parallel=2, timeout=3.0)))
    assert time.monotonic() - started < 3.0 + 2.0 + 2.0  # the limit, the stop, slack for a loaded machine
    [reason] = result.failed.values()
    assert "within the timeout of 0.05 minutes and was stopped" in reason
    assert len(result.products) == 1
    hung = next(e for e in records(standin) if "T34UDE" in e["argv"][0])
    assert processes.group_members(hung["pgid"]) == [] and not alive(hung["child"])
    assert final_l2a(str(tmp_path / "out")) == [os.path.basename(result.products[0])]


def test_cancel_mid_batch_kills_every_process_group_within_2_s(tmp_path, standin, monkeypatch):
    make_products(tmp_path / "in", "T34UDD", "T34UDE", "T34UDF")
    monkeypatch.setenv("STANDIN_SEN2COR_HANG", "T34")
    monkeypatch.setenv("STANDIN_SEN2COR_IGNORE_TERM", "1")  # only SIGKILL stops them: the escalation is tested
    asked = {}

    def is_cancelled():
        running = [e for e in records(standin) if all(alive(p) for p in (e["pid"], e["child"]))]
        if len(running) == 2 and "at" not in asked:
            asked["at"] = time.monotonic()
        return "at" in asked

    with pytest.raises(Cancelled):
        sen2cor.execute(batch(tmp_path, sen2cor.Options(gipp=GIPP_210, parallel=2)), is_cancelled=is_cancelled)
    assert time.monotonic() - asked["at"] < 2.0
    entries = records(standin)
    assert len(entries) == 2  # the third product never started
    for entry in entries:
        assert processes.group_members(entry["pgid"]) == []
        assert not alive(entry["pid"]) and not alive(entry["child"])
    assert os.listdir(tmp_path / "out") == [] or all(n.endswith(".sen2cor.log") for n in os.listdir(tmp_path / "out"))


def test_children_left_behind_are_stopped(tmp_path, standin, monkeypatch):
    make_products(tmp_path / "in", "T34UDD")
    monkeypatch.setenv("STANDIN_SEN2COR_ORPHAN", "T34UDD")
    monkeypatch.setattr(sen2cor, "ORPHAN_GRACE", 0.5)
    result = sen2cor.execute(batch(tmp_path))
    assert len(result.products) == 1 and not result.failed
    [entry] = records(standin)
    assert not alive(entry["child"])


def test_rerun_skips_completed_products(tmp_path, standin):
    make_products(tmp_path / "in", "T34UDD", "T34UDE")
    first = sen2cor.execute(batch(tmp_path))
    assert len(first.products) == 2
    again = batch(tmp_path)
    assert again.todo == [] and sorted(again.skipped.values()) == sorted(first.products)
    result = sen2cor.execute(again)
    assert result.products == [] and result.skipped == again.skipped
    assert len(records(standin)) == 2  # Sen2Cor did not run again


def test_a_killed_runner_leaves_nothing_under_a_final_name_and_the_rerun_cleans_up(tmp_path, standin,
                                                                                    monkeypatch):
    make_products(tmp_path / "in", "T34UDD")
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "2")
    script = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'build', 'pluginpath')!r})\n"
              "from sentinel2_pipeline.plugin.engine import sen2cor\n"
              f"sen2cor.execute(sen2cor.plan({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, "
              f"sen2cor.Options(gipp={GIPP_210!r}), executable={STANDIN!r}))\n")
    runner = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not records(standin) and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.send_signal(signal.SIGKILL)  # QGIS dies mid-run; Sen2Cor (own session) finishes on its own
    runner.wait()
    [entry] = records(standin)
    while alive(entry["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    out = str(tmp_path / "out")
    assert final_l2a(out) == []
    staging = os.path.join(out, ".sen2cor-" + l1c_name("T34UDD")[:-5])
    assert os.path.isdir(staging)  # what the dead run left, hidden
    from test_safe import make_l2a

    planted = make_l2a(os.path.join(staging, "output"))  # as if Sen2Cor had finished just before the crash
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "0.3")
    again = batch(tmp_path)
    assert len(again.todo) == 1  # a staged product is not a finished one
    result = sen2cor.execute(again)
    assert final_l2a(out) == [os.path.basename(result.products[0])]
    assert os.path.basename(result.products[0]) != os.path.basename(planted)  # made anew, not the stale one
    assert not os.path.exists(staging)


def test_progress_combines_the_products(tmp_path, standin, monkeypatch):
    make_products(tmp_path / "in", "T34UDD", "T34UDE")
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "1.5")
    reports = []
    sen2cor.execute(batch(tmp_path, sen2cor.Options(gipp=GIPP_210, parallel=1)),
                    progress=lambda fraction, message: reports.append((fraction, message)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] >= 0.0
    assert [f for f in fractions if 0.0 < f < 0.5] and [f for f in fractions if 0.5 < f < 1.0]
    assert any("L2A_" in m and "0 of 2 products finished" in m for _, m in reports)
    assert any("1 of 2 products finished" in m for _, m in reports)


def test_progress_is_finished_products_plus_running_percentages():
    runs = [sen2cor._Run(f"/in/{l1c_name(t)}", "/out") for t in ("T34UDD", "T34UDE", "T34UDF", "T34UDG")]
    runs[0].finished = True
    runs[1].started, runs[1].percent = 1.0, 50.0
    runs[2].started, runs[2].percent = 1.0, 25.0
    runs[2].feed("Progress[%]: 30.00 : PID-1, L2A_AtmCorr: end of water vapour retrieval, elapsed time[s]: 1.0, "
                 "total: 0:00:01")
    reports = []
    sen2cor._report(runs, lambda fraction, message: reports.append((fraction, message)))
    [(fraction, message)] = reports
    assert fraction == pytest.approx((1 + 0.5 + 0.3) / 4)
    assert message.startswith("Sen2Cor: 1 of 4 products finished") and "L2A_AtmCorr" in message


def test_sen2cor_3_output_and_the_installation_gipp(tmp_path, standin):
    """A 2.8 install with its own GIPP (2.8 layout, schema order checked by the stand-in), and a 3.x run."""
    make_products(tmp_path / "in", "T34UDD")
    root = tmp_path / "Sen2Cor-02.08.00-Linux64"
    launcher = wrapper(str(root / "bin" / "L2A_Process"), "2.8.0")
    cfg = root / "lib" / "python2.7" / "site-packages" / "sen2cor" / "cfg"
    cfg.mkdir(parents=True)
    shutil.copy(GIPP_28, cfg / "L2A_GIPP.xml")
    result = sen2cor.execute(batch(tmp_path, sen2cor.Options(resolution="20"), executable=launcher))
    assert len(result.products) == 1, result.failed
    [entry] = records(standin)
    assert entry["version"] == [2, 8, 0] and entry["gipp"]["Nr_Threads"] != "AUTO"
    assert "--resolution" in entry["argv"] and entry["argv"][entry["argv"].index("--resolution") + 1] == "20"
    assert sen2cor.layers_of(result.products[0])["TCI"].endswith("_TCI_20m.jp2")

    launcher3 = wrapper(str(tmp_path / "s2c3" / "bin" / "L2A_Process"), "3.2.0")
    shutil.rmtree(tmp_path / "out")
    result = sen2cor.execute(batch(tmp_path, sen2cor.Options(gipp=GIPP_210, resolution="all"), executable=launcher3))
    [product] = result.products
    assert "_N9933_" in product and "--resolution" not in records(standin)[-1]["argv"]
    with open(result.logs[l1c_name("T34UDD")[:-5]]) as handle:
        assert "[INFO] Progress[%]: " in handle.read()


def test_a_run_that_cannot_start_is_a_failure_not_a_crash(tmp_path, standin):
    make_products(tmp_path / "in", "T34UDD")
    plan = batch(tmp_path)
    broken = tmp_path / "broken"
    broken.write_bytes(b"\x7fELF garbage")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    plan.installation.executable = str(broken)
    result = sen2cor.execute(plan)
    [reason] = result.failed.values()
    assert reason.startswith("Sen2Cor could not be started") and result.products == []


def test_threads_run_in_parallel(tmp_path, standin, monkeypatch):
    make_products(tmp_path / "in", "T34UDD", "T34UDE")
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "1.5")
    overlap = threading.Event()

    def watch(fraction, message):
        starts = records(standin)
        if len(starts) == 2 and all(alive(e["pid"]) for e in starts):
            overlap.set()

    sen2cor.execute(batch(tmp_path, sen2cor.Options(gipp=GIPP_210, parallel=2)), progress=watch)
    assert overlap.is_set()

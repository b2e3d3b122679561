"""`make demo` from a fresh clone: a copy of the repository (tracked and untracked files, no build/, no ../shared
beside it) runs the whole chain headless against the local services of scripts/demo_services.py."""

import datetime as dt
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import pytest
from replicas import odata

from sentinel2_pipeline.plugin.engine import safe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import ROOT, find_qgis_process  # noqa: E402

DEMO_TIME_LIMIT = 150  # seconds; the demo itself takes ~15 s here


def _demo_services():
    spec = importlib.util.spec_from_file_location("demo_services", os.path.join(ROOT, "scripts", "demo_services.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_services = _demo_services()


def _clone(target):
    """Copy what `git clone` plus the working tree's new files would give: tracked and untracked files, nothing
    ignored (build/, .venv/)."""
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = os.path.join(ROOT, relative)
        if not os.path.lexists(source):  # deleted in the working tree
            continue
        destination = os.path.join(target, relative)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copy2(source, destination, follow_symlinks=False)
    return target


def _clean_environment(clone):
    """The caller's environment without anything that would steer the demo (test profiles, service overrides)."""
    prefixes = ("SENTINEL2_", "QGIS_", "STANDIN_", "SEN2COR", "S2_HEADLESS", "DEMO_", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    for name in ("PYTHON", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "AOI"):
        env.pop(name, None)
    # Offline: anything not on this machine would go to a closed port (requests, GDAL/curl and Qt honour these).
    env.update({"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost", "VENV": ".venv"})
    return env


def _safes(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".SAFE"))


def test_synthetic_products_are_deterministic_well_formed_and_listed_with_their_md5(tmp_path):
    product = odata.generate_products(["31TCJ"], dt.date(2023, 6, 1), dt.date(2023, 6, 1), levels=("L1C",))[0]
    body = demo_services.safe_zip(product)
    assert body == demo_services.safe_zip(product)
    space = demo_services.DataSpace([product])
    space.stop()
    listed = space.products[0]
    assert listed["ContentLength"] == len(body)
    assert listed["Checksum"] == [{**product["Checksum"][0], "Value": hashlib.md5(body).hexdigest()}]
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert names[0] == product["Name"] + "/" and all(n.startswith(product["Name"] + "/") for n in names)
    (tmp_path / "p.zip").write_bytes(body)
    path = safe.extract_zip(str(tmp_path / "p.zip"), str(tmp_path / "out"))
    assert safe.check(path, "L1C") == []
    info = safe.inspect(path)
    assert (info.tile, info.mtd_baseline, info.mtd_product_uri) == ("31TCJ", "05.09", product["Name"])
    assert sorted(info.band_files) == sorted(demo_services.BANDS)
    # The stand-in Sen2Cor places its rasters where the tile metadata says the tile is.
    from osgeo import gdal

    band = gdal.Open(info.band_files["B04"])
    assert band.GetGeoTransform()[0] == 300000.0 and band.RasterXSize == 24


def _get(url, data=None, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as answer:
        return answer.read()


def test_services_serve_zips_only_with_a_token_and_stop_on_sigterm(tmp_path):
    urls_file = tmp_path / "services.json"
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "demo_services.py"), "serve",
                                "--tiles", "31TCJ", "--start", "2023-06-01", "--end", "2023-06-06",
                                "--dlr-folder", str(tmp_path / "dlr"), "--json", str(urls_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not urls_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        urls = json.loads(urls_file.read_text())
        listing = json.loads(_get(urls["catalogue"] + "/Products?$top=5"))["value"]
        assert len(listing) == urls["products"] == 2
        value = urls["catalogue"].rsplit(odata.ROOT, 1)[0] + odata.value_path(listing[0])
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(value)
        assert refused.value.code == 401
        refused.value.close()
        form = urllib.parse.urlencode({"grant_type": "password", "client_id": "cdse-public",
                                       "username": demo_services.USER, "password": demo_services.PASSWORD}).encode()
        token = json.loads(_get(urls["token"], data=form))["access_token"]
        body = _get(value, headers={"Authorization": f"Bearer {token}"})
        assert hashlib.md5(body).hexdigest() == listing[0]["Checksum"][0]["Value"]
        assert "<title>Index of" in _get(urls["dlr"]).decode()
        stats = json.loads(_get(urls["stats"]))
        assert (stats["grants"], stats["zips_served"], stats["refused"]) == (["password"], 1, 1)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    assert not urls_file.exists() and "stopped:" in errors
    assert demo_services.PASSWORD not in errors and token not in errors


@pytest.mark.headless
@pytest.mark.timeout(DEMO_TIME_LIMIT + 120)
@pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")
def test_make_demo_runs_the_whole_chain_from_a_fresh_clone(tmp_path):
    venv = os.path.abspath(os.path.join(ROOT, os.environ.get("VENV") or ".venv"))
    if not os.path.isfile(os.path.join(venv, "bin", "python")):
        pytest.skip(f"no venv at {venv}: run `make deps` first")
    clone = _clone(str(tmp_path / "sentinel2_pipeline"))
    os.symlink(venv, os.path.join(clone, ".venv"))  # `make deps` finds it up to date: nothing is installed
    assert not os.path.exists(os.path.join(clone, "..", "shared")) and not os.path.exists(
        os.path.join(clone, "build"))

    started = time.monotonic()
    done = subprocess.run(["make", "demo"], cwd=clone, env=_clean_environment(clone), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=DEMO_TIME_LIMIT + 60)
    seconds = time.monotonic() - started
    report = f"after {seconds:.0f} s, exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    assert seconds < DEMO_TIME_LIMIT, report
    out = os.path.join(clone, "build", "demo")
    lines = done.stdout.splitlines()

    def line(prefix):
        found = [text for text in lines if text.startswith(prefix)]
        assert found, f"no line starting with {prefix!r}\n{report}"
        return found[0]

    # 1. tiles
    assert line("TILE_IDS:") == "TILE_IDS: 30TYP,31TCJ"
    assert line("OUTPUT:").endswith("build/demo/tiles.gpkg (2 tiles)")
    # 2. search
    assert line("SERVICES:").startswith("SERVICES: Data Space catalogue and downloads http://127.0.0.1:")
    assert line("AUTH:").startswith("AUTH:     'demo account' (s2demo1)")
    assert " (5 products, " in line("FOOTPRINTS:")
    # 3. download: one sign-in for the batch
    assert line("DOWNLOADED:").startswith("DOWNLOADED: 5 (skipped 0, failed 0), MD5 verified")
    assert line("IDENTITY:").startswith("IDENTITY: 1 sign-in(s), 0 refresh(es) for 5 zips")
    # 4. sen2cor
    assert line("L2A:").startswith("L2A: 5 products") and "(failed: none)" in line("L2A:")
    # 5. L3A: the replica's cloudy May and incomplete July are left out
    assert line("    2021-04:").startswith("    2021-04: written")
    assert line("    2021-05:").startswith("    2021-05: excluded") and "cloud 50.7%" in line("    2021-05:")
    assert line("    2021-06:").startswith("    2021-06: written")
    assert line("    2021-07:").startswith("    2021-07: excluded")
    assert line("L3A FILES:").startswith("L3A FILES: 10 in ")
    # 6. the model
    assert line("MODEL:").startswith("MODEL: 1 Level-1C products") and "1 Level-2A products" in line("MODEL:")
    # 7. biophysical variables of step 4's products
    assert line("BIOPHYSICAL:").startswith("BIOPHYSICAL: 20 COGs for 5 products in ") and "(failed: 0)" in line(
        "BIOPHYSICAL:")
    # 8. composites from the local STAC API
    assert line("    2023-06:").startswith("    2023-06: written  6 scenes") and "valid 100.0%" in line("    2023-06:")
    assert line("COMPOSITE:").startswith("COMPOSITE: 2 periods (median, B02, B03, B04, B08)")
    assert line("demo: done in ")

    # The files.
    for name in ("tiles.gpkg", "footprints.gpkg", "footprints.geojson"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "footprints.geojson"), encoding="utf-8") as stream:
        footprints = json.load(stream)["features"]
    l1c = _safes(os.path.join(out, "l1c"))
    assert l1c == sorted(f["properties"]["name"] for f in footprints) and len(l1c) == 5
    assert all(safe.check(os.path.join(out, "l1c", name), "L1C") == [] for name in l1c)
    l2a = _safes(os.path.join(out, "l2a"))
    assert len(l2a) == 5 and all(safe.inspect(os.path.join(out, "l2a", name)).level == "L2A" for name in l2a)
    assert sorted(name.split("_")[2] + name.split("_")[5] for name in l2a) == sorted(
        name.split("_")[2] + name.split("_")[5] for name in l1c)  # one L2A per L1C: same sensing time and tile
    l3a = sorted(os.listdir(os.path.join(out, "l3a")))
    assert [n for n in l3a if n.endswith(".tif")] == [f"s2_l3a_2021{m}_{b}.tif" for m in ("04", "06")
                                                      for b in ("B2", "B3", "B4", "B8")]
    with open(os.path.join(out, "l3a", "s2_l3a_report.json"), encoding="utf-8") as stream:
        assert [m["status"] for m in json.load(stream)["months"]] == ["written", "excluded", "written", "excluded"]
    assert len(_safes(os.path.join(out, "model", "l1c"))) == len(_safes(os.path.join(out, "model", "l2a"))) == 1

    # The services were stopped on exit, and no password reached a log or an output.
    with open(os.path.join(out, "services.log"), encoding="utf-8") as stream:
        services_log = stream.read()
    assert "stopped:" in services_log and not os.path.exists(os.path.join(out, "services.json"))
    for name in os.listdir(out):
        if name.endswith((".log", ".json")):
            with open(os.path.join(out, name), encoding="utf-8", errors="replace") as stream:
                assert demo_services.PASSWORD not in stream.read(), name
    assert demo_services.PASSWORD not in done.stdout + done.stderr

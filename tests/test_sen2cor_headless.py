"""sentinel2:sen2cor run with qgis_process.bin as an HPC user would, with the stand-in L2A_Process."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import find_qgis_process, qgis_process  # noqa: E402, F401
from test_safe import make_l1c  # noqa: E402
from test_sen2cor import GIPP_210, STANDIN, l1c_name  # noqa: E402

from sentinel2_pipeline.plugin.engine import safe  # noqa: E402

pytestmark = [pytest.mark.headless,
              pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")]


@pytest.fixture
def products(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "0.5")
    monkeypatch.setenv("STANDIN_SEN2COR_PIXELS", "30")
    for name in ("FAIL", "HANG", "CRASH", "NO_OUTPUT", "ORPHAN", "IGNORE_TERM", "VERSION", "RECORD"):
        monkeypatch.delenv(f"STANDIN_SEN2COR_{name}", raising=False)
    folder = tmp_path / "l1c"
    folder.mkdir()
    return [make_l1c(str(folder), l1c_name(tile)) for tile in ("T34UDD", "T34UDE")]


def test_two_products_through_qgis_process(qgis_process, tmp_path, products):
    out = tmp_path / "l2a"
    result = qgis_process.run_alg("sentinel2:sen2cor", {
        "INPUT_FOLDER": str(tmp_path / "l1c"), "EXECUTABLE": STANDIN, "GIPP": GIPP_210, "RESOLUTION": "20",
        "PARALLEL": 2, "OUTPUT_FOLDER": str(out)}).check()
    made = result.results["PRODUCTS"].split(";")
    assert sorted(os.path.basename(p).split("_")[5] for p in made) == ["T34UDD", "T34UDE"]
    assert all(safe.check(p, "L2A") == [] for p in made)
    assert result.results["FAILED"] == ""
    assert sorted(result.results["OUTPUT_LAYERS"]) == sorted(
        p for product in made for p in safe.inspect(product).band_files.values() if "_TCI_20m" in p or "_SCL_20m" in p)
    assert sorted(n for n in os.listdir(out) if n.endswith(".sen2cor.log")) == sorted(
        os.path.basename(p)[:-5] + ".sen2cor.log" for p in products)


def test_one_product_per_task_with_product_filter(qgis_process, tmp_path, products):
    """The HPC recipe: each array task gives PRODUCT_FILTER one product; a failing task exits non-zero."""
    out = tmp_path / "l2a"
    common = {"INPUT_FOLDER": str(tmp_path / "l1c"), "EXECUTABLE": STANDIN, "GIPP": GIPP_210,
              "OUTPUT_FOLDER": str(out)}
    name = os.path.basename(products[1])[:-5]
    result = qgis_process.run_alg("sentinel2:sen2cor", dict(common, PRODUCT_FILTER=name)).check()
    [made] = result.results["PRODUCTS"].split(";")
    assert "_T34UDE_" in made and [n for n in os.listdir(out) if "_MSIL2A_" in n] == [os.path.basename(made)]

    os.environ["STANDIN_SEN2COR_FAIL"] = "T34UDD"
    try:
        failed = qgis_process.run_alg("sentinel2:sen2cor", dict(common, PRODUCT_FILTER="*T34UDD*"),
                                      json_output=False)
    finally:
        del os.environ["STANDIN_SEN2COR_FAIL"]
    assert failed.returncode != 0
    assert "Sen2Cor failed on every product (1)" in failed.output and "Traceback" not in failed.output

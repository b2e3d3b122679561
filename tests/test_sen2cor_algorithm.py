"""sentinel2:sen2cor through QGIS Processing (pytest-qgis), with the stand-in L2A_Process."""

import os
import threading

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from test_safe import make_l1c
from test_sen2cor import GIPP_210, PB_GIPP, STANDIN, alive, l1c_name, records, standin  # noqa: F401 (fixture)

from sentinel2_pipeline.plugin.engine import sen2cor

ALGORITHM = "sentinel2:sen2cor"


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos, self.warnings, self.errors = [], [], []

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        self.infos.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning):  # noqa: N802 (QGIS API name)
        self.warnings.append(warning)
        super().pushWarning(warning)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API names)
        self.errors.append(error)
        super().reportError(error, fatalError)


def _run(params, context=None, feedback=None):
    import processing

    return processing.run(ALGORITHM, params, context=context, feedback=feedback or QgsProcessingFeedback())


def _params(tmp_path, **extra):
    params = {"INPUT_FOLDER": str(tmp_path / "in"), "EXECUTABLE": STANDIN, "GIPP": GIPP_210,
              "OUTPUT_FOLDER": str(tmp_path / "out")}
    params.update(extra)
    return params


def _products(tmp_path, *tiles):
    os.makedirs(tmp_path / "in", exist_ok=True)
    return [make_l1c(str(tmp_path / "in"), l1c_name(tile)) for tile in tiles]


def test_parameters_are_the_public_interface(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == ["INPUT_FOLDER", "RESOLUTION", "DEM_FOLDER", "EXECUTABLE", "GIPP", "PROCESSING_BASELINE",
                     "PARALLEL", "PRODUCT_FILTER", "TIMEOUT", "EXECUTOR", "SLURM_OPTIONS", "WAIT", "OUTPUT_AUTH",
                     "OUTPUT_FOLDER"]
    assert [o.name() for o in algorithm.outputDefinitions()] == ["OUTPUT_FOLDER", "PRODUCTS", "OUTPUT_LAYERS",
                                                                 "FAILED", "FAILED_COUNT", "JOB_ID"]
    resolution = algorithm.parameterDefinition("RESOLUTION")
    assert resolution.usesStaticStrings() and resolution.options() == ["10", "20", "60", "all"]
    assert resolution.defaultValue() == "10"
    assert algorithm.parameterDefinition("PARALLEL").defaultValue() == 0
    assert "PRODUCT_FILTER" in algorithm.shortHelpString() and "HPC" in algorithm.shortHelpString()


def test_two_products_one_failing_outputs_and_styled_layers(provider, tmp_path, standin, monkeypatch):
    _products(tmp_path, "T34UDD", "T34UDE", "T34UFA")
    monkeypatch.setenv("STANDIN_SEN2COR_FAIL", "T34UFA")
    project = QgsProject()
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = RecordingFeedback()
    result = _run(_params(tmp_path, PARALLEL=2), context, feedback)

    products = result["PRODUCTS"].split(";")
    assert len(products) == 2 and all(os.path.isdir(p) and "_MSIL2A_" in p for p in products)
    assert result["OUTPUT_FOLDER"] == str(tmp_path / "out")
    [failed] = result["FAILED"].splitlines()
    assert failed.startswith(l1c_name("T34UFA")[:-5] + ": Sen2Cor exited with code 1")
    assert feedback.warnings.count(failed) == 1 and result["FAILED_COUNT"] == 1  # a partial failure: a warning
    assert not feedback.errors
    assert len(result["OUTPUT_LAYERS"]) == 4 and all(os.path.isfile(p) for p in result["OUTPUT_LAYERS"])

    to_load = context.layersToLoadOnCompletion()
    assert sorted(to_load) == sorted(result["OUTPUT_LAYERS"])
    for path, details in to_load.items():
        layer = QgsRasterLayer(path, details.name)
        assert layer.isValid()
        project.addMapLayer(layer)
        details.postProcessor().postProcessLayer(layer, context, feedback)
        if "_SCL_" in path:
            assert details.name.endswith("scene classification")
            assert layer.renderer().type() == "paletted"
            colours = {int(c.value): c.color.name() for c in layer.renderer().classes()}
            assert len(colours) == 12 and colours[4] == "#008000" and colours[9] == "#ffffff"
        else:
            assert details.name.endswith("true colour") and "_TCI_10m" in path
            assert layer.renderer().type() == "multibandcolor"
    groups = {g.name(): [n.layer().name() for n in g.findLayers()] for g in project.layerTreeRoot().findGroups()}
    assert sorted(groups) == sorted(os.path.basename(p)[:-5] for p in products)
    for names in groups.values():
        assert len(names) == 2


def test_rerun_reports_existing_products_and_loads_them(provider, tmp_path, standin):
    _products(tmp_path, "T34UDD")
    first = _run(_params(tmp_path))
    feedback = RecordingFeedback()
    again = _run(_params(tmp_path), feedback=feedback)
    assert again["PRODUCTS"] == first["PRODUCTS"] and again["FAILED"] == ""
    assert len(records(standin)) == 1
    assert any("skipped" in info for info in feedback.infos)


@pytest.mark.parametrize("change, words", [
    ({"INPUT_FOLDER": "/nowhere/at/all"}, "INPUT_FOLDER: the folder /nowhere/at/all does not exist."),
    ({"GIPP": PB_GIPP}, "GIPP: "),
    ({"EXECUTABLE": "/nowhere/L2A_Process"}, "EXECUTABLE: /nowhere/L2A_Process does not exist."),
    ({"PROCESSING_BASELINE": "latest"}, "PROCESSING_BASELINE: 'latest' is not a baseline"),
    ({"PRODUCT_FILTER": "*T01ABC*"}, "INPUT_FOLDER: no Level-1C product"),
])
def test_bad_input_is_one_sentence_naming_the_parameter(provider, tmp_path, standin, change, words):
    _products(tmp_path, "T34UDD")
    with pytest.raises(QgsProcessingException) as error:
        _run(_params(tmp_path, **change))
    assert str(error.value).startswith(words) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
    assert records(standin) == []


def test_every_product_failing_fails_the_algorithm(provider, tmp_path, standin, monkeypatch):
    _products(tmp_path, "T34UDD")
    monkeypatch.setenv("STANDIN_SEN2COR_CRASH", "T34UDD")
    with pytest.raises(QgsProcessingException, match=r"Sen2Cor failed on every product \(1\); first: .*SIGSEGV"):
        _run(_params(tmp_path))


def test_the_plugin_setting_names_the_executable(provider, tmp_path, standin):
    _products(tmp_path, "T34UDD")
    settings = QgsSettings()
    settings.setValue(sen2cor.SETTING_KEY, STANDIN)
    try:
        params = _params(tmp_path)
        del params["EXECUTABLE"]
        result = _run(params)
    finally:
        settings.remove(sen2cor.SETTING_KEY)
    assert len(result["PRODUCTS"].split(";")) == 1
    assert records(standin)


def test_cancel_through_the_feedback(provider, tmp_path, standin, monkeypatch):
    _products(tmp_path, "T34UDD")
    monkeypatch.setenv("STANDIN_SEN2COR_HANG", "T34UDD")
    feedback = RecordingFeedback()

    def cancel_when_started():
        while not records(standin):
            threading.Event().wait(0.05)
        feedback.cancel()

    threading.Thread(target=cancel_when_started, daemon=True).start()
    result = _run(_params(tmp_path), feedback=feedback)
    assert result == {} and any("Cancelled" in error for error in feedback.errors)
    [entry] = records(standin)
    assert not alive(entry["pid"]) and not alive(entry["child"])

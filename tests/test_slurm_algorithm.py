"""EXECUTOR, SLURM_OPTIONS and WAIT of sentinel2:sen2cor and sentinel2:maja through QGIS Processing (pytest-qgis):
the parameters, and the sentences given before anything reaches a cluster (none is needed here)."""

import os

import pytest
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback
from test_safe import make_l1c
from test_sen2cor import GIPP_210, STANDIN, l1c_name

from sentinel2_pipeline import classFactory
from sentinel2_pipeline.plugin.engine import slurm


@pytest.fixture(scope="module")
def algorithms(qgis_processing):
    plugin = classFactory(None)
    plugin.initProcessing()
    registry = QgsApplication.processingRegistry()
    yield {name: registry.algorithmById(f"sentinel2:{name}") for name in ("sen2cor", "maja")}
    plugin.unload()


def _run(algorithm, params):
    import processing

    return processing.run(f"sentinel2:{algorithm}", params, context=QgsProcessingContext(),
                          feedback=QgsProcessingFeedback())


@pytest.mark.parametrize("name", ["sen2cor", "maja"])
def test_executor_parameters_and_job_id_output(algorithms, name):
    algorithm = algorithms[name]
    executor = algorithm.parameterDefinition("EXECUTOR")
    assert executor.options() == ["local", "slurm"] and executor.usesStaticStrings()
    assert executor.defaultValue() == "local"
    options = algorithm.parameterDefinition("SLURM_OPTIONS")
    assert options.flags() & options.FlagOptional and options.multiLine()
    assert algorithm.parameterDefinition("WAIT").defaultValue() is True
    assert all(algorithm.parameterDefinition(p).flags() & executor.FlagAdvanced
               for p in ("EXECUTOR", "SLURM_OPTIONS", "WAIT"))
    assert "JOB_ID" in [o.name() for o in algorithm.outputDefinitions()]
    assert "SLURM_OPTIONS" in algorithm.shortHelpString() and "WAIT=false" in algorithm.shortHelpString()


@pytest.fixture
def l1c(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_SEN2COR_PIXELS", "30")
    os.makedirs(tmp_path / "in")
    make_l1c(str(tmp_path / "in"), l1c_name("T34UDD"))
    return {"INPUT_FOLDER": str(tmp_path / "in"), "EXECUTABLE": STANDIN, "GIPP": GIPP_210, "EXECUTOR": "slurm",
            "OUTPUT_FOLDER": str(tmp_path / "out")}


def test_slurm_options_the_plugin_owns_are_refused_before_any_work(algorithms, l1c):
    with pytest.raises(QgsProcessingException) as error:
        _run("sen2cor", dict(l1c, SLURM_OPTIONS="--partition=short\n#SBATCH --array=0-9%2"))
    assert str(error.value).startswith("SLURM_OPTIONS: --array is set by the plugin")
    assert not os.path.exists(l1c["OUTPUT_FOLDER"])


def test_without_sbatch_the_algorithm_says_so_and_submits_nothing(algorithms, l1c, tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python3").symlink_to("/usr/bin/python3")  # the stand-in's '#!/usr/bin/env python3'; no sbatch
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(QgsProcessingException) as error:
        _run("sen2cor", l1c)
    assert str(error.value).startswith("EXECUTOR=slurm needs SLURM's sbatch, which is not on this machine's PATH: "
                                       "run QGIS or qgis_process on a login node")
    assert not os.path.exists(os.path.join(l1c["OUTPUT_FOLDER"], slurm.STATE_FILE))
    assert not os.path.exists(os.path.join(l1c["OUTPUT_FOLDER"], "slurm-sen2cor.sh"))


def test_maja_from_geodes_is_not_for_the_cluster(algorithms, tmp_path):
    with pytest.raises(QgsProcessingException) as error:
        _run("maja", {"MODE": "geodes", "TILE": "31TCJ", "START": "2023-06-01", "END": "2023-06-30",
                      "EXECUTOR": "slurm", "OUTPUT_FOLDER": str(tmp_path / "out")})
    assert str(error.value) == ("EXECUTOR: slurm runs a local MAJA on the cluster (MODE=local); GEODES downloads "
                                "(MODE=geodes) run on this machine with EXECUTOR=local.")

"""EXECUTOR=slurm against a real single-node SLURM cluster (tests/slurm_cluster.py) with the stand-in Sen2Cor and
MAJA: real job arrays whose tasks run qgis_process in the test profile. Root only (slurmd); skipped otherwise.

A task over a 1-minute time limit is submitted when the module starts (SLURM checks limits every 30 s, so the kill
comes 60–90 s later) and checked by the last test, so the other tests run meanwhile."""

import datetime as dt
import os
import re
import sys
import time

import pytest
from slurm_cluster import slurm_cluster, unavailable  # noqa: F401 (fixture)
from test_maja import STANDIN as MAJA_STANDIN
from test_maja import Site, records, series, site  # noqa: F401 (fixture)
from test_safe import make_l1c
from test_sen2cor import GIPP_210, STANDIN, alive, l1c_name, standin  # noqa: F401 (fixture)

from sentinel2_pipeline.plugin.engine import maja, safe, sen2cor, slurm
from sentinel2_pipeline.plugin.engine.errors import Cancelled

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import find_qgis_process, qgis_process  # noqa: E402, F401

pytestmark = [pytest.mark.headless,
              pytest.mark.skipif(bool(unavailable()), reason=unavailable() or ""),
              pytest.mark.skipif(not find_qgis_process(), reason="qgis_process is not installed")]


def l1c_folder(tmp_path, *tiles):
    folder = tmp_path / "l1c"
    folder.mkdir(exist_ok=True)
    for tile in tiles:
        make_l1c(str(folder), l1c_name(tile))
    return str(folder)


def sen2cor_params(input_folder, output, **extra):
    return {"INPUT_FOLDER": input_folder, "EXECUTABLE": STANDIN, "GIPP": GIPP_210, "RESOLUTION": "20",
            "OUTPUT_FOLDER": output, **extra}


def datatake(path):
    """An L2A name without its processing time, which differs between two runs of the same product."""
    return os.path.basename(path).rsplit("_", 1)[0]


def contents(products):
    """{datatake: files inside the product, product names replaced} (what a user would compare)."""
    listing = {}
    for product in products:
        root, name = product, os.path.basename(product)
        files = sorted(os.path.relpath(os.path.join(folder, f), root).replace(name[:-5], "<product>")
                       for folder, _, names in os.walk(root) for f in names)
        listing[datatake(product)] = files
    return listing


# ---------------------------------------------------------------------------------------------------------------
# A task over its time limit, started first
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def overtime(slurm_cluster, qgis_process, tmp_path_factory):  # noqa: F811 (fixtures)
    """A Sen2Cor task that hangs under --time=1, submitted before the other tests of this module."""
    base = tmp_path_factory.mktemp("overtime")
    record = str(base / "record.jsonl")
    env = dict(qgis_process.env(), STANDIN_SEN2COR_HANG="T34UDD", STANDIN_SEN2COR_RECORD=record)
    batch = sen2cor.plan(l1c_folder(base, "T34UDD"), str(base / "l2a"), sen2cor.Options(gipp=GIPP_210),
                         executable=STANDIN)
    job = slurm.submit(slurm.sen2cor_array(batch), slurm.parse_options("--time=1 --mem=1G"), environ=env)
    yield job, env, record, time.monotonic()
    slurm.cancel(job, environ=env)  # gone already when the last test passed


# ---------------------------------------------------------------------------------------------------------------
# Sen2Cor
# ---------------------------------------------------------------------------------------------------------------

def test_the_cluster_starts_in_seconds(slurm_cluster):  # noqa: F811 (fixture)
    assert slurm_cluster.started_in < 15, slurm_cluster.logs()


def test_sen2cor_array_makes_what_a_local_run_makes(qgis_process, slurm_cluster, standin, tmp_path):  # noqa: F811
    folder = l1c_folder(tmp_path, "T34UDD", "T34UDE", "T34UFA")
    local = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(folder, str(tmp_path / "local"))).check()
    out = str(tmp_path / "cluster")
    result = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(folder, out, EXECUTOR="slurm")).check()
    job_id, made = result.results["JOB_ID"], result.results["PRODUCTS"].split(";")
    assert job_id.isdigit() and result.results["FAILED"] == ""
    assert contents(made) == contents(local.results["PRODUCTS"].split(";")) and len(made) == 3
    assert all(safe.check(p, "L2A") == [] for p in made)
    assert sorted(map(os.path.basename, result.results["OUTPUT_LAYERS"])) == sorted(
        map(os.path.basename, local.results["OUTPUT_LAYERS"]))
    names = sorted(n[:-5] for n in os.listdir(folder))
    for index, name in enumerate(names):  # one task per product, each with its log, each one product
        with open(os.path.join(out, f"slurm-{job_id}_{index}.out")) as handle:
            assert f"PRODUCT_FILTER={name}" in handle.read()
        assert os.path.isfile(os.path.join(out, f"{name}.sen2cor.log"))
    with open(os.path.join(out, "slurm-sen2cor.sh")) as handle:
        script = handle.read()
    assert "#SBATCH --array=0-2\n" in script and "#SBATCH --mem=4096M\n" in script
    assert slurm_cluster.queued(job_id) == [] and os.path.isfile(os.path.join(out, f"slurm-{job_id}.json"))
    assert not os.path.exists(os.path.join(out, slurm.STATE_FILE))


def test_a_failing_task_is_reported_with_its_log(qgis_process, slurm_cluster, standin, tmp_path,  # noqa: F811
                                                 monkeypatch):
    folder = l1c_folder(tmp_path, "T34UDD", "T34UDE")
    monkeypatch.setenv("STANDIN_SEN2COR_FAIL", "T34UDE")
    out = str(tmp_path / "l2a")
    result = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(folder, out, EXECUTOR="slurm")).check()
    job_id = result.results["JOB_ID"]
    [made] = result.results["PRODUCTS"].split(";")
    assert "_T34UDD_" in made
    failed = result.results["FAILED"]
    name = l1c_name("T34UDE")[:-5]
    assert failed.startswith(f"{name}: Sen2Cor exited with code 1 ") and "\n" not in failed
    assert "L2A_ProcessTile: Error in tile processing" in failed  # the stand-in's own lines, via the task's log
    assert failed.endswith(f"(SLURM task 1 of job {job_id}, log: {out}/slurm-{job_id}_1.out).")


def test_cancel_removes_the_array(qgis_process, slurm_cluster, standin, tmp_path, monkeypatch):  # noqa: F811
    folder = l1c_folder(tmp_path, "T34UDD", "T34UDE")
    monkeypatch.setenv("STANDIN_SEN2COR_HANG", "T34UD")
    job = slurm.sen2cor_array(sen2cor.plan(folder, str(tmp_path / "l2a"), sen2cor.Options(gipp=GIPP_210),
                                           executable=STANDIN))
    deadline = time.monotonic() + 60

    def sen2cor_running():  # the cancel button, pressed once a stand-in runs inside its task
        return bool(records(standin)) or time.monotonic() > deadline

    with pytest.raises(Cancelled):
        slurm.run(job, [], True, is_cancelled=sen2cor_running, environ=qgis_process.env())
    assert records(standin)  # a task was running (and the other running or waiting): scancel took both
    assert slurm_cluster.queued(job.job_id) == []
    assert not os.path.exists(os.path.join(job.output_folder, slurm.STATE_FILE))
    time.sleep(0.5)  # slurmstepd's SIGKILL after KillWait reaches what ignored the SIGTERM
    assert not [e["pid"] for e in records(standin) if alive(e["pid"]) or alive(e["child"])]


def test_wait_false_returns_the_job_id_and_a_later_call_collects(qgis_process, slurm_cluster, standin,  # noqa: F811
                                                                 tmp_path, monkeypatch):
    folder = l1c_folder(tmp_path, "T34UDD", "T34UDE")
    monkeypatch.setenv("STANDIN_SEN2COR_SECONDS", "4")  # long enough to find the tasks still running
    out = str(tmp_path / "l2a")
    first = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(folder, out, EXECUTOR="slurm", WAIT=False))
    job_id = first.check().results["JOB_ID"]
    assert job_id.isdigit() and first.results["PRODUCTS"] == "" and first.results["FAILED"] == ""
    assert os.path.isfile(os.path.join(out, slurm.STATE_FILE)) and slurm_cluster.queued(job_id)
    again = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(folder, out, EXECUTOR="slurm", WAIT=False))
    assert again.check().results["JOB_ID"] == job_id and f"Collecting SLURM job {job_id}" in again.output
    assert os.path.isfile(os.path.join(out, slurm.STATE_FILE))  # still running: still remembered
    last = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(folder, out, EXECUTOR="slurm")).check()
    assert last.results["JOB_ID"] == job_id and len(last.results["PRODUCTS"].split(";")) == 2
    assert not os.path.exists(os.path.join(out, slurm.STATE_FILE))
    assert sorted(n for n in os.listdir(out) if n.startswith(f"slurm-{job_id}_")) == [
        f"slurm-{job_id}_0.out", f"slurm-{job_id}_1.out"]


def test_a_bad_partition_is_one_sentence_with_the_schedulers_message(qgis_process, slurm_cluster,  # noqa: F811
                                                                     standin, tmp_path):
    folder = l1c_folder(tmp_path, "T34UDD", "T34UDE")
    out = str(tmp_path / "l2a")
    result = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(
        folder, out, EXECUTOR="slurm", SLURM_OPTIONS="--partition=nope"), json_output=False)
    assert result.returncode != 0 and "Traceback" not in result.output
    assert ("SLURM refused the job array of 2 task(s): invalid partition specified: nope; Batch job submission "
            "failed: Invalid partition name specified (script: ") in result.output
    assert not os.path.exists(os.path.join(out, slurm.STATE_FILE))


def test_a_task_over_its_memory_limit_is_killed_and_said(qgis_process, slurm_cluster, standin,  # noqa: F811
                                                         tmp_path):
    folder = l1c_folder(tmp_path, "T34UDD")
    out = str(tmp_path / "l2a")
    result = qgis_process.run_alg("sentinel2:sen2cor", sen2cor_params(  # qgis_process alone needs far more
        folder, out, EXECUTOR="slurm", SLURM_OPTIONS="--mem=20M"), json_output=False)
    assert result.returncode != 0 and "Traceback" not in result.output
    job_id = re.search(r"SLURM job (\d+) submitted", result.output).group(1)
    assert (f"Sen2Cor failed on every product (1); first: {l1c_name('T34UDD')[:-5]}: SLURM task 0 of job {job_id} was "
            f"killed by the scheduler (memory limit") in result.output
    assert "exceeded memory limit" in result.output  # slurmstepd's own words


# ---------------------------------------------------------------------------------------------------------------
# MAJA
# ---------------------------------------------------------------------------------------------------------------


def test_maja_array_makes_what_a_local_run_makes(qgis_process, slurm_cluster, site, tmp_path,  # noqa: F811
                                                 monkeypatch):
    series(site.input, dt.date(2023, 6, 1), 4)
    os.makedirs(os.path.join(site.gipp, "userconf"))
    with open(os.path.join(site.gipp, "userconf", "MAJAUserConfigSystem.xml"), "w") as handle:
        handle.write('<Config xmlns="http://maja.fr"><Computing><NbThreads>1</NbThreads><RAM>1500</RAM>'
                     '</Computing></Config>')
    monkeypatch.setenv("STANDIN_MAJA_FAIL", "20230611")
    request = maja.period("31TCJ", dt.date(2023, 6, 1), dt.date(2023, 6, 30))
    local = maja.run_local(maja.plan_local(request, site.input, str(tmp_path / "local"), executable=MAJA_STANDIN,
                                           dtm_folder=site.dtm, gipp_folder=site.gipp))
    local_modes = site.modes()
    result = qgis_process.run_alg("sentinel2:maja", {
        "MODE": "local", "TILE": "31TCJ", "START": "2023-06-01", "END": "2023-06-30", "INPUT_FOLDER": site.input,
        "DTM_FOLDER": site.dtm, "GIPP_FOLDER": site.gipp, "EXECUTABLE": MAJA_STANDIN, "EXECUTOR": "slurm",
        "OUTPUT_FOLDER": site.output}).check()
    job_id = result.results["JOB_ID"]
    assert [os.path.basename(p) for p in result.results["PRODUCTS"].split(";")] == [p.name for p in local.products]
    assert site.modes()[len(local_modes):] == local_modes  # the same series: INIT, NOMINAL, (fail), INIT
    failed = result.results["FAILED"]
    assert failed.startswith("S2A_MSIL1C_20230611T105031_N0509_R051_T31TCJ_20230611T140000.SAFE: MAJA (nominal) on "
                             "2023-06-11 exited with code 1") and list(local.failed) == [failed.split(":")[0]]
    assert failed.endswith(f"(SLURM task 0 of job {job_id}, log: {site.output}/slurm-{job_id}_0.out).")
    with open(os.path.join(site.output, "slurm-maja.sh")) as handle:
        script = handle.read()
    assert "#SBATCH --array=0-0\n" in script and "#SBATCH --mem=1500M\n" in script  # the user configuration's RAM
    with open(os.path.join(site.output, f"slurm-{job_id}_0.out")) as handle:
        assert "TILE=31TCJ" in handle.read()


# ---------------------------------------------------------------------------------------------------------------
# Biophysical variables
# ---------------------------------------------------------------------------------------------------------------

def test_biophysical_array_makes_what_a_local_run_makes(qgis_process, slurm_cluster, tmp_path):  # noqa: F811
    import l2adata
    from osgeo import gdal

    folder = tmp_path / "l2a"
    folder.mkdir()
    l2adata.sen2cor_product(str(folder))
    l2adata.maja_product(str(folder))
    common = {"INPUT_FOLDER": str(folder), "VARIABLES": ["LAI", "CCC"]}
    local = qgis_process.run_alg("sentinel2:biophysical", dict(common, OUTPUT_FOLDER=str(tmp_path / "local")))
    out = str(tmp_path / "cluster")
    result = qgis_process.run_alg("sentinel2:biophysical", dict(common, OUTPUT_FOLDER=out, EXECUTOR="slurm"))
    local.check()
    result.check()
    job_id = result.results["JOB_ID"]
    assert job_id.isdigit() and result.results["FAILED_COUNT"] == 0
    assert result.results["PRODUCTS"] == local.results["PRODUCTS"] and len(result.results["PRODUCTS"].split(";")) == 2
    made = sorted(f for f in os.listdir(out) if f.endswith(".tif"))
    assert made == sorted(os.listdir(tmp_path / "local")) and len(made) == 6
    for name in made:
        ours, theirs = gdal.Open(os.path.join(out, name)), gdal.Open(str(tmp_path / "local" / name))
        assert ours.ReadAsArray().tobytes() == theirs.ReadAsArray().tobytes()
    with open(os.path.join(out, "slurm-biophysical.sh")) as handle:
        script = handle.read()
    assert "#SBATCH --array=0-1\n" in script and "#SBATCH --mem=2048M\n" in script
    assert "VARIABLES=LAI" in script and "VARIABLES=CCC" in script


# ---------------------------------------------------------------------------------------------------------------
# Last: the task over its time limit
# ---------------------------------------------------------------------------------------------------------------

def test_a_task_over_its_time_limit_is_killed_and_said(overtime, monkeypatch):
    job, env, record, submitted = overtime
    monkeypatch.setattr(slurm, "POLL_MAX", 2.0)  # a user's long wait may poll every 30 s; this test need not
    outcome = slurm.follow(job, wait=True, environ=env)
    reason = outcome.failed[l1c_name("T34UDD")[:-5]]
    assert reason.startswith(f"SLURM task 0 of job {job.job_id} was killed by the scheduler (time limit, TIMEOUT: "
                             f"*** JOB ")
    assert "DUE TO TIME LIMIT ***" in reason and outcome.products == [] and outcome.finished
    assert 55 < time.monotonic() - submitted < 150
    assert records(record) and not [e for e in records(record) if alive(e["pid"]) or alive(e["child"])]

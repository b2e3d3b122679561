"""Engine tests of plugin/engine/slurm.py that need no cluster: SLURM_OPTIONS, the array script (run with bash as
a task would run it), the arrays built from real Sen2Cor and MAJA plans, what the scheduler's commands print, the
failure sentences and the state file. The cluster itself is in test_slurm_cluster.py."""

import datetime as dt
import json
import os
import subprocess
import textwrap

import pytest
from test_maja import Site, dtm, request, series
from test_sen2cor import GIPP_210, STANDIN, final_l2a, make_products, standin  # noqa: F401 (fixture)

from sentinel2_pipeline.plugin.engine import sen2cor, slurm
from sentinel2_pipeline.plugin.engine.errors import ParameterError, S2Error

# ---------------------------------------------------------------------------------------------------------------
# SLURM_OPTIONS
# ---------------------------------------------------------------------------------------------------------------


def test_options_are_command_line_text_or_sbatch_lines():
    text = textwrap.dedent("""\
        --partition=short --time=02:00:00
        #SBATCH -A proj
        # a comment, not an option
        --comment='two words' --exclusive
          #SBATCH --qos long""")
    assert slurm.parse_options(text) == [["--partition=short"], ["--time=02:00:00"], ["-A", "proj"],
                                         ["--comment=two words"], ["--exclusive"], ["--qos", "long"]]
    assert slurm.parse_options("") == [] and slurm.parse_options(None) == []


@pytest.mark.parametrize("text, words", [
    ("--array=0-9%5", "SLURM_OPTIONS: --array is set by the plugin"),
    ("-o /tmp/x.out", "SLURM_OPTIONS: -o (--output) is set by the plugin, which submits one task per product"),
    ("--chdir /scratch", "SLURM_OPTIONS: --chdir is set by the plugin"),
    ("--wrap=hostname", "SLURM_OPTIONS: --wrap is set by the plugin"),
    ("partition=short", "SLURM_OPTIONS: 'partition=short' is not an sbatch option"),
    ("--time=1:00 extra", "SLURM_OPTIONS: 'extra' is not an sbatch option"),
    ("--comment='unclosed", "SLURM_OPTIONS: cannot read"),
])
def test_options_the_plugin_owns_or_that_are_not_options_are_one_sentence(text, words):
    with pytest.raises(ParameterError) as error:
        slurm.parse_options(text)
    assert str(error.value).startswith(words) and "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------------

def job_of(tmp_path, values=("S2A_MSIL1C_one", "S2B_MSIL1C_two"), kind="sen2cor"):
    output = str(tmp_path / "out put")  # a space: every path in the script must be quoted
    tasks = [slurm.Task(value, [{"name": value}]) for value in values]
    parameters = [["INPUT_FOLDER", str(tmp_path / "l 1c")], ["RESOLUTION", "20"], ["EXECUTOR", "local"],
                  ["OUTPUT_FOLDER", output]]
    return slurm.ArrayJob(kind, output, parameters, "PRODUCT_FILTER", tasks, 4096, [])


def directives(text):
    return [line[len("#SBATCH "):] for line in text.splitlines() if line.startswith("#SBATCH ")]


def test_script_defaults_then_user_options_and_what_overrides_the_defaults(tmp_path):
    job = job_of(tmp_path)
    text = slurm.script_text(job, slurm.parse_options("-p short\n--time=1:00:00"), "/usr/bin/qgis_process.bin", {})
    assert directives(text) == ["--array=0-1", "--output=slurm-%A_%a.out", "--job-name=s2-sen2cor", "--mem=4096M",
                                "-p short", "--time=1:00:00"]
    own = slurm.script_text(job, slurm.parse_options("--mem-per-cpu=2G -J mine"), "qgis_process.bin", {})
    assert directives(own) == ["--array=0-1", "--output=slurm-%A_%a.out", "--mem-per-cpu=2G", "-J mine"]
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def fake_qgis_process(folder, code=0):
    """A qgis_process that records its arguments and the environment a task gives it."""
    path = os.path.join(folder, "qgis_process.bin")
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(f"""\
            #!/bin/bash
            printf '%s\\n' "$@" > "$(dirname "$0")/args.txt"
            env > "$(dirname "$0")/env.txt"
            echo "XDG=$XDG_RUNTIME_DIR" >> "$(dirname "$0")/env.txt"
            exit {code}
            """))
    os.chmod(path, 0o755)
    return path


def run_task(script_path, index, tmp_path):
    """The script as slurmd would start one task, with an empty environment (a cluster with --export=NONE)."""
    environment = {"PATH": "/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": str(index), "SLURM_ARRAY_JOB_ID": "41",
                   "SLURM_JOB_ID": str(42 + index), "TMPDIR": str(tmp_path)}
    return subprocess.run(["bash", script_path], env=environment, capture_output=True, text=True)


def test_a_task_runs_the_algorithm_on_its_own_product_with_the_submitters_environment(tmp_path):
    job = job_of(tmp_path)
    tools = tmp_path / "tools"
    tools.mkdir()
    qgis = fake_qgis_process(str(tools), code=3)
    environ = {"QGIS_CUSTOM_CONFIG_PATH": "/home/u/.qgis batch", "QGIS_PLUGINPATH": "/p", "PYTHONPATH": "/v/site",
               "QGIS_AUTH_PASSWORD_FILE": "/home/u/.pw", "QT_QPA_PLATFORM": "xcb", "UNRELATED": "x"}
    script = tmp_path / "task.sh"
    script.write_text(slurm.script_text(job, [], qgis, environ))
    done = run_task(str(script), 1, tmp_path)
    assert done.returncode == 3 and "qgis_process exited with code 3" in done.stdout  # the task fails with it
    assert "task 1 of job 41, PRODUCT_FILTER=S2B_MSIL1C_two" in done.stdout
    args = (tools / "args.txt").read_text().splitlines()
    assert args == ["run", "sentinel2:sen2cor", "--", f"INPUT_FOLDER={tmp_path / 'l 1c'}", "RESOLUTION=20",
                    "EXECUTOR=local", f"OUTPUT_FOLDER={tmp_path / 'out put'}", "PRODUCT_FILTER=S2B_MSIL1C_two"]
    env = dict(line.split("=", 1) for line in (tools / "env.txt").read_text().splitlines() if "=" in line)
    assert {k: env.get(k) for k in environ} == {
        "QGIS_CUSTOM_CONFIG_PATH": "/home/u/.qgis batch", "QGIS_PLUGINPATH": "/p", "PYTHONPATH": "/v/site",
        "QGIS_AUTH_PASSWORD_FILE": "/home/u/.pw", "QT_QPA_PLATFORM": "offscreen", "UNRELATED": None}
    assert env["XDG"] == f"{tmp_path}/s2-qgis-runtime-43" and not os.path.exists(env["XDG"])  # removed after


def test_find_qgis_process(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    qgis = fake_qgis_process(str(tools))
    assert slurm.find_qgis_process({"PATH": str(tools)}) == qgis
    assert slurm.find_qgis_process({"PATH": str(tmp_path)}, search=[str(tools)]) == qgis
    assert slurm.find_qgis_process({"QGIS_PROCESS": "/opt/q/qgis_process", "PATH": str(tools)}) == \
        "/opt/q/qgis_process"
    with pytest.raises(S2Error, match="qgis_process .* was not found on PATH or next to QGIS"):
        slurm.find_qgis_process({"PATH": str(tmp_path)})


def test_without_sbatch_the_submission_is_one_sentence_and_writes_nothing(tmp_path):
    job = job_of(tmp_path)
    tools = tmp_path / "tools"
    tools.mkdir()
    fake_qgis_process(str(tools))
    with pytest.raises(S2Error) as error:
        slurm.submit(job, environ={"PATH": str(tools)})
    assert str(error.value).startswith("EXECUTOR=slurm needs SLURM's sbatch, which is not on this machine's PATH")
    assert not os.path.exists(job.output_folder)


def test_nothing_to_do_submits_nothing(tmp_path):
    job = job_of(tmp_path, values=())
    job.ready = ["/out/S2A_MSIL2A_x.SAFE"]
    lines = []
    outcome = slurm.run(job, environ={"PATH": str(tmp_path)}, log=lines.append)  # no sbatch: never called
    assert outcome == slurm.Outcome("", 0, True, ["/out/S2A_MSIL2A_x.SAFE"], {})
    assert lines == ["Nothing to submit: every product is already in the output folder."]


# ---------------------------------------------------------------------------------------------------------------
# Arrays from real plans
# ---------------------------------------------------------------------------------------------------------------

def test_sen2cor_array_one_task_per_product_still_to_do(tmp_path, standin):  # noqa: F811 (fixture)
    products = make_products(tmp_path / "in", "T34UDD", "T34UDE", "T34UFA")
    out = str(tmp_path / "out")
    options = sen2cor.Options(resolution="20", gipp=GIPP_210, timeout=90 * 60)
    sen2cor.run(str(tmp_path / "in"), out, sen2cor.Options(product_filter="*T34UDE*", gipp=GIPP_210),
                executable=STANDIN)
    job = slurm.sen2cor_array(sen2cor.plan(str(tmp_path / "in"), out, options, executable=STANDIN))
    names = [os.path.basename(p)[:-5] for p in products]
    assert [t.value for t in job.tasks] == [names[0], names[2]] and job.task_parameter == "PRODUCT_FILTER"
    assert [os.path.basename(p) for p in job.ready] == final_l2a(out)
    assert job.memory_mb == 4096 and job.kind == "sen2cor"
    assert job.parameters == [["INPUT_FOLDER", str(tmp_path / "in")], ["RESOLUTION", "20"], ["EXECUTABLE", STANDIN],
                              ["GIPP", GIPP_210], ["TIMEOUT", "90"], ["PARALLEL", "1"], ["OUTPUT_FOLDER", out],
                              ["EXECUTOR", "local"]]


@pytest.fixture
def site(monkeypatch, tmp_path):
    monkeypatch.delenv("MAJA_INSTALL_DIR", raising=False)
    return Site(tmp_path, str(tmp_path / "record.jsonl"))


def userconf(folder, ram):
    os.makedirs(os.path.join(folder, "userconf"))
    with open(os.path.join(folder, "userconf", "MAJAUserConfigSystem.xml"), "w") as handle:
        handle.write(f'<?xml version="1.0"?><Config xmlns="http://maja.fr"><Computing><NbThreads>2</NbThreads>'
                     f'<RAM>{ram}</RAM></Computing></Config>')


def test_maja_array_one_task_per_tile_with_the_user_configurations_ram(site):
    series(site.input, dt.date(2023, 6, 1), 3)
    series(site.input, dt.date(2023, 6, 1), 2, tile="31TDJ")
    dtm(site.dtm, "31TDJ")
    plans = [site.plan(request(tile=tile)) for tile in ("31TCJ", "31TDJ")]
    job = slurm.maja_array(plans, site.dtm, site.gipp)
    assert [t.value for t in job.tasks] == ["31TCJ", "31TDJ"] and job.task_parameter == "TILE"
    assert [[e["date"] for e in t.expect] for t in job.tasks] == [["2023-06-01", "2023-06-06", "2023-06-11"],
                                                                   ["2023-06-01", "2023-06-06"]]
    assert job.memory_mb == slurm.MAJA_DEFAULT_RAM_MB  # no user configuration: MAJA's default
    assert dict(job.parameters)["GIPP_FOLDER"] == site.gipp and dict(job.parameters)["START"] == "2023-06-01"
    userconf(site.gipp, 1500)
    assert slurm.maja_array([site.plan(request())], site.dtm, site.gipp).memory_mb == 1500


# ---------------------------------------------------------------------------------------------------------------
# What the scheduler's commands print (captured from SLURM 22.05)
# ---------------------------------------------------------------------------------------------------------------

def test_squeue_lines_are_the_tasks_still_queued_or_running():
    assert slurm.parse_squeue("2|PENDING|Resources\n1|RUNNING|None\n0|COMPLETING|None\n3|COMPLETED|None\n") == {
        2: "PENDING", 1: "RUNNING", 0: "COMPLETING"}
    assert slurm.parse_squeue("") == {}


def test_sacct_lines_give_each_tasks_end():
    text = ("15_0|COMPLETED|0:0|None\n15_1|TIMEOUT|0:15|TimeLimit\n15_2|CANCELLED by 0|0:15|None\n"
            "15_[3-5%2]|PENDING|0:0|JobArrayTaskLimit\n15_1.batch|CANCELLED|0:15|\n")
    found = slurm.parse_sacct(text, "15")
    assert found[1] == slurm.TaskState("TIMEOUT", "0:15", "TimeLimit") and found[2].state == "CANCELLED"
    assert sorted(found) == [0, 1, 2, 3, 4, 5] and found[4].state == "PENDING"


def test_scontrol_lines_give_each_tasks_end():
    text = ("JobId=15 ArrayJobId=15 ArrayTaskId=1 JobName=s2 sen2cor UserId=root(0) JobState=COMPLETED "
            "Reason=None Dependency=(null) ExitCode=0:0 RunTime=00:00:03 Command=/a b/slurm-sen2cor.sh\n"
            "JobId=17 ArrayJobId=15 ArrayTaskId=0 JobName=s2 JobState=FAILED Reason=JobLaunchFailure ExitCode=0:9\n"
            "JobId=15 ArrayJobId=15 ArrayTaskId=2-3,5 JobState=PENDING Reason=Resources ExitCode=0:0\n")
    found = slurm.parse_scontrol(text)
    assert found[0] == slurm.TaskState("FAILED", "0:9", "JobLaunchFailure") and found[1].state == "COMPLETED"
    assert sorted(found) == [0, 1, 2, 3, 5]


# ---------------------------------------------------------------------------------------------------------------
# Why a task made nothing
# ---------------------------------------------------------------------------------------------------------------

def task_log(job, index, text):
    os.makedirs(job.output_folder, exist_ok=True)
    with open(job.log_of(index), "w") as handle:
        handle.write(textwrap.dedent(text))


def test_a_time_limit_kill_is_the_schedulers_sentence(tmp_path):
    job = job_of(tmp_path)
    job.job_id = "14"
    task_log(job, 0, """\
        sentinel2:sen2cor: task 0 of job 14, PRODUCT_FILTER=S2A_MSIL1C_one
        Sen2Cor: 0 of 1 products finished
        0...10...20...30.slurmstepd-vm: error: *** JOB 14 ON vm CANCELLED AT 2026-11-22T23:51:46 DUE TO TIME LIMIT ***
        """)  # as qgis_process leaves it: its progress bar had not ended the line
    reason = slurm.failure(job, 0, "S2A_MSIL1C_one", slurm.TaskState("TIMEOUT", "0:15", "TimeLimit"))
    assert reason == (f"SLURM task 0 of job 14 was killed by the scheduler (time limit, TIMEOUT: *** JOB 14 ON vm "
                      f"CANCELLED AT 2026-11-22T23:51:46 DUE TO TIME LIMIT ***) (log: {job.log_of(0)}).")


def test_a_memory_kill_is_recognised_from_slurmstepd_even_when_the_state_says_failed(tmp_path):
    job = job_of(tmp_path)
    job.job_id = "13"
    task_log(job, 1, """\
        slurmstepd-vm: error: StepId=13.batch exceeded memory limit (226492416 > 52428800), being killed
        slurmstepd-vm: error: Exceeded job memory limit
        slurmstepd-vm: error: *** JOB 13 ON vm CANCELLED AT 2026-11-22T23:50:16 ***
        slurmstepd-vm: error: Exceeded job memory limit
        """)
    reason = slurm.failure(job, 1, "S2B_MSIL1C_two", slurm.TaskState("FAILED", "0:9", "JobLaunchFailure"))
    assert reason.startswith("SLURM task 1 of job 13 was killed by the scheduler (memory limit: StepId=13.batch "
                             "exceeded memory limit (226492416 > 52428800), being killed / Exceeded job memory "
                             "limit / *** JOB 13 ON vm CANCELLED")


def test_slurm_26_kill_lines_are_recognised_too(tmp_path):
    """Slurm 25+ (Debian testing: 26.05) writes '[timestamp] error:' where older releases wrote 'slurmstepd-node:'."""
    job = job_of(tmp_path)
    job.job_id = "11"
    task_log(job, 0, """\
        0...10...20...30.[2026-12-03T23:22:15.008] error: StepId=11.batch exceeded memory limit \
(366628864 > 20971520), being killed
        [2026-12-03T23:22:15.013] error: *** JOB 11 ON vm CANCELLED AT 2026-12-03T23:22:15 DUE to SIGNAL Killed ***
        [2026-12-03T23:22:15.013] error: Exceeded job memory limit
        """)
    reason = slurm.failure(job, 0, "S2B_MSIL1C_two", slurm.TaskState("CANCELLED", "0:9"))
    assert reason.startswith("SLURM task 0 of job 11 was killed by the scheduler (memory limit, CANCELLED: "
                             "StepId=11.batch "
                             "exceeded memory limit (366628864 > 20971520), being killed / *** JOB 11")


def test_the_algorithms_own_reason_comes_first_then_the_last_lines(tmp_path):
    job = job_of(tmp_path)
    job.job_id = "9"
    task_log(job, 0, """\
        S2A_MSIL1C_one: FAILED: Sen2Cor exited with code 1 on S2A_MSIL1C_one; last log lines: boom.
        WARNING:\tS2A_MSIL1C_one: Sen2Cor exited with code 1 on S2A_MSIL1C_one; last log lines: boom.
        Sen2Cor failed on every product (1); first: ...
        """)
    assert slurm.failure(job, 0, "S2A_MSIL1C_one", slurm.TaskState("FAILED", "1:0")) == (
        f"Sen2Cor exited with code 1 on S2A_MSIL1C_one; last log lines: boom (SLURM task 0 of job 9, log: "
        f"{job.log_of(0)}).")
    task_log(job, 1, "Algorithm sentinel2:sen2cor not found!\n")
    assert slurm.failure(job, 1, "S2B_MSIL1C_two", slurm.TaskState("FAILED", "1:0")) == (
        f"SLURM task 1 of job 9 ended FAILED (exit code 1:0) without making it; last log lines: Algorithm "
        f"sentinel2:sen2cor not found! (log: {job.log_of(1)}).")


# ---------------------------------------------------------------------------------------------------------------
# The state file
# ---------------------------------------------------------------------------------------------------------------

def test_state_file_round_trip_other_algorithm_and_retire(tmp_path):
    job = job_of(tmp_path)
    job.job_id, job.submitted = "77", "2026-01-01T10:00:00"
    os.makedirs(job.output_folder)
    slurm.save_state(job)
    assert slurm.load_state(job.output_folder) == job
    with open(slurm.state_path(job.output_folder)) as handle:
        assert json.load(handle)["version"] == 1
    with pytest.raises(ParameterError, match="OUTPUT_FOLDER: .* holds SLURM job 77 of sentinel2:sen2cor; run "
                                             "sentinel2:sen2cor to collect it"):
        slurm.resume(job.output_folder, "maja")
    slurm.retire(job)
    assert slurm.load_state(job.output_folder) is None
    assert os.path.isfile(os.path.join(job.output_folder, "slurm-77.json"))
    assert slurm.resume(job.output_folder, "sen2cor") is None


def test_an_unreadable_state_file_is_one_sentence(tmp_path):
    with open(tmp_path / slurm.STATE_FILE, "w") as handle:
        handle.write("{not json")
    with pytest.raises(S2Error, match=r"slurm-job.json cannot be read .*; remove it to submit a new job\."):
        slurm.load_state(str(tmp_path))


def test_indices():
    assert slurm.indices("4") == [4] and slurm.indices("[4-6,9%2]") == [4, 5, 6, 9] and slurm.indices("") == []

"""Sen2Cor and MAJA on a SLURM cluster: one job array whose tasks each run the same algorithm headless.

A task runs ``qgis_process.bin run sentinel2:sen2cor -- ... PRODUCT_FILTER=<one product> EXECUTOR=local`` (MAJA:
``TILE=<one tile>``, since a tile's time series is sequential), so it does exactly what a local run does: the same
checks, staging folders, per-product logs and skips. The cluster's own scheduler does the queueing, so nothing here
re-implements one; this module writes the array script, submits it, follows it and collects what the tasks made.

``SLURM_OPTIONS`` is text of sbatch options, written as on the sbatch command line, one or several per line
(``--partition=short --time=02:00:00``, ``-A project``); lines may keep their ``#SBATCH`` prefix (pasted from an
existing batch script) and other lines starting with ``#`` are comments. The plugin writes ``--job-name`` and
``--mem`` (4096M per Sen2Cor task, the seeds' figure; the MAJA user configuration's RAM per MAJA task) unless the
options set them, and owns ``--array``, ``--output``/``--error`` (``slurm-%A_%a.out`` in the output folder: the
collection reads them) and ``--chdir`` (the output folder).

Following a job: ``squeue`` lists the tasks still queued or running (every cluster has it); how each finished task
ended comes from ``sacct`` when accounting is on, else from ``scontrol`` while the controller remembers the job
(MinJobAge, 5 minutes by default), else from the files alone: the products in the output folder and the tasks' logs,
where ``slurmstepd`` writes its own message when it kills a task (time limit, memory limit, cancel).

``WAIT=false`` returns after the submission; the job is remembered in ``slurm-job.json`` in the output folder, and
the next call with the same output folder collects it (waiting for it first with ``WAIT=true``).
"""

import dataclasses
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

from . import maja, safe
from .callbacks import check_cancelled, never_cancelled, no_progress
from .errors import Cancelled, ParameterError, S2Error
from .files import product_stem

EXECUTORS = ("local", "slurm")
STATE_FILE = "slurm-job.json"
LOG_PATTERN = "slurm-%A_%a.out"  # %A: the array's job id, %a: the task index
SEN2COR_MEMORY_MB = 4096  # the seeds' figure for one Sen2Cor process
BIOPHYSICAL_MEMORY_MB = 2048  # one product at a time, strips of about 60 MB (make bench: peak well under 1 GB)
MAJA_DEFAULT_RAM_MB = 8096  # MAJA's own default RAM budget, when no user configuration says otherwise
CAPTURED = ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_PLUGINPATH", "PYTHONPATH", "QGIS_AUTH_PASSWORD_FILE")
COMMAND_TIMEOUT = 60  # a busy controller may take tens of seconds to answer
POLL_FIRST, POLL_MAX, POLL_GROWTH = 1.0, 30.0, 1.5  # squeue often at first, then rarely: admins watch RPC load
CANCEL_CHECK = 0.2
CANCEL_WAIT = 60.0  # KillWait is 30 s by default: the tasks are gone well within this
QUERY_FAILURES = 20  # consecutive squeue failures (about 10 minutes with back-off) before giving up waiting
TAIL_LINES = 40

OWNED = {"-a": "--array", "--array": "--array", "-o": "--output", "--output": "--output", "-e": "--error",
         "--error": "--error", "-D": "--chdir", "--chdir": "--chdir", "--wrap": "--wrap", "-W": "--wait",
         "--wait": "--wait", "--test-only": "--test-only"}
MEMORY_OPTIONS = ("--mem", "--mem-per-cpu", "--mem-per-gpu")  # sbatch refuses two of them together
NAME_OPTIONS = ("-J", "--job-name")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE", "REVOKED"}
KILLED = {"TIMEOUT": "time limit", "OUT_OF_MEMORY": "memory limit", "CANCELLED": "cancelled", "NODE_FAIL":
          "node failure", "PREEMPTED": "preempted", "BOOT_FAIL": "node boot failure", "DEADLINE": "deadline"}
KILL_WORDS = (("TIME LIMIT", "time limit"), ("memory limit", "memory limit"), ("oom-kill", "memory limit"),
              ("Out Of Memory", "memory limit"), ("PREEMPTION", "preempted"), ("NODE FAILURE", "node failure"),
              ("CANCELLED", "cancelled"))
# anywhere in a line: the task's own output may not have ended its line ("0...10...20.slurmstepd-node: ...").
# Slurm up to 24.x prefixes "slurmstepd-<node>: error:", Slurm 25+ "[2026-12-03T23:22:15.013] error:".
_STEPD = re.compile(r"(?:slurmstepd(?:-[^:\s]*)?:\s*(?:error:\s*)?|\[\d{4}-\d\d-\d\dT[\d:.]+\] error:\s*)(.*)$")
_ERROR_WORDS = re.compile(r"error|critical|exception|failed|fatal|killed|traceback|not found", re.IGNORECASE)


def _callbacks(progress, is_cancelled, log):
    return progress or no_progress, is_cancelled or never_cancelled, log or (lambda message: None)


# ---------------------------------------------------------------------------------------------------------------
# What to submit
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Task:
    value: str  # the per-task parameter's value: one product name (Sen2Cor) or one tile (MAJA)
    expect: list  # what the task makes: [{"name": L1C name}] (+ "tile", "date" for MAJA)


@dataclasses.dataclass
class ArrayJob:
    """One job array; saved as the state file after submission, so a later call can collect it."""

    kind: str  # "sen2cor" or "maja": the algorithm sentinel2:<kind>
    output_folder: str
    parameters: list  # [[name, value]] every task gets
    task_parameter: str  # PRODUCT_FILTER or TILE
    tasks: list  # Task
    memory_mb: int
    ready: list  # products already in the output folder (outputs, not tasks)
    job_id: str = None
    submitted: str = None
    script: str = None

    @property
    def algorithm(self):
        return f"sentinel2:{self.kind}"

    def log_of(self, index):
        return os.path.join(self.output_folder, f"slurm-{self.job_id}_{index}.out")


@dataclasses.dataclass
class Outcome:
    job_id: str
    tasks: int
    finished: bool  # False: WAIT=false returned while tasks are queued or running
    products: list  # product folders, those already there included
    failed: dict  # L1C name -> one sentence


def sen2cor_array(plan):
    """The array for a Sen2Cor :class:`~.sen2cor.Plan`: one task per product still to do."""
    options = plan.options
    parameters = [("INPUT_FOLDER", os.path.abspath(plan.input_folder)), ("RESOLUTION", options.resolution),
                  ("DEM_FOLDER", _absolute(options.dem_folder)), ("EXECUTABLE", plan.installation.executable),
                  ("GIPP", _absolute(options.gipp)), ("PROCESSING_BASELINE", options.processing_baseline),
                  ("TIMEOUT", f"{options.timeout / 60:g}" if options.timeout else None), ("PARALLEL", "1"),
                  ("OUTPUT_FOLDER", os.path.abspath(plan.output_folder)), ("EXECUTOR", "local")]
    tasks = [Task(product_stem(path), [{"name": product_stem(path)}]) for path in plan.todo]
    return ArrayJob("sen2cor", os.path.abspath(plan.output_folder), _given(parameters), "PRODUCT_FILTER", tasks,
                    SEN2COR_MEMORY_MB, list(plan.skipped.values()))


def maja_array(plans, dtm_folder, gipp_folder):
    """The array for MAJA :class:`~.maja.LocalPlan` objects of one period: one task per tile with dates to do.
    ``dtm_folder`` and ``gipp_folder`` are the parameters as given (a user configuration may sit in either)."""
    first = plans[0]
    request = first.request
    parameters = [("MODE", "local"), ("START", request.start.isoformat()), ("END", request.end.isoformat()),
                  ("RELATIVE_ORBIT", str(request.relative_orbit or 0)),
                  ("INPUT_FOLDER", os.path.abspath(first.input_folder)), ("DTM_FOLDER", _absolute(dtm_folder)),
                  ("GIPP_FOLDER", _absolute(gipp_folder)), ("EXECUTABLE", first.executable),
                  ("OUTPUT_FOLDER", os.path.abspath(first.output_folder)), ("EXECUTOR", "local")]
    tasks, ready = [], []
    for plan in plans:
        todo = [p for p in plan.products if p.date not in plan.existing]
        ready += [plan.existing[p.date].path for p in plan.products if p.date in plan.existing]
        if todo:
            expect = [{"name": p.name, "tile": plan.request.tile, "date": p.date.isoformat()} for p in todo]
            tasks.append(Task(plan.request.tile, expect))
    memory = max(userconf_ram_mb(plan.userconf) for plan in plans)
    return ArrayJob("maja", os.path.abspath(first.output_folder), _given(parameters), "TILE", tasks, memory, ready)


def biophysical_array(work):
    """The array for a biophysical :class:`~.biophysical.Plan`: one task per product still to do (local output
    folders only: the tasks' logs and the job's state live there)."""
    from . import biophysical

    area = work.area_file
    parameters = [("INPUT_FOLDER", os.path.abspath(work.input_folder)), ("RESOLUTION", str(work.resolution)),
                  ("AOI", area), ("PARALLEL", "1"), ("OUTPUT_FOLDER", work.output.folder), ("EXECUTOR", "local")]
    given = _given(parameters) + [["VARIABLES", variable] for variable in work.variables]
    tasks = []
    for path in work.todo:
        name = product_stem(path)
        tasks.append(Task(name, [{"name": name, "outputs": biophysical.output_names(name, work.variables,
                                                                                    work.resolution)}]))
    ready = [location for locations in work.skipped.values() for location in locations]
    return ArrayJob("biophysical", work.output.folder, given, "PRODUCT_FILTER", tasks, BIOPHYSICAL_MEMORY_MB,
                    ready)


def userconf_ram_mb(userconf):
    """``Computing/RAM`` (MB) of a MAJA user configuration folder; MAJA's default when there is none or it says
    nothing usable (the plugin then writes one on the node)."""
    path = os.path.join(userconf or "", "MAJAUserConfigSystem.xml")
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return MAJA_DEFAULT_RAM_MB
    element = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "RAM"), None)
    text = (element.text or "").strip() if element is not None else ""
    return int(text) if text.isdigit() and int(text) > 0 else MAJA_DEFAULT_RAM_MB


def _given(parameters):
    return [[name, str(value)] for name, value in parameters if value not in (None, "")]


def _absolute(path):
    return os.path.abspath(path) if path else None


# ---------------------------------------------------------------------------------------------------------------
# SLURM_OPTIONS
# ---------------------------------------------------------------------------------------------------------------

def parse_options(text):
    """SLURM_OPTIONS as a list of options, each a list of tokens (``["-p", "short"]``, ``["--time=2:00:00"]``);
    a :class:`ParameterError` naming SLURM_OPTIONS for text that is not sbatch options or sets what the plugin
    owns."""
    options = []
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("#SBATCH"):
            line = line[len("#SBATCH"):]
        elif line.startswith("#"):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError as error:
            raise ParameterError("SLURM_OPTIONS", f"cannot read '{line}' ({error}).") from None
        for token in tokens:
            if token.startswith("-"):
                options.append([token])
            elif options and len(options[-1]) == 1 and "=" not in options[-1][0]:
                options[-1].append(token)  # the value of "-p short" or "--account proj"
            else:
                raise ParameterError("SLURM_OPTIONS", f"'{token}' is not an sbatch option (write options such "
                                                      f"as --partition=short --time=02:00:00).")
    for option in options:
        _refuse_owned(option)
    return options


def _refuse_owned(option):
    name = _option_name(option)
    if name in OWNED:
        label = name if OWNED[name] == name else f"{name} ({OWNED[name]})"
        raise ParameterError("SLURM_OPTIONS", f"{label} is set by the plugin, which submits one task per product "
                                              f"or tile with its log slurm-%A_%a.out in the output folder (the "
                                              f"working folder); leave it out.")


def _option_name(option):
    first = option[0]
    return first.split("=", 1)[0] if first.startswith("--") else first[:2]


def _sets(options, names):
    return any(_option_name(option) in names for option in options)


# ---------------------------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------------------------

def find_qgis_process(environ=None, search=()):
    """``qgis_process.bin`` (Debian's ``qgis_process`` wrapper is broken on 3.22) or ``qgis_process``: $QGIS_PROCESS,
    then PATH, then the folders in ``search`` (QGIS's own bin folder)."""
    environ = os.environ if environ is None else environ
    if environ.get("QGIS_PROCESS"):
        return environ["QGIS_PROCESS"]
    for name in ("qgis_process.bin", "qgis_process"):
        for path in [environ.get("PATH", "")] + [os.pathsep.join(search)]:
            found = shutil.which(name, path=path) if path else None
            if found:
                return os.path.abspath(found)
    raise S2Error("EXECUTOR=slurm: qgis_process (QGIS's command-line runner, which every array task runs) was not "
                  "found on PATH or next to QGIS; install QGIS's command-line tools or set QGIS_PROCESS to its "
                  "path.")


def task_environment(environ=None):
    """The variables the tasks need from the submitting process: the profile with the plugin enabled, the plugin
    path, the Python path (a venv's packages), the authentication database's password file."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in CAPTURED if environ.get(name)}


def script_text(job, options, qgis_process, environ=None, now=None):
    """The batch script: #SBATCH lines (the plugin's defaults, then SLURM_OPTIONS), the captured environment, and
    one qgis_process call whose per-task parameter comes from the task index."""
    lines = _header(job, options, now) + _environment(environ) + _call(job, qgis_process)
    return "\n".join(lines) + "\n"


def _header(job, options, now):
    stamp = (now or dt.datetime.now()).isoformat(timespec="seconds")
    unit = "tile" if job.kind == "maja" else "product"
    return ["#!/bin/bash"] + [f"#SBATCH {line}" for line in _directives(job, options)] + [
        "#", f"# Written by the Sentinel-2 Pipeline QGIS plugin ({job.algorithm} with EXECUTOR=slurm) on {stamp}.",
        f"# One task per {unit}: each runs {job.algorithm} headless with {job.task_parameter}=<its value> and "
        f"EXECUTOR=local, as a local run would.",
        f"# Submit again by hand with: sbatch --chdir={shlex.quote(job.output_folder)} <this script>", "set -u"]


def _environment(environ):
    lines = ["# The submitting QGIS's environment, also for clusters that start jobs with --export=NONE."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(task_environment(environ).items())]
    return lines + ["export QT_QPA_PLATFORM=offscreen  # compute nodes have no display",
                    'export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/s2-qgis-runtime-${SLURM_JOB_ID}"  # Qt wants its own',
                    'mkdir -p -m 700 "$XDG_RUNTIME_DIR"']


def _call(job, qgis_process):
    lines = ["", "VALUES=("] + [f"    {shlex.quote(task.value)}" for task in job.tasks] + [")"]
    lines += ['value=${VALUES[$SLURM_ARRAY_TASK_ID]}',
              f'echo "{job.algorithm}: task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID, '
              f'{job.task_parameter}=$value, on $(hostname) at $(date -Is)"']
    call = [f"{shlex.quote(qgis_process)} run {job.algorithm} --"]
    call += [shlex.quote(f"{name}={value}") for name, value in job.parameters] + [f'"{job.task_parameter}=$value"']
    # the exit code is the task's state (FAILED when every product failed, as a local run's)
    return lines + [" \\\n    ".join(call), "code=$?", 'rm -rf "$XDG_RUNTIME_DIR"',
                    'echo "qgis_process exited with code $code"', "exit $code"]


def _directives(job, options):
    directives = [f"--array=0-{len(job.tasks) - 1}", f"--output={LOG_PATTERN}"]
    if not _sets(options, NAME_OPTIONS):
        directives.append(f"--job-name=s2-{job.kind}")
    if not _sets(options, MEMORY_OPTIONS):
        directives.append(f"--mem={job.memory_mb}M")
    return directives + [" ".join(shlex.quote(token) for token in option) for option in options]


# ---------------------------------------------------------------------------------------------------------------
# Submitting, following, collecting
# ---------------------------------------------------------------------------------------------------------------

def run(job, options=(), wait=True, progress=None, is_cancelled=None, log=None, environ=None, search=()):
    """Submit ``job`` with the parsed SLURM_OPTIONS ``options`` and, with ``wait``, follow it to the end; an
    :class:`Outcome`. Nothing to do (every product already there) submits nothing."""
    progress, is_cancelled, log = _callbacks(progress, is_cancelled, log)
    if not job.tasks:
        log("Nothing to submit: every product is already in the output folder.")
        return Outcome("", 0, True, list(job.ready), {})
    check_cancelled(is_cancelled)
    submit(job, options, environ, search, log)
    return follow(job, wait, progress, is_cancelled, log, environ)


def submit(job, options=(), environ=None, search=(), log=None):
    """Write the script into the output folder, submit it with ``sbatch --parsable`` and save the state file."""
    log = log or (lambda message: None)
    environ = dict(os.environ if environ is None else environ)
    qgis_process = find_qgis_process(environ, search)
    sbatch = _require("sbatch", environ)
    os.makedirs(job.output_folder, exist_ok=True)
    job.script = os.path.join(job.output_folder, f"slurm-{job.kind}.sh")
    _write(job.script, script_text(job, options, qgis_process, environ))
    code, out, err = _command([sbatch, "--parsable", f"--chdir={job.output_folder}", job.script], environ)
    if code != 0 or not out.strip().split(";")[0].isdigit():
        raise S2Error(f"SLURM refused the job array of {len(job.tasks)} task(s): {_scheduler_words(err or out)}"
                      f"{_array_hint(job, err)} (script: {job.script}).")
    job.job_id = out.strip().split(";")[0]
    job.submitted = dt.datetime.now().isoformat(timespec="seconds")
    save_state(job)
    if err.strip():  # warnings of an accepted job (e.g. a time limit lowered to the partition's)
        log(f"sbatch: {_scheduler_words(err)}")
    log(f"SLURM job {job.job_id} submitted: {len(job.tasks)} task(s) of {job.algorithm} (script {job.script}; "
        f"task logs {os.path.join(job.output_folder, f'slurm-{job.job_id}_<task>.out')}).")
    return job


def resume(output_folder, kind, wait=True, progress=None, is_cancelled=None, log=None, environ=None):
    """Collect the job remembered in ``output_folder`` (waiting for it with ``wait``); None when there is none."""
    progress, is_cancelled, log = _callbacks(progress, is_cancelled, log)
    job = load_state(output_folder)
    if job is None:
        return None
    if job.kind != kind:
        raise ParameterError("OUTPUT_FOLDER", f"{output_folder} holds SLURM job {job.job_id} of {job.algorithm}; "
                                              f"run {job.algorithm} to collect it, or choose another folder.")
    log(f"Collecting SLURM job {job.job_id} submitted on {job.submitted} ({len(job.tasks)} task(s)) from "
        f"{os.path.join(output_folder, STATE_FILE)}; this call's other parameters are not used.")
    return follow(job, wait, progress, is_cancelled, log, environ)


def follow(job, wait=True, progress=None, is_cancelled=None, log=None, environ=None):
    """Wait for the job (with ``wait``; a cancel runs scancel) and collect it; the state file is retired once
    every task has finished."""
    progress, is_cancelled, log = _callbacks(progress, is_cancelled, log)
    environ = dict(os.environ if environ is None else environ)
    if wait:
        _wait(job, progress, is_cancelled, log, environ)
    active, _ = active_tasks(job.job_id, environ)
    if active is None:  # the queue did not answer: nothing is known to have finished
        active = dict.fromkeys(range(len(job.tasks)), "UNKNOWN")
    outcome = collect(job, active, environ)
    if outcome.finished:
        retire(job)
        log(f"SLURM job {job.job_id}: {len(outcome.products)} product(s), {len(outcome.failed)} failed.")
    else:
        log(f"SLURM job {job.job_id}: {len(job.tasks) - len(active)} of {len(job.tasks)} task(s) finished; run "
            f"{job.algorithm} again with the same OUTPUT_FOLDER to collect it.")
    return outcome


def _wait(job, progress, is_cancelled, log, environ):
    interval, failures, said = POLL_FIRST, 0, [None]
    while True:
        active, problem = active_tasks(job.job_id, environ)
        failures = 0 if active is not None else failures + 1
        if active is not None:
            _report(job, active, progress, said)
            if not active:
                return
        elif failures >= QUERY_FAILURES:
            raise S2Error(f"squeue failed {failures} times in a row ({problem}); SLURM job {job.job_id} may still "
                          f"run: run {job.algorithm} again with the same OUTPUT_FOLDER to collect it.")
        if _pause(interval, is_cancelled):
            cancel(job, log, environ)
            raise Cancelled()
        interval = min(POLL_MAX, interval * POLL_GROWTH)


def _report(job, active, progress, said):
    total = len(job.tasks)
    running = sum(1 for state in active.values() if state == "RUNNING")
    message = (f"SLURM job {job.job_id}: {total - len(active)} of {total} task(s) finished, {running} running, "
               f"{len(active) - running} waiting")
    message, said[0] = ("" if message == said[0] else message), message
    progress((total - len(active)) / max(1, total), message)


def _pause(seconds, is_cancelled):
    """Sleep ``seconds`` while watching the cancel button; True when it was pressed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if is_cancelled():
            return True
        time.sleep(min(CANCEL_CHECK, max(0.0, deadline - time.monotonic())))
    return is_cancelled()


def cancel(job, log=None, environ=None):
    """``scancel`` the array and wait until its tasks have left the queue; the state file is retired."""
    log = log or (lambda message: None)
    environ = dict(os.environ if environ is None else environ)
    code, _, err = _command([_require("scancel", environ), job.job_id], environ)
    deadline = time.monotonic() + CANCEL_WAIT
    while time.monotonic() < deadline:
        active, _ = active_tasks(job.job_id, environ)
        if active == {}:
            break
        time.sleep(0.5)
    retire(job)
    log(f"SLURM job {job.job_id} cancelled with scancel" + (f" ({_scheduler_words(err)})." if code else "."))


def collect(job, active, environ=None):
    """The :class:`Outcome` from the output folder: the products the tasks made, and for every finished task's
    missing product a sentence (the algorithm's own reason from the task's log, or the scheduler's)."""
    details = task_details(job.job_id, environ) if len(active) < len(job.tasks) else {}
    made, failed = [], {}
    for index, task in enumerate(job.tasks):
        for item in task.expect:
            found = _found(job, item)
            if found:
                made.append(found)
            elif index not in active:
                failed[item["name"]] = failure(job, index, item["name"], details.get(index))
    if job.kind == "biophysical":  # each product made a list of files
        made = [path for paths in made for path in paths]
    products = made + list(job.ready) if job.kind != "maja" else _by_tile_and_date(made + list(job.ready))
    return Outcome(job.job_id, len(job.tasks), not active, products, failed)


def _found(job, item):
    if job.kind == "sen2cor":
        return safe.find_l2a_for(item["name"], job.output_folder)
    if job.kind == "biophysical":
        paths = [os.path.join(job.output_folder, name) for name in item["outputs"]]
        return paths if all(os.path.isfile(p) for p in paths) else None
    day = dt.date.fromisoformat(item["date"])
    return next((p.path for p in maja.find_l2(job.output_folder, item["tile"]) if p.date == day), None)


def _by_tile_and_date(paths):
    products = [maja.l2_product(path) for path in paths]
    return [p.path for p in sorted((p for p in products if p), key=lambda p: (p.tile, p.date, p.name))]


# ---------------------------------------------------------------------------------------------------------------
# Why a task made nothing
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TaskState:
    state: str  # COMPLETED, FAILED, TIMEOUT, ...
    exit_code: str = ""  # "1:0" (code:signal)
    reason: str = ""


def failure(job, index, name, detail=None):
    """One sentence: the scheduler's kill (with slurmstepd's message), else the algorithm's reason for ``name`` as
    the task logged it, else how the task ended with its last log lines."""
    log_path = job.log_of(index)
    lines = tail(log_path)
    where = f"SLURM task {index} of job {job.job_id}"
    killed = scheduler_kill(detail, lines)
    if killed:
        return f"{where} was killed by the scheduler ({killed}) (log: {log_path})."
    own = own_reason(lines, name)
    if own:
        return f"{own.rstrip('.')} ({where}, log: {log_path})."
    ended = f"ended {detail.state} (exit code {detail.exit_code})" if detail else "ended"
    return f"{where} {ended} without making it; {_last_words(lines)} (log: {log_path})."


def scheduler_kill(detail, lines):
    """'time limit, TIMEOUT: *** JOB 14 ON node CANCELLED AT ... DUE TO TIME LIMIT ***' when the scheduler killed
    the task (from its state, or from slurmstepd's lines in the log); None otherwise."""
    messages = list(dict.fromkeys(m.group(1).strip() for m in map(_STEPD.search, lines) if m and m.group(1).strip()))
    state = detail.state if detail else ""
    said = next((words for key, words in KILL_WORDS if any(key in m for m in messages)), None)
    # A memory kill can end CANCELLED (Slurm 26): slurmstepd's words name the cause better than that state.
    why = (KILLED.get(state) if state != "CANCELLED" else None) or said or KILLED.get(state)
    if not why:
        return None
    label = f"{why}, {state}" if state and state != "FAILED" else why
    text = " / ".join(messages[:3])
    return f"{label}: {text}" if text else label


def own_reason(lines, name):
    """The reason the algorithm gave for ``name`` in the task's log (qgis_process prints the FAILED line as
    ``WARNING:<tab>name: ...``, a failure of the whole run as ``ERROR:<tab>...``; the engine's ``name: FAILED: ...``
    line otherwise), or None."""
    pattern = re.compile(rf"^((?:ERROR|WARNING):\s*)?{re.escape(name)}(\.SAFE)?: (?:FAILED: )?(.+)$")
    matches = [m for m in map(pattern.match, lines) if m]
    best = [m for m in matches if m.group(1)] or matches
    return best[-1].group(3).strip() if best else None


def _last_words(lines):
    errors = [line for line in lines if _ERROR_WORDS.search(line)]
    text = " / ".join((errors or lines)[-3:])
    text = "..." + text[-400:] if len(text) > 400 else text
    return f"last log lines: {text}" if text else "its log is empty or missing"


def tail(path, count=TAIL_LINES):
    """The last ``count`` non-empty lines of a file (its last 64 KB), [] when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 65536))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()][-count:]


# ---------------------------------------------------------------------------------------------------------------
# Asking the scheduler
# ---------------------------------------------------------------------------------------------------------------

def active_tasks(job_id, environ=None):
    """({task index: state} of the tasks still queued or running, None) — {} once the job has left the queue — or
    (None, squeue's message) when squeue did not answer."""
    environ = os.environ if environ is None else environ
    code, out, err = _command([_require("squeue", environ), "-h", "-r", "-j", str(job_id), "-o", "%K|%T|%r"],
                              environ)
    if code == 0:
        return parse_squeue(out), None
    if "Invalid job id" in err:  # long gone: the controller forgot it
        return {}, None
    return None, _scheduler_words(err) or f"exit code {code}"


def task_details(job_id, environ=None):
    """{task index: :class:`TaskState`} from sacct (accounting on), else scontrol (the controller still remembers
    the job), else {}."""
    environ = os.environ if environ is None else environ
    code, out, _ = _command(["sacct", "-n", "-P", "-X", "-j", str(job_id), "--format=JobID,State,ExitCode,Reason"],
                            environ)
    found = parse_sacct(out, job_id) if code == 0 else {}
    if found:
        return found
    code, out, _ = _command(["scontrol", "show", "job", str(job_id), "-o"], environ)
    return parse_scontrol(out) if code == 0 else {}


def parse_squeue(text):
    """``squeue -h -r -o '%K|%T|%r'`` lines -> {task index: state}."""
    active = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1] not in TERMINAL:
            active[int(parts[0])] = parts[1]
    return active


def parse_sacct(text, job_id):
    """``sacct -n -P -X --format=JobID,State,ExitCode,Reason`` lines -> {task index: TaskState}; a pending range
    ``123_[4-9%2]`` gives one entry per index."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0].startswith(f"{job_id}_") or "." in parts[0]:
            continue
        state = TaskState(parts[1].split()[0] if parts[1] else "", parts[2], parts[3] if len(parts) > 3 else "")
        for index in indices(parts[0][len(f"{job_id}_"):]):
            found[index] = state
    return found


def parse_scontrol(text):
    """``scontrol show job ID -o`` lines (one per task; pending tasks grouped) -> {task index: TaskState}."""
    found = {}
    for line in text.splitlines():
        fields = {key: re.search(rf"(?:^|\s){key}=(\S*)", line) for key in ("ArrayTaskId", "JobState", "ExitCode",
                                                                            "Reason")}
        if not fields["ArrayTaskId"] or not fields["JobState"]:
            continue
        values = {key: match.group(1) if match else "" for key, match in fields.items()}
        state = TaskState(values["JobState"], values["ExitCode"], values["Reason"])
        for index in indices(values["ArrayTaskId"]):
            found[index] = state
    return found


def indices(spec):
    """'4' -> [4]; '[4-6,9%2]' or '4-6,9' -> [4, 5, 6, 9] (the '%' throttle is dropped)."""
    spec = spec.strip("[]").split("%", 1)[0]
    result = []
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            result += list(range(int(first), int(last or first) + 1))
    return result


def _require(command, environ):
    path = shutil.which(command, path=environ.get("PATH", os.defpath))
    if not path:
        raise S2Error(f"EXECUTOR=slurm needs SLURM's {command}, which is not on this machine's PATH: run QGIS or "
                      f"qgis_process on a login node of the cluster (or load SLURM's module first), or use "
                      f"EXECUTOR=local.")
    return path


def _command(command, environ, timeout=COMMAND_TIMEOUT):
    """(exit code, stdout, stderr); 127 when the command is not installed, 124 when it did not answer in time."""
    try:
        completed = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   errors="replace", timeout=timeout, env=environ)
    except subprocess.TimeoutExpired:
        return 124, "", f"{os.path.basename(command[0])} did not answer within {timeout} s"
    except OSError as error:
        return 127, "", f"{os.path.basename(command[0])}: {error.strerror or error}"
    return completed.returncode, completed.stdout, completed.stderr


def _scheduler_words(text):
    """The scheduler's messages without their 'sbatch: error:' prefixes, joined into one line."""
    prefix = re.compile(r"^\s*\w+:\s*(error|fatal|warning):\s*")
    messages = [prefix.sub("", line).strip() for line in (text or "").splitlines()]
    return "; ".join(m for m in messages if m) or "no message"


def _array_hint(job, err):
    if "array" in (err or "").lower():
        return (f" (the cluster's MaxArraySize may be below {len(job.tasks)} tasks: split the products with "
                f"PRODUCT_FILTER)")
    return ""


# ---------------------------------------------------------------------------------------------------------------
# The state file
# ---------------------------------------------------------------------------------------------------------------

def state_path(output_folder):
    return os.path.join(output_folder, STATE_FILE)


def save_state(job):
    data = dataclasses.asdict(job)
    data["version"] = 1
    _write(state_path(job.output_folder), json.dumps(data, indent=1))


def load_state(output_folder):
    """The :class:`ArrayJob` remembered in ``output_folder``, None when there is none; an unreadable file is a
    sentence naming it."""
    path = state_path(output_folder)
    if not output_folder or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        data.pop("version", None)
        data["tasks"] = [Task(**task) for task in data["tasks"]]
        return ArrayJob(**data)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise S2Error(f"{path} cannot be read ({error}); remove it to submit a new job.") from None


def retire(job):
    """Keep the finished job's state as ``slurm-<id>.json``, so the next call submits anew."""
    path = state_path(job.output_folder)
    if os.path.isfile(path):
        os.replace(path, os.path.join(job.output_folder, f"slurm-{job.job_id}.json"))


def _write(path, text):
    partial = f"{path}.part"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)

"""Sen2Cor (``L2A_Process``): find the installation, write the run's GIPP, and turn every L1C product of a folder
into an L2A product, one Sen2Cor process per product, several at a time.

Facts this module relies on (reference/processors.md §1): the command line (``input_dir`` positional,
``--resolution``, ``--output_dir``, ``--GIP_L2A``, ``--processing_baseline``); exit code 0 is success but not proof
of it, so a run only counts when the L2A product is there and usable; progress lines
``Progress[%]: <float> : ...`` (2.x with a PID field, 3.x with a ``[INFO]`` prefix and sometimes two spaces);
the output is ``S2x_MSIL2A_<sensing>_N<baseline>_R<orbit>_T<tile>_<processing time>.SAFE`` in ``--output_dir``;
``L2A_GIPP.xml``'s ``Common_Section`` is an ``xs:sequence`` (order matters) that grew between versions.

Every run writes into a hidden staging folder inside the output folder, and the finished product is renamed
into place, so a crash (of Sen2Cor or of QGIS) never leaves a partial product under a final name. Each Sen2Cor
runs in its own process group, so cancelling or a timeout stops it and every process it started.
"""

import collections
import dataclasses
import datetime as dt
import fnmatch
import functools
import glob
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent import futures
from xml.parsers import expat
from xml.sax.saxutils import escape

from . import files, processes, safe
from .callbacks import never_cancelled, no_progress
from .errors import Cancelled, ParameterError, S2Error
from .footprints import parse_product_name

WINDOWS = sys.platform.startswith("win")
INSTALL_URL = "https://step.esa.int/main/snap-supported-plugins/sen2cor/"
RESOLUTIONS = ("10", "20", "60", "all")  # "all": no --resolution, Sen2Cor's own default
MEMORY_PER_RUN = 4 << 30  # the seeds' rule of thumb for one Sen2Cor process
MAX_THREADS = 8  # the GIPP's Nr_Threads allows AUTO or 1..8
POLL = 0.1
HELP_TIMEOUT = 120  # Sen2Cor imports numpy, GDAL, ... before argparse answers --help
ORPHAN_GRACE = 5.0  # a leader that exited while its children still hold stdout open
GIPP_ROOT = "Level-2A_Ground_Image_Processing_Parameter"
SRTM_URL = "http://srtm.csi.cgiar.org/wp-content/uploads/files/srtm_5x5/TIFF/"
PRISM_GLO90_URL = ("https://prism-dem-open.copernicus.eu/pd-desk-open-access/prismDownload/"
                   "COP-DEM_GLO-90-DGED__2021_1/")
STAGING_PREFIX = ".sen2cor-"  # hidden: safe.find_products and find_l2a_for never look inside
LOG_SUFFIX = ".sen2cor.log"
SETTING_KEY = "sentinel2_pipeline/sen2cor_executable"

PROGRESS_LINE = re.compile(r"^\s*(?:\[\w+\]\s*)?Progress\[%\]:\s*([0-9]+(?:\.[0-9]+)?)\s*:\s*(.*)$")
_VERSION = re.compile(r"Version:\s*v?(\d+(?:\.\d+){1,2})")
_VERSION_IN_NAME = re.compile(r"Sen2Cor[-_ ]?v?(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)
_BASELINE = re.compile(r"^(\d{1,2})\.(\d{2})$")
_STEP_NOISE = re.compile(r"^PID-\d+,\s*|,\s*elapsed time\[s\].*$")  # keep "L2A_AtmCorr: end of ..."
_ERROR_WORDS = re.compile(r"error|critical|exception|failed|fatal|killed|no such", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------------
# Finding Sen2Cor
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Installation:
    """A Sen2Cor installation: the executable, its version (None when neither its help nor its folder says),
    its ``--help`` text (which options it takes) and its own ``L2A_GIPP.xml`` (None when not found)."""

    executable: str
    version: tuple = None
    help_text: str = ""
    gipp: str = None

    @property
    def version_text(self):
        return ".".join(str(part) for part in self.version) if self.version else "of unknown version"

    def accepts(self, option):
        """Whether the command line takes ``option``; assumed when the help text could not be read."""
        return not self.help_text or option in self.help_text


def executable_name(platform=None):
    return "L2A_Process.bat" if (platform or sys.platform).startswith("win") else "L2A_Process"


def find_executable(executable=None, setting=None, environ=None, home=None, platform=None):
    """The Sen2Cor executable: ``executable`` (the EXECUTABLE parameter) → ``setting`` (the plugin setting) →
    ``L2A_Process`` on PATH → ``$SEN2COR_HOME/bin`` and ``$SEN2COR_BIN`` → the standard install folders,
    newest version first. A folder given explicitly may be the installation folder."""
    platform = platform or sys.platform
    if executable:
        return _given(executable, "EXECUTABLE", platform)
    if setting:
        return _given(setting, f"The Sen2Cor executable in the plugin settings ({SETTING_KEY})", platform)
    environ = os.environ if environ is None else environ
    home = home or os.path.expanduser("~")
    looked = []
    for place, candidates in _search_places(environ, home, platform):
        looked.append(place)
        found = next((c for c in candidates if _runnable(c, platform)), None)
        if found:
            return found
    raise S2Error(
        f"Sen2Cor (L2A_Process) was not found in EXECUTABLE, the plugin setting, {', '.join(looked)}: install it "
        f"from {INSTALL_URL} (on Linux run the Sen2Cor-02.xx.xx-Linux64.run installer in your home folder) and "
        f"give the path of its {executable_name(platform)} in EXECUTABLE.")


def _given(path, label, platform):
    """An executable named by the user (EXECUTABLE or the setting): it must be there, or the sentence says so."""
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        found = next((c for c in _in_install(path, platform) if _runnable(c, platform)), None)
        problem = None if found else f"is a folder without {executable_name(platform)}"
    else:
        found = path if _runnable(path, platform) else None
        problem = None if found else ("is not executable" if os.path.isfile(path) else "does not exist")
    if found:
        return found
    if label == "EXECUTABLE":
        raise ParameterError("EXECUTABLE", f"{path} {problem}.")
    raise S2Error(f"{label}: {path} {problem}.")


def _in_install(root, platform):
    name = executable_name(platform)
    return [os.path.join(root, "bin", name), os.path.join(root, name)]


def _runnable(path, platform):
    if not path or not os.path.isfile(path):
        return False
    return platform.startswith("win") or os.access(path, os.X_OK)


def _search_places(environ, home, platform):
    """(description, candidate paths) in search order; globs are expanded only when reached."""
    name = executable_name(platform)
    yield "PATH", [shutil.which(name, path=environ.get("PATH", "")) if environ.get("PATH") else None]
    if environ.get("SEN2COR_HOME"):
        yield "$SEN2COR_HOME/bin", _in_install(environ["SEN2COR_HOME"], platform)
    if environ.get("SEN2COR_BIN"):  # <install>/lib/python*/site-packages/sen2cor: the executable is up the tree
        parents = [os.path.join(environ["SEN2COR_BIN"], *[".."] * up) for up in range(1, 5)]
        yield "$SEN2COR_BIN", [os.path.normpath(p) for parent in parents for p in _in_install(parent, platform)]
    for pattern in _install_patterns(home, platform):
        yield pattern.replace(home, "~", 1), _newest_first(glob.glob(pattern))


def _install_patterns(home, platform):
    if platform.startswith("win"):
        return [os.path.join(home, "Sen2Cor-*", "L2A_Process.bat"),
                os.path.join(home, ".snap", "auxdata", "Sen2Cor-*", "L2A_Process.bat"),
                "C:\\Sen2Cor-*\\L2A_Process.bat"]
    patterns = [os.path.join(home, "Sen2Cor-*", "bin", "L2A_Process"),
                os.path.join(home, ".snap", "auxdata", "Sen2Cor-*", "bin", "L2A_Process")]
    if platform == "darwin":
        return patterns + ["/Applications/Sen2Cor-*/bin/L2A_Process"]
    # Docker images and HPC modules install under /opt (e.g. --target /opt/sen2cor/<version>) or at the root.
    return patterns + ["/opt/Sen2Cor-*/bin/L2A_Process", "/opt/sen2cor/*/bin/L2A_Process", "/Sen2Cor-*/bin/L2A_Process"]


def _newest_first(paths):
    return sorted(paths, key=lambda p: (parse_version(p) or (), p), reverse=True)


def parse_version(text):
    """(2, 8, 0) from a help text ("... Version: 2.8.0, created ...", "Sen2Cor. Version: 03.02.00, ...") or from
    an install folder name ("Sen2Cor-02.10.01-Linux64"); None when neither is there."""
    match = _VERSION.search(text or "") or _VERSION_IN_NAME.search(text or "")
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def locate(executable=None, setting=None, environ=None, home=None):
    """The :class:`Installation` to use (see :func:`find_executable`), with its version and own GIPP."""
    environ = os.environ if environ is None else environ
    path = os.path.abspath(find_executable(executable, setting, environ, home))
    help_text = help_of(path)
    version = parse_version(help_text) or parse_version(os.path.realpath(path))
    return Installation(path, version, help_text, find_install_gipp(path, version, environ, home))


def help_of(executable):
    """``L2A_Process --help`` output (cached per file version, Sen2Cor takes seconds to start)."""
    return _help_cached(executable, os.path.getmtime(executable))


@functools.lru_cache(maxsize=8)
def _help_cached(executable, _mtime):
    try:
        completed = subprocess.run([executable, "--help"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=HELP_TIMEOUT, env=child_environment(),
                                   **_session_options())
    except subprocess.TimeoutExpired as error:
        raise S2Error(f"EXECUTABLE: {executable} did not answer --help within {HELP_TIMEOUT} s.") from error
    except OSError as error:
        raise ParameterError("EXECUTABLE", f"{executable} cannot be run: {error.strerror or error}.") from error
    return completed.stdout.decode("utf-8", "replace")


def find_install_gipp(executable, version=None, environ=None, home=None):
    """The installation's own ``L2A_GIPP.xml``: in its package (``lib/python*/site-packages/sen2cor/cfg``), its
    ``cfg`` folder, ``$SEN2COR_BIN/cfg``, then the user copy of the same version (``~/sen2cor/<x.y>/cfg``) and
    ``$SEN2COR_HOME/cfg``. The user copy comes last: a new install leaves an older one in place (Sen2Cor FAQ)."""
    environ = os.environ if environ is None else environ
    home = home or os.path.expanduser("~")
    real = os.path.realpath(executable)
    folder = os.path.dirname(real)
    root = os.path.dirname(folder) if os.path.basename(folder) == "bin" else folder
    candidates = sorted(glob.glob(os.path.join(root, "lib", "python*", "site-packages", "sen2cor", "cfg",
                                               "L2A_GIPP.xml")), reverse=True)
    candidates += [os.path.join(root, "Lib", "site-packages", "sen2cor", "cfg", "L2A_GIPP.xml"),
                   os.path.join(root, "cfg", "L2A_GIPP.xml")]
    if environ.get("SEN2COR_BIN"):
        candidates.append(os.path.join(environ["SEN2COR_BIN"], "cfg", "L2A_GIPP.xml"))
    if version:
        candidates.append(os.path.join(home, "sen2cor", f"{version[0]}.{version[1]}", "cfg", "L2A_GIPP.xml"))
    if environ.get("SEN2COR_HOME"):
        candidates.append(os.path.join(environ["SEN2COR_HOME"], "cfg", "L2A_GIPP.xml"))
    return next((c for c in candidates if os.path.isfile(c)), None)


def child_environment(environ=None):
    """The environment for Sen2Cor: ours without PYTHONHOME/PYTHONPATH, which point at QGIS's Python and break
    the Python bundled with Sen2Cor (its launcher sets what it needs)."""
    environ = dict(os.environ if environ is None else environ)
    for name in ("PYTHONHOME", "PYTHONPATH"):
        environ.pop(name, None)
    return environ


# ---------------------------------------------------------------------------------------------------------------
# GIPP (L2A_GIPP.xml)
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Gipp:
    """A parsed GIPP: the file's bytes (patched in place, see :func:`patch_gipp`) and its element tree."""

    path: str
    data: bytes
    root: ET.Element
    encoding: str

    def find(self, name):
        """The first element with local name ``name`` (Common_Section first, then anywhere), or None."""
        common = next((e for e in self.root.iter() if _local(e.tag) == "Common_Section"), None)
        for scope in (common, self.root):
            found = next((e for e in scope.iter() if _local(e.tag) == name), None) if scope is not None else None
            if found is not None:
                return found
        return None

    def value(self, name):
        element = self.find(name)
        return None if element is None else (element.text or "").strip()


def read_gipp(path, parameter="GIPP"):
    """Parse an ``L2A_GIPP.xml``. A file that is missing, not XML or not an L2A GIPP raises
    :class:`ParameterError` naming ``parameter``."""
    if not path or not os.path.isfile(path):
        raise ParameterError(parameter, f"the GIPP file {path} does not exist.")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        root = ET.fromstring(data)
    except (ET.ParseError, OSError) as error:
        raise ParameterError(parameter, f"{path} is not a readable XML file ({error}).") from error
    if _local(root.tag) != GIPP_ROOT:
        raise ParameterError(parameter, f"{path} is not a Sen2Cor L2A_GIPP.xml: its root element is "
                                        f"{_local(root.tag)}, not {GIPP_ROOT}.")
    return Gipp(path, data, root, _declared_encoding(data))


def _declared_encoding(data):
    match = re.match(rb"<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']", data.lstrip(b"\xef\xbb\xbf"))
    return match.group(1).decode("ascii") if match else "utf-8"


def _local(tag):
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1] if isinstance(tag, str) else ""


def _text_spans(data, names):
    """{local name: (start, end, self-closing)}: byte span of the text of the first element with that name
    (Common_Section first), found with expat's byte offsets so the rest of the file can stay byte for byte."""
    parser = expat.ParserCreate()  # no namespace processing: names as written, prefixes included
    open_names, pending, spans = [], [], {}

    def settle(index, ending):
        # The first event after a start tag ends the element's leading text (or shows it was <name/>).
        if not pending:
            return
        local, start, text_start, in_common = pending.pop()
        closing = ending and data[index:index + 2] != b"</" and text_start is None
        span = (start, index, True) if closing else (text_start if text_start is not None else index, index, False)
        if local in names and (local not in spans or (in_common and not spans[local][1])):
            spans[local] = (span, in_common)

    def on_start(name, _attributes):
        settle(parser.CurrentByteIndex, False)
        local = name.rsplit(":", 1)[-1]
        pending.append((local, parser.CurrentByteIndex, None, "Common_Section" in open_names))
        open_names.append(local)

    def on_text(_text):
        if pending and pending[-1][2] is None:
            local, start, _, in_common = pending.pop()
            pending.append((local, start, parser.CurrentByteIndex, in_common))

    def on_end(_name):
        settle(parser.CurrentByteIndex, True)
        open_names.pop()

    parser.StartElementHandler, parser.EndElementHandler = on_start, on_end
    parser.CharacterDataHandler = on_text
    parser.CommentHandler = parser.ProcessingInstructionHandler = lambda *_: settle(parser.CurrentByteIndex, False)
    parser.Parse(data, True)
    return {name: span for name, (span, _) in spans.items()}


def gipp_changes(gipp, installation, dem_folder=None, threads=None):
    """{element: new text} for this run: Nr_Threads set explicitly (AUTO means the host's CPU count, even in a
    container or an HPC allocation), the TCI switched on (the run's layers need it), and the DEM folder with a
    DEM_Reference that suits its files and the Sen2Cor version. Nothing else is touched."""
    changes = {"Generate_TCI_Output": "TRUE"}
    if threads:
        changes["Nr_Threads"] = str(threads)
    if dem_folder:
        changes["DEM_Directory"] = os.path.abspath(dem_folder)
        changes["DEM_Reference"] = dem_reference(dem_folder, installation.version, gipp.value("DEM_Reference"))
    return changes


def dem_reference(dem_folder, version, current=None):
    """What DEM_Reference says for a DEM folder: the tiles it holds name the source. SRTM 5x5 tiles (and folders
    Sen2Cor is to fill itself) use the CGIAR URL, from which Sen2Cor fetches missing tiles; Copernicus DEM tiles
    use 'CDSE-GLO-30'/'CDSE-GLO-90' from 2.12 and the PRISM GLO-90 URL in 2.10/2.11 (2.11 SUM)."""
    names = os.listdir(dem_folder) if os.path.isdir(dem_folder) else []
    if any(fnmatch.fnmatch(n.lower(), "srtm_*") for n in names):
        return SRTM_URL
    copernicus = [n for n in names if n.startswith("Copernicus_DSM_")]
    if copernicus:
        if version and version >= (2, 12):
            return "CDSE-GLO-30" if any("_10_" in n for n in copernicus) else "CDSE-GLO-90"
        return PRISM_GLO90_URL
    if current and current.strip().upper() != "NONE":
        return current.strip()
    return SRTM_URL


def patch_gipp(source, target, changes, parameter="GIPP"):
    """Write ``source`` to ``target`` with the text of the named elements replaced (found by name anywhere, so
    unknown versions work). Only those texts change: order, comments, namespaces, unknown elements, the
    declaration and the layout stay byte for byte. Returns {name: (old, new)} of the elements found."""
    gipp = read_gipp(source, parameter)
    spans = _text_spans(gipp.data, set(changes))
    data, applied = gipp.data, {}
    for name, value in sorted(changes.items(), key=lambda item: spans.get(item[0], (-1,))[0], reverse=True):
        if name not in spans:
            continue
        (start, end, closing), text = spans[name], escape(value).encode(gipp.encoding, "xmlcharrefreplace")
        applied[name] = (gipp.value(name), value)
        if closing:  # <name/>: becomes <name>value</name>
            tag = data[start:end].rstrip(b"/> \t\r\n")
            data = data[:start] + tag + b">" + text + b"</" + tag[1:].split()[0] + b">" + data[end:]
        else:
            data = data[:start] + text + data[end:]
    temporary = f"{target}.part"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, target)
    return applied


# ---------------------------------------------------------------------------------------------------------------
# Planning a batch: every check before any work
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Options:
    resolution: str = "10"  # one of RESOLUTIONS
    dem_folder: str = None
    processing_baseline: str = None  # "99.99"
    gipp: str = None  # a user GIPP; None: the installation's own
    parallel: int = 0  # 0: automatic
    product_filter: str = None  # glob on product names
    timeout: float = None  # seconds per product; None or 0: no limit


@dataclasses.dataclass
class Plan:
    installation: Installation
    input_folder: str
    output_folder: str
    options: Options
    todo: list  # L1C .SAFE folders or zips to process
    skipped: dict  # L1C name -> the L2A already in the output folder
    gipp_source: str  # None: Sen2Cor's own default (no --GIP_L2A)
    gipp_changes: dict
    parallel: int
    threads: int
    notes: list = dataclasses.field(default_factory=list)

    def describe(self):
        gipp = self.gipp_source or "Sen2Cor's own default"
        resolution = "all resolutions" if self.options.resolution == "all" else f"{self.options.resolution} m"
        return (f"Sen2Cor {self.installation.version_text} ({self.installation.executable}): "
                f"{len(self.todo)} product(s) to process, {len(self.skipped)} already done; {self.parallel} at a "
                f"time with {self.threads} thread(s) each; {resolution}; GIPP from {gipp}.")


def plan(input_folder, output_folder, options=None, executable=None, setting=None, environ=None, home=None):
    """Check everything (folders, products, executable, GIPP, DEM, baseline) before any disk work; raises
    :class:`ParameterError` naming the parameter. Products whose L2A is already in ``output_folder`` are skipped."""
    options = options or Options()
    _check_options(options)
    l1c = _find_inputs(input_folder, options.product_filter)
    if output_folder and os.path.exists(output_folder) and not os.path.isdir(output_folder):
        raise ParameterError("OUTPUT_FOLDER", f"{output_folder} exists and is not a folder.")
    installation = locate(executable, setting, environ, home)
    if options.processing_baseline and not installation.accepts("--processing_baseline"):
        raise ParameterError("PROCESSING_BASELINE", f"Sen2Cor {installation.version_text} has no "
                                                    f"--processing_baseline option; leave it empty.")
    gipp_source = options.gipp or installation.gipp
    notes = []
    if gipp_source:
        gipp = read_gipp(gipp_source, "GIPP")
    elif options.dem_folder:
        raise ParameterError("GIPP", "the Sen2Cor installation has no L2A_GIPP.xml where it is usually found, so "
                                     "DEM_FOLDER cannot be set: give a GIPP file.")
    else:
        gipp = None
        notes.append("No L2A_GIPP.xml was found in the installation: Sen2Cor uses its own defaults "
                     "(Nr_Threads AUTO).")
    todo, skipped = _split_done(l1c, output_folder)
    parallel = options.parallel or automatic_parallel(len(todo))
    threads = max(1, min(MAX_THREADS, cpu_count() // max(1, parallel)))
    changes = gipp_changes(gipp, installation, options.dem_folder, threads) if gipp else {}
    notes += _missing_elements(gipp, changes)
    return Plan(installation, input_folder, output_folder, options, todo, skipped, gipp_source, changes,
                parallel, threads, notes)


def _check_options(options):
    if options.resolution not in RESOLUTIONS:
        raise ParameterError("RESOLUTION", f"{options.resolution} is not one of {', '.join(RESOLUTIONS)}.")
    if options.dem_folder and not os.path.isdir(options.dem_folder):
        raise ParameterError("DEM_FOLDER", f"the folder {options.dem_folder} does not exist.")
    if options.processing_baseline:
        match = _BASELINE.match(options.processing_baseline.strip())
        if not match:
            raise ParameterError("PROCESSING_BASELINE", f"'{options.processing_baseline}' is not a baseline "
                                                        f"like 99.99 or 05.10.")
        options.processing_baseline = f"{int(match.group(1)):02d}.{match.group(2)}"
    if options.parallel is not None and options.parallel < 0:
        raise ParameterError("PARALLEL", "give 0 (automatic) or a positive number of products at a time.")
    if options.timeout is not None and options.timeout < 0:
        raise ParameterError("TIMEOUT", "give 0 (no limit) or a positive number of minutes.")


def _find_inputs(folder, pattern):
    if not folder or not os.path.isdir(folder):
        raise ParameterError("INPUT_FOLDER", f"the folder {folder} does not exist.")
    everything = safe.find_products(folder, pattern)
    l1c = [p for p in everything if safe.is_l1c(p)]
    if l1c:
        return l1c
    where = f"{folder}" + (f" matching PRODUCT_FILTER '{pattern}'" if pattern else "")
    others = len(everything)
    if others:
        raise ParameterError("INPUT_FOLDER", f"the {others} product(s) in {where} are not Level-1C (Sen2Cor "
                                             f"turns Level-1C into Level-2A; Level-2A input is refused).")
    raise ParameterError("INPUT_FOLDER", f"no Level-1C product (S2x_MSIL1C_*.SAFE folder or zip) was found in "
                                         f"{where}.")


def _split_done(l1c, output_folder):
    """(products to run, {name: existing L2A}); the full check only for names that share a datatake."""
    if not output_folder or not os.path.isdir(output_folder):
        return list(l1c), {}
    keys = {datatake(p) for p in safe.find_products(output_folder, level="L2A")}
    todo, skipped = [], {}
    for path in l1c:
        existing = safe.find_l2a_for(os.path.basename(path), output_folder) if datatake(path) in keys else None
        if existing:
            skipped[files.product_stem(path)] = existing
        else:
            todo.append(path)
    return todo, skipped


def datatake(path):
    parsed = parse_product_name(os.path.basename(os.path.normpath(path)))
    return tuple(parsed.get(k) for k in ("platform", "sensing_start", "relative_orbit", "tile_id")) if parsed else None


def _missing_elements(gipp, changes):
    if gipp is None:
        return []
    missing = [name for name in changes if gipp.find(name) is None]
    if "DEM_Directory" in missing:
        raise ParameterError("GIPP", f"{gipp.path} has no DEM_Directory element, so DEM_FOLDER cannot be set.")
    return [f"The GIPP has no {name} element; Sen2Cor's default applies." for name in missing]


def cpu_count():
    """CPUs this process may use (the HPC allocation, not the whole node)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory():
    """Bytes of memory available now (the cgroup limit when lower, as under SLURM), or None when unknown."""
    available = _meminfo_available() or _sysconf_available()
    limit = _cgroup_available()
    known = [value for value in (available, limit) if value is not None]
    return min(known) if known else None


def _sysconf_available():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _meminfo_available():
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _cgroup_available():
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as a, open(usage_file, encoding="ascii") as b:
                limit, usage = a.read().strip(), int(b.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number: no limit
            return max(0, int(limit) - usage)
    return None


def automatic_parallel(products, cores=None, memory=None):
    """PARALLEL=0: min(cores, available memory / 4 GB, products), at least 1."""
    cores = cores or cpu_count()
    memory = available_memory() if memory is None else memory
    by_memory = memory // MEMORY_PER_RUN if memory else cores
    return max(1, min(cores, by_memory, products or 1))


# ---------------------------------------------------------------------------------------------------------------
# Running a batch
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BatchResult:
    products: list = dataclasses.field(default_factory=list)  # new L2A folders, in input order
    failed: dict = dataclasses.field(default_factory=dict)  # L1C name -> one-sentence reason
    skipped: dict = dataclasses.field(default_factory=dict)  # L1C name -> L2A already there
    logs: dict = dataclasses.field(default_factory=dict)  # L1C name -> log file
    timings: dict = dataclasses.field(default_factory=dict)  # L1C name -> (seconds in all, seconds in Sen2Cor)


class _Failed(Exception):
    """One product failed; the text is the reason sentence."""


class _Run:
    """One product's run; the worker thread writes it, the supervising thread reads and may stop it."""

    def __init__(self, source, output_folder):
        self.source = source
        self.name = files.product_stem(source)
        self.staging = os.path.join(output_folder, f"{STAGING_PREFIX}{self.name}")
        self.log_path = os.path.join(output_folder, f"{self.name}{LOG_SUFFIX}")
        self.lock = threading.Lock()
        self.process = None
        self.started = self.exited = None
        self.stop_reason = None  # "timeout" / "cancelled" / "orphans": why the supervisor stopped it
        self.stopped_at = None
        self.percent = 0.0
        self.message = ""
        self.last_lines = collections.deque(maxlen=40)
        self.finished = False

    def feed(self, line):
        match = PROGRESS_LINE.match(line)
        if match:
            self.percent = min(100.0, float(match.group(1)))
            self.message = _STEP_NOISE.sub("", match.group(2)).strip()
        elif line.strip():
            self.last_lines.append(line.strip())
        if match and "at least one error" in line:
            self.last_lines.append(line.strip())


def execute(plan, progress=None, is_cancelled=None, log=None):
    """Run Sen2Cor on every product of ``plan`` (``plan.parallel`` at a time) and return a :class:`BatchResult`.
    One product failing never stops the others; cancelling stops every Sen2Cor process group and raises
    :class:`Cancelled` (products finished before stay)."""
    progress, is_cancelled = progress or no_progress, is_cancelled or never_cancelled
    log = log or (lambda message: None)
    os.makedirs(plan.output_folder, exist_ok=True)
    result = BatchResult(skipped=dict(plan.skipped))
    runs = [_Run(source, plan.output_folder) for source in plan.todo]
    messages, cancel = queue.Queue(), threading.Event()
    with futures.ThreadPoolExecutor(max_workers=max(1, plan.parallel), thread_name_prefix="sen2cor") as pool:
        pending = {pool.submit(_worker, run, plan, cancel, messages.put): run for run in runs}
        outcomes = _supervise(plan, runs, pending, cancel, messages, progress, is_cancelled, log)
    for run in runs:
        result.logs[run.name] = run.log_path
        outcome = outcomes.get(run.name)
        if isinstance(outcome, tuple):
            result.products.append(outcome[0])
            result.timings[run.name] = outcome[1]
        elif outcome:
            result.failed[run.name] = outcome
    if cancel.is_set():
        raise Cancelled()
    progress(1.0, f"Sen2Cor: {len(result.products)} done, {len(result.failed)} failed, "
                  f"{len(result.skipped)} skipped")
    return result


def run(input_folder, output_folder, options=None, executable=None, setting=None, progress=None,
        is_cancelled=None, log=None):
    """:func:`plan` then :func:`execute`."""
    batch = plan(input_folder, output_folder, options, executable, setting)
    return execute(batch, progress, is_cancelled, log)


def _supervise(plan, runs, pending, cancel, messages, progress, is_cancelled, log):
    """Wait for the workers while reporting progress, passing messages on, enforcing timeouts and cancel.
    Everything that talks to the caller happens on this thread."""
    outcomes, said = {}, [None]
    while pending:
        done, _ = futures.wait(pending, timeout=POLL)
        for future in done:
            run = pending.pop(future)
            outcomes[run.name] = future.result()
            run.finished = True
        _drain(messages, log)
        if not cancel.is_set() and is_cancelled():
            cancel.set()
            stop_groups([r for r in runs if not r.finished], "cancelled")
        _enforce_limits(plan, runs)
        _report(runs, progress, said)
    _drain(messages, log)
    return outcomes


def _drain(messages, log):
    while True:
        try:
            log(messages.get_nowait())
        except queue.Empty:
            return


def _enforce_limits(plan, runs):
    now = time.monotonic()
    for run in runs:
        if run.finished or run.started is None or run.stop_reason:
            continue
        if plan.options.timeout and run.exited is None and now - run.started > plan.options.timeout:
            stop_groups([run], "timeout")
        elif run.exited is not None and now - run.exited > ORPHAN_GRACE:
            stop_groups([run], "orphans")  # children still hold the output pipe after Sen2Cor itself ended


def _report(runs, progress, said=None):
    """Overall fraction = (finished products + running ones' Sen2Cor percentages) / products; the text only
    when it changed (``said`` holds the last one), so logs do not repeat it ten times a second."""
    finished = sum(1 for r in runs if r.finished)
    running = [r for r in runs if not r.finished and r.started is not None]
    fraction = (finished + sum(r.percent / 100.0 for r in running)) / max(1, len(runs))
    latest = running[-1] if running else None
    detail = f"; {latest.name}: {latest.message}" if latest and latest.message else ""
    message = f"Sen2Cor: {finished} of {len(runs)} products finished{detail}"
    if said is not None:
        message, said[0] = ("" if message == said[0] else message), message
    progress(fraction, message)


def _worker(run, plan, cancel, say):
    """Process one product; returns (L2A path, (total s, Sen2Cor s)) or a failure sentence (never raises)."""
    began = time.monotonic()
    try:
        if cancel.is_set():
            return None
        files.remove(run.staging)  # a previous run that died: never reuse its half-written files
        os.makedirs(run.staging)
        l1c = _prepare_input(run, cancel, say)
        command = _command(plan, run, l1c)
        say(f"{run.name}: started")
        code = _execute(run, command, cancel)
        l2a = _collect(run, l1c, code, plan.options)
        final = _move_into_place(l2a, plan.output_folder)
        spent = time.monotonic() - began
        say(f"{run.name}: done in {spent:.0f} s -> {os.path.basename(final)}")
        return final, (spent, (run.exited or time.monotonic()) - (run.started or began))
    except Cancelled:
        return None
    except (_Failed, S2Error) as error:
        if cancel.is_set():
            return None  # a run stopped by the cancel is not a failure
        return _failed(run, str(error), say)
    except Exception as error:  # noqa: BLE001 (one product's surprise must not stop the batch)
        return _failed(run, f"{run.name} failed unexpectedly: {type(error).__name__}: {error}.", say)
    finally:
        files.remove(run.staging)


def _failed(run, reason, say):
    """Report and log a failure (also those before Sen2Cor ran: every product gets its log)."""
    say(f"{run.name}: FAILED: {reason}")
    try:
        with open(run.log_path, "a", encoding="utf-8") as log:
            log.write(f"=== {dt.datetime.now().isoformat(timespec='seconds')} FAILED: {reason}\n")
    except OSError:
        pass  # the reason still reaches the result
    return reason


def _prepare_input(run, cancel, say):
    """The L1C .SAFE to give Sen2Cor: zips are extracted into the staging folder; folders Sen2Cor needs and
    buckets drop (AUX_DATA, HTML, rep_info, ...) are recreated; a product that is not usable L1C fails."""
    path = run.source
    if not os.path.isdir(path):
        path = safe.extract_zip(path, os.path.join(run.staging, "input"), is_cancelled=cancel.is_set)
    created = safe.repair(path)
    if created:
        say(f"{run.name}: created the missing folders {', '.join(created)}")
    problems = safe.check(path, "L1C")
    if problems:
        raise _Failed(" ".join(problems))
    return path


def _command(plan, run, l1c):
    options = plan.options
    command = [plan.installation.executable, l1c, "--output_dir", os.path.join(run.staging, "output")]
    if plan.gipp_source:
        gipp = os.path.join(run.staging, "L2A_GIPP.xml")
        patch_gipp(plan.gipp_source, gipp, plan.gipp_changes)
        command += ["--GIP_L2A", gipp]
    if options.resolution != "all":
        command += ["--resolution", options.resolution]
    if options.processing_baseline:
        command += ["--processing_baseline", options.processing_baseline]
    return command


def _execute(run, command, cancel):
    """Start Sen2Cor in its own process group, copy its output to the log and parse progress; the exit code."""
    with open(run.log_path, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"=== {dt.datetime.now().isoformat(timespec='seconds')} {' '.join(command)}\n")
        log.flush()
        with run.lock:  # the supervisor reads run.process under the same lock when it cancels
            if cancel.is_set():
                raise Cancelled()
            run.process = _start(command, run.staging)
            run.started = time.monotonic()
        threading.Thread(target=_watch_exit, args=(run,), daemon=True).start()
        for line in _lines(run):
            log.write(line + "\n")
            log.flush()  # the log is what users tail on a cluster
            run.feed(line)
        code = run.process.wait()
        run.exited = run.exited or time.monotonic()
        if processes.alive(run.process):  # Sen2Cor ended but left children behind: no orphans
            stop_groups([run], run.stop_reason or "orphans")
        log.write(f"=== exit code {code} after {run.exited - run.started:.1f} s\n")
    return code


def _lines(run):
    """Sen2Cor's output lines until the pipe closes, or until it was stopped and a process that escaped its
    group still holds the pipe (then the reading thread is abandoned rather than the batch hanging)."""
    lines = queue.Queue()
    threading.Thread(target=_pump, args=(run.process.stdout, lines), daemon=True).start()
    while True:
        try:
            raw = lines.get(timeout=POLL)
        except queue.Empty:
            if run.stopped_at and run.exited and time.monotonic() - run.stopped_at > processes.TERM_GRACE + 1.0:
                return
            continue
        if raw is None:
            return
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


def _pump(stream, lines):
    with stream:
        for raw in stream:
            lines.put(raw)
    lines.put(None)


def _start(command, cwd):
    try:
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=child_environment(), **_session_options())
    except OSError as error:
        raise _Failed(f"Sen2Cor could not be started ({command[0]}): {error.strerror or error}.") from error
    return process


def _watch_exit(run):
    # The reader blocks while any child still holds the pipe; this notices Sen2Cor's own exit meanwhile.
    run.process.wait()
    run.exited = run.exited or time.monotonic()


def _session_options():
    if WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}  # its own process group: stopping it stops all it started


def _collect(run, l1c, code, options):
    """The L2A product in the staging folder, or :class:`_Failed` with the reason and the log's last words."""
    took = f"after {(run.exited or time.monotonic()) - (run.started or time.monotonic()):.0f} s"
    if run.stop_reason == "cancelled":
        raise Cancelled()
    if run.stop_reason == "timeout":
        raise _Failed(f"Sen2Cor did not finish {run.name} within the timeout of {options.timeout / 60:g} "
                      f"minutes and was stopped{_summary(run)}")
    if code != 0:
        raise _Failed(f"Sen2Cor {_exit_words(code)} {took} on {run.name}{_summary(run)}")
    if any("at least one error" in line for line in run.last_lines):
        raise _Failed(f"Sen2Cor reported an error {took} on {run.name} although it exited with 0{_summary(run)}")
    output = os.path.join(run.staging, "output")
    l2a = safe.find_l2a_for(os.path.basename(l1c), output) if os.path.isdir(output) else None
    if l2a:
        return l2a
    partial = safe.find_l2a_for(os.path.basename(l1c), output, require_valid=False) if os.path.isdir(output) \
        else None
    if partial:
        problems = " ".join(safe.check(partial, "L2A")[:2]) or "it lacks metadata or band images."
        raise _Failed(f"Sen2Cor exited with 0 {took} but its L2A product for {run.name} is unusable: "
                      f"{problems} (log: {run.log_path})")
    raise _Failed(f"Sen2Cor exited with 0 {took} but wrote no L2A product for {run.name}{_summary(run)}")


def _exit_words(code):
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"crashed ({name})"
    return f"exited with code {code}"


def _summary(run):
    """'; last log lines: ... (log: path).' — the error-looking lines when there are some, else the last ones."""
    lines = list(run.last_lines)
    errors = [line for line in lines if _ERROR_WORDS.search(line)]
    text = " / ".join((errors or lines)[-3:])
    if len(text) > 400:
        text = "..." + text[-400:]
    said = f"; last log lines: {text}" if text else "; it printed nothing"
    return f"{said} (log: {run.log_path})."


def _move_into_place(l2a, output_folder):
    final = os.path.join(output_folder, os.path.basename(l2a))
    if os.path.exists(final):  # the same product made twice within a second: keep the first
        raise _Failed(f"{final} already exists, so the new L2A product was not moved there.")
    os.rename(l2a, final)  # same file system (staging is inside the output folder): atomic
    return final


# ---------------------------------------------------------------------------------------------------------------
# Stopping process groups
# ---------------------------------------------------------------------------------------------------------------

def stop_groups(runs, reason):
    """Stop every run's process group (TERM, then KILL): all gone within 2 s."""
    targets = []
    for run in runs:
        with run.lock:
            process = run.process
        if process is None:
            continue
        run.stop_reason = run.stop_reason or reason
        run.stopped_at = run.stopped_at or time.monotonic()
        targets.append(process)
    processes.stop(targets)


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------

def layers_of(l2a):
    """{"TCI": path, "SCL": path} of an L2A product, finest resolution first (the TCI is at 10 m after a 10 m run,
    at 20 m otherwise; the SCL at 20 m, or 60 m after a 60 m run); missing ones are left out."""
    bands = safe.inspect(l2a).band_files
    chosen = {}
    for kind, keys in (("TCI", ("TCI_10m", "TCI_20m", "TCI_60m")), ("SCL", ("SCL_20m", "SCL_60m", "SCL_10m"))):
        path = next((bands[k] for k in keys if k in bands), None)
        if path:
            chosen[kind] = path
    return chosen



"""A small harness that runs ``qgis_process`` as a user would, against this plugin, in an isolated profile.

    qp = QgisProcess.prepared()                     # build/headless/ profile, plugin enabled once
    result = qp.run_alg("sentinel2:tiles", {"AOI": aoi, "MINIMAL": True, "OUTPUT": out})
    result.check()                                  # raises with stdout/stderr when qgis_process failed
    result.results["TILE_IDS"]

What it sets up (the same recipe the README gives users):
- ``qgis_process.bin`` directly: Debian's ``/usr/bin/qgis_process`` wrapper is broken on 3.22;
- ``QT_QPA_PLATFORM=offscreen`` (no display) and a private ``XDG_RUNTIME_DIR``;
- ``QGIS_CUSTOM_CONFIG_PATH=<profile dir>``: an isolated profile, so nothing in ``~/.local/share/QGIS`` is used;
- ``QGIS_PLUGINPATH=<dir>`` holding a ``sentinel2_pipeline`` symbolic link to the repository root;
- the plugin enabled in that profile with ``qgis_process.bin plugins enable sentinel2_pipeline``;
- ``PYTHONPATH`` starting with the venv's site-packages, so packages installed into ``.venv`` with pip
  are importable by the Python embedded in ``qgis_process.bin``.

No qgis import here: the harness works from any Python, and ``python tests/headless.py ARGS...`` runs
``qgis_process.bin ARGS...`` in the prepared profile.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_NAME = "sentinel2_pipeline"
DEFAULT_TIMEOUT = 300


def package_script():
    """``scripts/package.py`` as a module: what goes into the release zip, and the plugin repository's checks."""
    spec = importlib.util.spec_from_file_location("package", os.path.join(ROOT, "scripts", "package.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_qgis_process():
    """``qgis_process.bin`` when present (Debian/Ubuntu distribution packages), else ``qgis_process``."""
    override = os.environ.get("QGIS_PROCESS")
    if override:
        return override
    return shutil.which("qgis_process.bin") or shutil.which("qgis_process")


def venv_site_packages(venv=None):
    """The site-packages folders of the project's venv (``$VIRTUAL_ENV``, else ``<repo>/.venv``)."""
    candidates = [venv] if venv else [os.environ.get("VIRTUAL_ENV"), os.path.join(ROOT, ".venv")]
    if not venv and sys.prefix != sys.base_prefix:
        candidates.insert(0, sys.prefix)
    for candidate in candidates:
        if candidate and os.path.isdir(candidate):
            found = sorted(glob.glob(os.path.join(candidate, "lib", "python3*", "site-packages")))
            if found:
                return found
    return []


def _extract_json(text):
    """The JSON document in ``text``; tolerates lines printed before it (plugins printing to stdout)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = text.find("{\n")
    if start < 0:
        start = text.find("{")
    end = text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start : end + 1])
        except ValueError:
            return None
    return None


class QgisProcessError(RuntimeError):
    pass


@dataclass
class Result:
    """One ``qgis_process`` call: exit code, output, and the parsed JSON document for ``--json`` calls."""

    args: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    json: Any = None
    timed_out: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.returncode == 0 and not self.timed_out

    @property
    def results(self):
        """``results`` of a ``--json run`` (the algorithm's outputs), or ``{}``."""
        return (self.json or {}).get("results") or {}

    @property
    def output(self):
        return self.stdout + self.stderr

    def describe(self):
        status = "timed out" if self.timed_out else f"exit code {self.returncode}"
        return (
            f"qgis_process {' '.join(map(str, self.args))}: {status} after {self.seconds:.1f} s\n"
            f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}"
        )

    def check(self):
        if not self.ok:
            raise QgisProcessError(self.describe())
        return self


def format_parameters(parameters):
    """``{"A": 1, "B": [x, y]}`` -> ``["A=1", "B=x", "B=y"]``, to follow ``--`` (lists repeat the parameter;
    bools become ``true``/``false``; ``None`` is left out). On 3.22 ``run ALG -- --A=1`` is rejected: after the
    ``--`` separator parameters are written without dashes."""
    args = []
    items = parameters.items() if isinstance(parameters, dict) else parameters
    for key, value in items:
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, bool):
                item = "true" if item else "false"
            args.append(f"{key}={item}")
    return args


class QgisProcess:
    """``qgis_process.bin`` bound to an isolated profile in which this plugin is enabled.

    ``base``: folder that holds the profile (``profile/``), the plugin path (``pluginpath/``) and the runtime dir.
    ``plugin_source``: the plugin folder to expose as ``sentinel2_pipeline`` (the repository root by default;
    an unpacked release zip works too). ``enabled=False`` prepares the same profile with the plugin disabled.
    """

    def __init__(self, base=None, plugin_source=ROOT, enabled=True, venv=None, executable=None, env=None):
        self.base = os.path.abspath(base or os.path.join(ROOT, "build", "headless"))
        self.plugin_source = os.path.abspath(plugin_source)
        self.enabled = enabled
        self.executable = executable or find_qgis_process()
        self.profile_dir = os.path.join(self.base, "profile")
        self.plugin_path = os.path.join(self.base, "pluginpath")
        self.runtime_dir = os.path.join(self.base, "runtime")
        self.site_packages = venv_site_packages(venv)
        self.extra_env = dict(env or {})
        self._prepared = False

    # -- set-up ---------------------------------------------------------------------------------------------
    @classmethod
    def prepared(cls, *args, **kwargs):
        harness = cls(*args, **kwargs)
        harness.prepare()
        return harness

    @property
    def available(self):
        return bool(self.executable) and bool(os.path.exists(self.executable) or shutil.which(self.executable))

    def env(self):
        env = dict(os.environ)
        # PYTHONHOME would point the Python embedded in qgis_process.bin at the wrong standard library.
        env.pop("PYTHONHOME", None)
        env["QT_QPA_PLATFORM"] = "offscreen"
        env["XDG_RUNTIME_DIR"] = self.runtime_dir
        env["QGIS_CUSTOM_CONFIG_PATH"] = self.profile_dir
        env["QGIS_PLUGINPATH"] = self.plugin_path
        paths = list(self.site_packages)
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update(self.extra_env)
        return env

    def _link_plugin(self):
        os.makedirs(self.plugin_path, exist_ok=True)
        link = os.path.join(self.plugin_path, PLUGIN_NAME)
        if os.path.islink(link) and os.path.realpath(link) != os.path.realpath(self.plugin_source):
            os.unlink(link)
        elif os.path.exists(link) and not os.path.islink(link):
            shutil.rmtree(link)
        if not os.path.lexists(link):
            os.symlink(self.plugin_source, link)

    def _ini_path(self):
        return os.path.join(self.profile_dir, "profiles", "default", "QGIS", "QGIS3.ini")

    def _enabled_in_ini(self):
        try:
            with open(self._ini_path(), encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            return None
        section = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "PythonPlugins" and line.startswith(PLUGIN_NAME + "="):
                return line.split("=", 1)[1].strip().lower() == "true"
        return None

    def prepare(self):
        """Create the profile and plugin path, and enable (or disable) the plugin once."""
        if self._prepared:
            return self
        if not self.available:
            raise QgisProcessError("qgis_process.bin (or qgis_process) is not installed: run `make deps`.")
        os.makedirs(self.profile_dir, exist_ok=True)
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        self._link_plugin()
        # A plugin that the profile does not mention is disabled.
        if bool(self._enabled_in_ini()) != self.enabled:
            action = "enable" if self.enabled else "disable"
            result = self.call(["plugins", action, PLUGIN_NAME], timeout=120)
            if not result.ok or bool(self._enabled_in_ini()) != self.enabled:
                raise QgisProcessError(
                    f"could not {action} the plugin {PLUGIN_NAME} in {self.profile_dir} "
                    f"(a plugin that fails to load is not enabled):\n{result.describe()}"
                )
        self._prepared = True
        return self

    # -- calls ----------------------------------------------------------------------------------------------
    def call(self, args, json_output=False, timeout=DEFAULT_TIMEOUT, cwd=None):
        """Run ``qgis_process.bin [--json] ARGS`` and return a :class:`Result` (never raises on failure)."""
        command = [self.executable] + (["--json"] if json_output else []) + [str(arg) for arg in args]
        started = time.monotonic()
        try:
            completed = subprocess.run(
                command,
                env=self.env(),
                cwd=cwd or ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as expired:

            def text(value):
                return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")

            return Result(
                args, -1, text(expired.stdout), text(expired.stderr), time.monotonic() - started, timed_out=True
            )
        result = Result(args, completed.returncode, completed.stdout, completed.stderr, time.monotonic() - started)
        if json_output:
            result.json = _extract_json(completed.stdout)
        return result

    def run(self, args, json_output=False, timeout=DEFAULT_TIMEOUT, cwd=None):
        """Like :meth:`call`, after :meth:`prepare`."""
        self.prepare()
        return self.call(args, json_output=json_output, timeout=timeout, cwd=cwd)

    def run_alg(self, algorithm, parameters=None, json_output=True, timeout=DEFAULT_TIMEOUT, cwd=None):
        """``qgis_process.bin --json run ALGORITHM -- KEY=VALUE ...``; ``algorithm`` may be a .model3 path."""
        args = ["run", algorithm, "--"] + format_parameters(parameters or {})
        return self.run(args, json_output=json_output, timeout=timeout, cwd=cwd)

    def plugins(self):
        return self.run(["plugins"], json_output=True, timeout=120)

    def list(self):
        return self.run(["list"], json_output=True, timeout=120)

    def help(self, algorithm, json_output=False):
        return self.run(["help", algorithm], json_output=json_output, timeout=120)

    def algorithms(self, provider="sentinel2"):
        """Ids of the algorithms of ``provider`` that ``qgis_process list`` shows (empty when not loaded)."""
        listing = self.list().check().json or {}
        return sorted(((listing.get("providers") or {}).get(provider) or {}).get("algorithms") or {})


try:  # the session fixture `qgis_process` for tests: import it by name from this module
    import pytest
except ImportError:  # the harness also runs outside pytest (benchmarks, command line)
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def qgis_process():
        """The plugin enabled in an isolated profile under build/headless, prepared once per test session."""
        if not find_qgis_process():
            pytest.skip("qgis_process is not installed")
        return QgisProcess.prepared(base=os.path.join(ROOT, "build", "headless"))


def main(argv=None):
    """``python tests/headless.py [--base DIR] ARGS...``: qgis_process.bin ARGS in the prepared profile."""
    argv = list(sys.argv[1:] if argv is None else argv)
    base = None
    if argv[:1] == ["--base"] and len(argv) > 1:
        base, argv = argv[1], argv[2:]
    harness = QgisProcess.prepared(base=base)
    result = harness.call(argv, timeout=None)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())

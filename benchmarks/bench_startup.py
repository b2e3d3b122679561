"""Cost of the plugin on start-up (``make bench``).

1. ``qgis_process.bin list`` in two isolated profiles that differ only in whether the plugin is enabled:
   runs interleaved (enabled, disabled, enabled, ...), medians of wall time and of the child's peak RSS.
   Target: under 150 ms added.
2. Import cost in Python: with QGIS already initialised, time ``import sentinel2_pipeline``, ``classFactory``
   and ``initProcessing`` (provider and algorithms registered), and list the heavy modules that this pulled in
   (they should be imported lazily, inside the algorithms that need them).

    python benchmarks/bench_startup.py [--repeat N] [--json FILE]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from headless import PLUGIN_NAME, QgisProcess  # noqa: E402

TARGET_MS = 150.0
HEAVY_MODULES = ("numpy", "osgeo", "pyproj", "requests", "urllib3", "rasterio", "sentinelsat", "sentinelhub",
                 "shapely", "scipy", "pandas", "boto3", "processing")


def timed_run(harness, args):
    """Wall time (s) and peak RSS (KiB) of one ``qgis_process`` call, measured on that child alone."""
    command = [harness.executable] + args
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=harness.env(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss, stdout


def bench_qgis_process(repeat, base):
    enabled = QgisProcess.prepared(base=os.path.join(base, "enabled"), enabled=True)
    disabled = QgisProcess.prepared(base=os.path.join(base, "disabled"), enabled=False)
    # Warm-up (page cache, first-run profile files), and a check that the comparison means something.
    _, _, text = timed_run(enabled, ["list"])
    if "sentinel2:" not in text:
        raise SystemExit("the enabled profile does not list sentinel2 algorithms: the comparison would be void")
    _, _, text = timed_run(disabled, ["list"])
    if "sentinel2:" in text:
        raise SystemExit("the disabled profile lists sentinel2 algorithms: the plugin was not disabled")

    samples = {"enabled": [], "disabled": []}
    for _ in range(repeat):
        for name, harness in (("enabled", enabled), ("disabled", disabled)):
            seconds, rss, _ = timed_run(harness, ["list"])
            samples[name].append((seconds * 1000.0, rss / 1024.0))

    result = {"repeat": repeat}
    for name, values in samples.items():
        result[f"{name}_ms"] = statistics.median(ms for ms, _ in values)
        result[f"{name}_ms_all"] = [round(ms, 1) for ms, _ in values]
        result[f"{name}_peak_rss_mib"] = statistics.median(rss for _, rss in values)
    result["added_ms"] = result["enabled_ms"] - result["disabled_ms"]
    result["ratio"] = result["enabled_ms"] / result["disabled_ms"]
    result["added_rss_mib"] = result["enabled_peak_rss_mib"] - result["disabled_peak_rss_mib"]
    return result


IMPORT_PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
before = set(sys.modules)
t0 = time.perf_counter()
import sentinel2_pipeline
t1 = time.perf_counter()
plugin = sentinel2_pipeline.classFactory(None)
t2 = time.perf_counter()
plugin.initProcessing()
t3 = time.perf_counter()
provider = QgsApplication.processingRegistry().providerById("sentinel2")
algorithms = [a.id() for a in provider.algorithms()] if provider else []
new = sorted(set(sys.modules) - before)
print(json.dumps({"import_ms": (t1 - t0) * 1000, "class_factory_ms": (t2 - t1) * 1000,
                  "init_processing_ms": (t3 - t2) * 1000, "algorithms": algorithms, "new_modules": new}))
plugin.unload()
"""


def bench_import(plugin_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    with tempfile.TemporaryDirectory() as profile:
        env["QGIS_CUSTOM_CONFIG_PATH"] = profile
        env["XDG_RUNTIME_DIR"] = profile
        os.chmod(profile, 0o700)
        completed = subprocess.run([sys.executable, "-c", IMPORT_PROBE, plugin_path], env=env, capture_output=True,
                                   text=True, timeout=120)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1:] or ["failed"]}
    line = [text for text in completed.stdout.splitlines() if text.startswith("{")][-1]
    result = json.loads(line)
    modules = result.pop("new_modules")
    result["modules_loaded"] = len(modules)
    result["plugin_modules"] = sorted(name for name in modules if name.startswith(PLUGIN_NAME))
    result["heavy_modules"] = sorted({name.split(".")[0] for name in modules if name.split(".")[0] in HEAVY_MODULES})
    result["total_ms"] = result["import_ms"] + result["class_factory_ms"] + result["init_processing_ms"]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description="start-up cost of the plugin")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "startup.json"))
    args = parser.parse_args(argv)

    # Users' QGIS caches bytecode after the first start; a PYTHONDONTWRITEBYTECODE inherited from a sandbox or
    # CI would charge compiling every plugin module to every start instead. The warm-up runs write the cache.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    base = os.path.join(ROOT, "build", "bench", "startup")
    process = bench_qgis_process(args.repeat, base)
    imported = bench_import(os.path.join(base, "enabled", "pluginpath"))

    print(f"qgis_process.bin list, median of {args.repeat} interleaved runs each:")
    print(f"  plugin disabled: {process['disabled_ms']:7.0f} ms   peak RSS {process['disabled_peak_rss_mib']:6.1f} MiB")
    print(f"  plugin enabled:  {process['enabled_ms']:7.0f} ms   peak RSS {process['enabled_peak_rss_mib']:6.1f} MiB")
    verdict = "OK" if process["added_ms"] < TARGET_MS else "OVER TARGET"
    print(f"  added:           {process['added_ms']:7.0f} ms   (ratio {process['ratio']:.3f}; "
          f"target < {TARGET_MS:.0f} ms: {verdict})   peak RSS +{process['added_rss_mib']:.1f} MiB")
    print(f"  all runs (ms): enabled {process['enabled_ms_all']}  disabled {process['disabled_ms_all']}")
    if "error" in imported:
        print(f"plugin import in Python: failed: {imported['error']}")
    else:
        print("plugin import in Python (QGIS already initialised):")
        print(f"  import {imported['import_ms']:.1f} ms + classFactory {imported['class_factory_ms']:.1f} ms + "
              f"initProcessing {imported['init_processing_ms']:.1f} ms = {imported['total_ms']:.1f} ms; "
              f"{imported['modules_loaded']} modules loaded ({len(imported['plugin_modules'])} of the plugin), "
              f"algorithms: {', '.join(imported['algorithms']) or 'none'}")
        print(f"  heavy modules pulled in at start-up: {', '.join(imported['heavy_modules']) or 'none'}")

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"qgis_process_list": process, "python_import": imported}, handle, indent=2)
    print(f"  (details: {os.path.relpath(args.json, ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""sentinel2:sen2cor engine overhead: 20 stand-in products that each take 1 s, PARALLEL=2.

The ideal is 20 x 1 s / 2 = 10 s. Prints the total time as a ratio of that ideal (target <= 1.1x), the plugin's
own overhead per product (target < 0.3 s) measured two ways — per product, the time the runner spent around
Sen2Cor (input check and repair, GIPP, start, output check and move), and over the batch,
(total - ideal) x PARALLEL / products — and peak memory of the runner and of the stand-ins.
The stand-in counts its own start-up (Python, GDAL import) inside its second, as a real run would.
"""

import os
import resource
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "pluginpath"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conftest  # noqa: E402, F401 (links build/pluginpath/sentinel2_pipeline)
from test_safe import L1C, make_l1c  # noqa: E402

from sentinel2_pipeline.plugin.engine import sen2cor  # noqa: E402

PRODUCTS, SECONDS, PARALLEL = 20, 1.0, 2
STANDIN = os.path.join(ROOT, "tests", "standins", "L2A_Process")
GIPP = os.path.join(conftest.FIXTURES, "sen2cor", "L2A_GIPP_sen2cor-2.10.0_marujore.xml")
WORK = os.path.join(ROOT, "build", "bench", "sen2cor")


def prepare():
    shutil.rmtree(WORK, ignore_errors=True)
    inputs = os.path.join(WORK, "l1c")
    os.makedirs(inputs)
    for index in range(PRODUCTS):
        make_l1c(inputs, L1C.replace("T34UDD", f"T34U{chr(ord('A') + index // 10)}{chr(ord('A') + index % 10)}"))
    os.environ.update(STANDIN_SEN2COR_SECONDS=str(SECONDS), STANDIN_SEN2COR_PIXELS="30")
    return inputs, os.path.join(WORK, "l2a")


def main():
    inputs, outputs = prepare()
    started = time.perf_counter()
    plan = sen2cor.plan(inputs, outputs, sen2cor.Options(gipp=GIPP, parallel=PARALLEL), executable=STANDIN)
    planned = time.perf_counter()
    result = sen2cor.execute(plan)
    total = time.perf_counter() - started
    assert len(result.products) == PRODUCTS and not result.failed, result.failed
    ideal = PRODUCTS * SECONDS / PARALLEL
    around = [spent - in_sen2cor for spent, in_sen2cor in result.timings.values()]
    in_sen2cor = [t for _, t in result.timings.values()]
    print(f"products: {PRODUCTS} x {SECONDS:.1f} s, PARALLEL={PARALLEL}; ideal {ideal:.1f} s")
    print(f"total: {total:.2f} s = {total / ideal:.3f}x the ideal (target <= 1.1x); planning {planned - started:.2f} s")
    print(f"overhead per product around Sen2Cor: mean {sum(around) / len(around):.3f} s, max {max(around):.3f} s "
          f"(target < 0.3 s)")
    print(f"overhead per product over the batch: {(total - ideal) * PARALLEL / PRODUCTS:.3f} s "
          f"(stand-in runs took {min(in_sen2cor):.2f}-{max(in_sen2cor):.2f} s)")
    # On a loaded machine the stand-ins themselves take longer than 1 s; this ratio leaves that out.
    actual = sum(in_sen2cor) / PARALLEL
    print(f"total against the stand-ins' actual times ({actual:.2f} s): {total / actual:.3f}x; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    runner = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: runner {runner:.0f} MB, largest stand-in {children:.0f} MB")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# `make demo`: the main job, headless, on the bundled sample area (data/demo/gers_toulouse.geojson, which
# crosses 0°E, the boundary of UTM zones 30 and 31). For now: the Sentinel-2 tiles of the area.
# Later steps of the chain (search -> download -> sen2cor / L3A mosaic) are appended here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=/usr/bin/python3
AOI=${AOI:-$ROOT/data/demo/gers_toulouse.geojson}
OUT=${DEMO_DIR:-$ROOT/build/demo}
mkdir -p "$OUT"

# run STEP ALGORITHM PARAMETERS...: qgis_process --json run, JSON kept in $OUT/STEP.json, log in $OUT/STEP.log
run() {
    local step=$1 alg=$2
    shift 2
    echo "==> $alg $*"
    if ! bash scripts/qgis_headless.sh --json run "$alg" -- "$@" >"$OUT/$step.json" 2>"$OUT/$step.log"; then
        cat "$OUT/$step.log" "$OUT/$step.json" >&2
        echo "demo: $alg failed (log: $OUT/$step.log)" >&2
        exit 1
    fi
}

# result STEP KEY: one output of a step
result() {
    "$PYTHON" - "$OUT/$1.json" "$2" <<'PY'
import json
import sys

text = open(sys.argv[1], encoding="utf-8").read()
document = json.loads(text[text.find("{"):])
print(document.get("results", {}).get(sys.argv[2], ""))
PY
}

# features PATH: number of features in a vector file
features() {
    "$PYTHON" - "$1" <<'PY'
import sys

from osgeo import ogr

source = ogr.Open(sys.argv[1])
print(sum(source.GetLayer(i).GetFeatureCount() for i in range(source.GetLayerCount())) if source else "?")
PY
}

rm -f "$OUT/tiles.gpkg"
run tiles sentinel2:tiles AOI="$AOI" MINIMAL=true OUTPUT="$OUT/tiles.gpkg"
tile_ids=$(result tiles TILE_IDS)
tiles_output=$(result tiles OUTPUT)
echo "TILE_IDS: $tile_ids"
echo "OUTPUT:   $tiles_output ($(features "$OUT/tiles.gpkg") tiles)"

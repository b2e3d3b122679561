#!/usr/bin/env bash
# `make demo`: the main job, headless, on the bundled sample area (data/demo/gers_toulouse.geojson, which
# crosses 0°E, the boundary of UTM zones 30 and 31): its Sentinel-2 tiles, then a search of the local
# catalogue replica. Later steps of the chain (download -> sen2cor / L3A mosaic) are appended here.
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

# Search: the local Copernicus Data Space OData replica (offline, deterministic) for those tiles.
REPLICA_LOG="$OUT/replica.log"
rm -f "$OUT/replica.url"
"$PYTHON" scripts/replica.py --tiles "$tile_ids" --start 2023-06-01 --end 2023-08-31 \
    --url-file "$OUT/replica.url" >/dev/null 2>"$REPLICA_LOG" &
REPLICA_PID=$!
trap 'kill $REPLICA_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$OUT/replica.url" ] && break; sleep 0.1; done
[ -s "$OUT/replica.url" ] || { cat "$REPLICA_LOG" >&2; echo "demo: the OData replica did not start" >&2; exit 1; }
ODATA_URL=$(cat "$OUT/replica.url")

rm -f "$OUT/footprints.gpkg" "$OUT/footprints.geojson"
run search sentinel2:search CATALOG=cdse URL="$ODATA_URL" AOI="$AOI" TILES="$tile_ids" \
    START=2023-06-01 END=2023-06-30 LEVEL=L1C MAX_CLOUD=50 \
    OUTPUT="$OUT/footprints.gpkg" GEOJSON="$OUT/footprints.geojson"
echo "FOOTPRINTS: $OUT/footprints.gpkg ($(result search COUNT) products, $(result search TOTAL_BYTES) bytes;" \
     "GeoJSON: $OUT/footprints.geojson)"

#!/usr/bin/env bash
# `make demo`: the main job, headless (qgis_process), offline and deterministic, on the bundled sample areas:
#
#   1. tiles     the Sentinel-2 tiles of data/demo/gers_toulouse.geojson (it crosses 0°E, UTM zones 30 and 31)
#   2. search    Level-1C products of those tiles in June 2023 in the local Copernicus Data Space catalogue
#   3. download  their zips (SOURCE=auto) behind a token of the local identity service, with the demo account
#                of the demo's own QGIS auth database; checked (MD5), extracted and checked as .SAFE products
#   4. sen2cor   Level-1C -> Level-2A with the stand-in Sen2Cor (tests/standins/L2A_Process) and the demo GIPP
#   5. l3a       monthly L3A mosaics of data/demo/l3a_berlin.geojson from the local replica of DLR's server
#   6. model     the shipped model models/search_download_sen2cor.model3, run by file (steps 2-4 in one call)
#   7. biophysical LAI, FAPAR and FCOVER of step 4's Level-2A products (S2 Toolbox networks), COGs + quality bands
#   8. composite monthly median composites of data/demo/composite_area.geojson from the local STAC API's L2A COGs
#
# The services are the replicas the tests use (scripts/demo_services.py, one background process, stopped on
# exit); everything is written under build/demo (DEMO_DIR), with a profile and auth database of its own.
#
# `make demo-live` (this script with --live): the same chain against the real services that need no account:
# tiles, an Earth Search L2A search, the bands of the found products clipped to a small area (SOURCE=stac), and
# DLR's L3A mosaics. Needs the internet; written under build/demo-live.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LIVE=false
[ "${1:-}" = "--live" ] && LIVE=true
VENV_DIR=${VENV:-.venv}
case $VENV_DIR in /*) ;; *) VENV_DIR=$ROOT/$VENV_DIR ;; esac
PYTHON=${PYTHON:-$VENV_DIR/bin/python}
[ -x "$PYTHON" ] || PYTHON=/usr/bin/python3
if $LIVE; then OUT=${DEMO_DIR:-$ROOT/build/demo-live}; else OUT=${DEMO_DIR:-$ROOT/build/demo}; fi
mkdir -p "$OUT"
# The demo's own qgis_process profile (plugin enabled once; see scripts/qgis_headless.sh).
export S2_HEADLESS_DIR=$OUT/qgis
STARTED=$SECONDS

# step N TITLE: a heading
step() {
    echo
    echo "== $1. $2"
}

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

# result STEP KEY: one output of a step (lists joined with ';')
result() {
    "$PYTHON" - "$OUT/$1.json" "$2" <<'PY'
import json
import sys

text = open(sys.argv[1], encoding="utf-8").read()
value = json.loads(text[text.find("{"):]).get("results", {}).get(sys.argv[2], "")
value = ";".join(map(str, value)) if isinstance(value, list) else value
print(int(value) if isinstance(value, float) and value.is_integer() else value)
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

# listing PATHS: one indented line per ';'-separated path (its name), with what it holds
listing() {
    "$PYTHON" - "$1" <<'PY'
import os
import sys

for path in filter(None, sys.argv[1].split(";")):
    if os.path.isdir(path):
        files = sum(len(names) for _, _, names in os.walk(path))
        print(f"    {os.path.basename(path)}  ({files} files)")
    else:
        print(f"    {os.path.basename(path)}  ({os.path.getsize(path)} bytes)")
PY
}

# service KEY: one entry of the services' URL file
service() {
    "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$SERVICES" "$1"
}

# l3a_summary REPORT: the months of an L3A report and what became of them, then the files written
l3a_summary() {
    "$PYTHON" - "$1" <<'PY'
import json
import os
import sys

report = json.load(open(sys.argv[1], encoding="utf-8"))
for month in report.get("months", []):
    masked = month.get("masked") or {}
    parts = [f"{name.replace('_', ' ')} {100 * masked[name]:.1f}%" for name in ("no_data", "cloud", "snow")
             if masked.get(name)]
    print(f"    {month['month']}: {month['status']:<8} (tiles found: {month.get('found')}; masked "
          f"{100 * masked.get('share', 0):.1f}%{': ' + ', '.join(parts) if parts else ''})")
folder = os.path.dirname(sys.argv[1])
files = sorted(n for n in os.listdir(folder) if n.endswith((".tif", ".vrt")))
print(f"L3A FILES: {len(files)} in {folder}: {', '.join(files)}")
PY
}

tiles_step() {
    step 1 "Tiles of the area"
    rm -f "$OUT/tiles.gpkg"
    run tiles sentinel2:tiles AOI="$1" MINIMAL=true OUTPUT="$OUT/tiles.gpkg"
    TILE_IDS=$(result tiles TILE_IDS)
    echo "TILE_IDS: $TILE_IDS"
    echo "OUTPUT:   $(result tiles OUTPUT) ($(features "$OUT/tiles.gpkg") tiles)"
}

l3a_step() {  # l3a_step URL (empty: DLR's own server)
    step "$1" "Monthly L3A mosaics (DLR composites) of data/demo/l3a_berlin.geojson"
    rm -rf "$OUT/l3a"
    run l3a sentinel2:l3amosaic AOI="$ROOT/data/demo/l3a_berlin.geojson" START_MONTH=2021-04 END_MONTH=2021-07 \
        BANDS=B2 BANDS=B3 BANDS=B4 BANDS=B8 ${2:+URL="$2"} MAX_MASKED=30 OUTPUT_FOLDER="$OUT/l3a"
    echo "REPORT: $(result l3a REPORT) (months with more than 30% masked are left out):"
    l3a_summary "$(result l3a REPORT)"
    echo "L3A LAYERS: $(result l3a OUTPUT_LAYERS | tr ';' ' ')"
}

# ---- demo-live: the real services --------------------------------------------------------------------------------
if $LIVE; then
    AOI=${AOI:-$ROOT/data/demo/toulouse_small.geojson}
    echo "demo-live: the chain against the real services (Earth Search, DLR); outputs in $OUT"
    if ! reason=$("$PYTHON" - <<'PY'
import sys

import requests

for url in ("https://earth-search.aws.element84.com/v1/", "https://download.geoservice.dlr.de/S2_L3A_WASP/files/"):
    try:
        requests.head(url, timeout=15, allow_redirects=True)
    except requests.RequestException as error:
        why = ("no answer within 15 s" if isinstance(error, requests.Timeout) else "TLS failed"
               if isinstance(error, requests.exceptions.SSLError) else "no connection")
        print(f"{url.split('/')[2]}: {why}")
        sys.exit(1)
PY
    ); then
        echo "demo-live: the real services cannot be reached ($reason); check the network or the proxy, or" \
             "run the offline 'make demo'." >&2
        exit 1
    fi
    tiles_step "$AOI"

    step 2 "Search Earth Search (Element 84) for Level-2A products, 10 days"
    rm -f "$OUT/footprints.gpkg" "$OUT/footprints.geojson"
    run search sentinel2:search CATALOG=earth-search AOI="$AOI" START=2023-07-01 END=2023-07-10 LEVEL=L2A \
        MAX_CLOUD=50 MAX_RESULTS=3 OUTPUT="$OUT/footprints.gpkg" GEOJSON="$OUT/footprints.geojson"
    COUNT=$(result search COUNT)
    echo "FOOTPRINTS: $OUT/footprints.gpkg ($COUNT products, $(result search TOTAL_BYTES) bytes in full;" \
         "GeoJSON: $OUT/footprints.geojson)"

    step 3 "Download bands B4, B3, B2 clipped to the area (SOURCE=stac, HTTP range reads of the COGs)"
    rm -rf "$OUT/bands"
    if [ "$COUNT" = 0 ]; then
        echo "(no product under 50% cloud in those 10 days: nothing to download)"
    else
        run download sentinel2:download INPUT="$OUT/footprints.geojson" SOURCE=stac BANDS=B4 BANDS=B3 BANDS=B2 \
            AOI="$AOI" OUTPUT_FOLDER="$OUT/bands"
        echo "DOWNLOADED: $(result download DOWNLOADED) (skipped $(result download SKIPPED), failed" \
             "$(result download FAILED_COUNT)) into $OUT/bands"
        listing "$(result download PRODUCTS)"
    fi

    l3a_step 4 ""
    echo
    echo "demo-live: done in $((SECONDS - STARTED)) s; outputs in $OUT"
    exit 0
fi

# ---- demo: the local replicas --------------------------------------------------------------------------------------
AOI=${AOI:-$ROOT/data/demo/gers_toulouse.geojson}
echo "demo: the whole chain, headless, against local replicas of the services; outputs in $OUT"
rm -rf "$OUT/l1c" "$OUT/l2a" "$OUT/l3a" "$OUT/model" "$OUT/biophysical" "$OUT/composite"
tiles_step "$AOI"

# The local services, in one background process stopped on exit.
SERVICES=$OUT/services.json
rm -f "$SERVICES"
"$PYTHON" scripts/demo_services.py serve --tiles "$TILE_IDS" --start 2023-06-01 --end 2023-06-30 \
    --dlr-folder "$OUT/dlr-replica" --json "$SERVICES" >/dev/null 2>"$OUT/services.log" &
SERVICES_PID=$!
trap 'kill -TERM $SERVICES_PID 2>/dev/null && wait $SERVICES_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    [ -s "$SERVICES" ] && break
    kill -0 $SERVICES_PID 2>/dev/null || break
    sleep 0.1
done
[ -s "$SERVICES" ] || { cat "$OUT/services.log" >&2; echo "demo: the local services did not start" >&2; exit 1; }
# Read once: the file goes when the services stop, and no step may then fall back to a real service.
ODATA_URL=$(service catalogue)
TOKEN_URL=$(service token)
DLR_URL=$(service dlr)
STAC_URL=$(service stac)
STATS_URL=$(service stats)
ACCOUNT=$(service account)
echo
echo "SERVICES: Data Space catalogue and downloads $ODATA_URL ($(service products) Level-1C zips," \
     "$(service zip_bytes) bytes), identity $TOKEN_URL, DLR $DLR_URL (log: $OUT/services.log)"

# The account: a Basic configuration in an auth database of the demo's own, unlocked by a master password file.
export QGIS_AUTH_DB_DIR_PATH=$OUT/auth QGIS_AUTH_PASSWORD_FILE=$OUT/master.txt
(umask 077 && echo "sentinel2 demo master password" >"$QGIS_AUTH_PASSWORD_FILE")
AUTHCFG=$("$PYTHON" scripts/demo_services.py auth --auth-dir "$QGIS_AUTH_DB_DIR_PATH" \
    --master-file "$QGIS_AUTH_PASSWORD_FILE" --profile "$S2_HEADLESS_DIR/profile")
echo "AUTH:     '$ACCOUNT' ($AUTHCFG) in $QGIS_AUTH_DB_DIR_PATH, unlocked by the master password file" \
     "$QGIS_AUTH_PASSWORD_FILE"
# Footprints carry download links built from SENTINEL2_CDSE_DOWNLOAD_URL: set before the search.
export SENTINEL2_CDSE_DOWNLOAD_URL=$ODATA_URL SENTINEL2_CDSE_TOKEN_URL=$TOKEN_URL

step 2 "Search the Copernicus Data Space catalogue (local replica) for Level-1C products"
rm -f "$OUT/footprints.gpkg" "$OUT/footprints.geojson"
run search sentinel2:search CATALOG=cdse URL="$ODATA_URL" AOI="$AOI" TILES="$TILE_IDS" \
    START=2023-06-01 END=2023-06-30 LEVEL=L1C MAX_CLOUD=50 \
    OUTPUT="$OUT/footprints.gpkg" GEOJSON="$OUT/footprints.geojson"
echo "FOOTPRINTS: $OUT/footprints.gpkg ($(result search COUNT) products, $(result search TOTAL_BYTES) bytes;" \
     "GeoJSON: $OUT/footprints.geojson)"

step 3 "Download the products (SOURCE=auto: the Data Space, one sign-in for the batch)"
run download sentinel2:download INPUT="$OUT/footprints.gpkg" SOURCE=auto AUTH="$AUTHCFG" \
    OUTPUT_FOLDER="$OUT/l1c"
echo "DOWNLOADED: $(result download DOWNLOADED) (skipped $(result download SKIPPED), failed" \
     "$(result download FAILED_COUNT)), MD5 verified, extracted and checked into $OUT/l1c:"
listing "$(result download PRODUCTS)"
"$PYTHON" - "$STATS_URL" <<'PY'
import json
import sys
import urllib.request

stats = json.load(urllib.request.urlopen(sys.argv[1], timeout=10))
sign_ins = stats["grants"].count("password")
print(f"IDENTITY: {sign_ins} sign-in(s), {stats['grants'].count('refresh_token')} refresh(es) for "
      f"{stats['zips_served']} zips ({stats['zip_bytes']} bytes); {stats['refused']} request(s) refused")
PY

step 4 "Sen2Cor, Level-1C to Level-2A (stand-in L2A_Process, GIPP from \$SEN2COR_HOME/cfg)"
export SEN2COR_HOME=$OUT/sen2cor STANDIN_SEN2COR_SECONDS=0.3 STANDIN_SEN2COR_PIXELS=30
mkdir -p "$SEN2COR_HOME/cfg"
cp data/demo/L2A_GIPP.xml "$SEN2COR_HOME/cfg/L2A_GIPP.xml"
STANDIN=$ROOT/tests/standins/L2A_Process
run sen2cor sentinel2:sen2cor INPUT_FOLDER="$OUT/l1c" EXECUTABLE="$STANDIN" OUTPUT_FOLDER="$OUT/l2a"
failed=$(result sen2cor FAILED)
echo "L2A: $(result sen2cor PRODUCTS | tr ';' '\n' | grep -c .) products in $OUT/l2a (failed: ${failed:-none}):"
listing "$(result sen2cor PRODUCTS)"

l3a_step 5 "$DLR_URL"

step 6 "The shipped model models/search_download_sen2cor.model3, by file (search -> download -> sen2cor)"
run model "$ROOT/models/search_download_sen2cor.model3" area="$AOI" start=2023-06-01 end=2023-06-10 \
    max_cloud=50 auth="$AUTHCFG" catalogue_url="$ODATA_URL" sen2cor="$STANDIN" \
    download:downloads="$OUT/model/l1c" sen2cor:l2a="$OUT/model/l2a"
echo "MODEL: $(find "$OUT/model/l1c" -maxdepth 1 -name '*.SAFE' | wc -l) Level-1C products in $OUT/model/l1c," \
     "$(find "$OUT/model/l2a" -maxdepth 1 -name '*.SAFE' | wc -l) Level-2A products in $OUT/model/l2a"

step 7 "Biophysical variables (S2 Toolbox networks) of the Level-2A products of step 4"
run biophysical sentinel2:biophysical INPUT_FOLDER="$OUT/l2a" VARIABLES=LAI VARIABLES=FAPAR VARIABLES=FCOVER \
    RESOLUTION=20 OUTPUT_FOLDER="$OUT/biophysical"
"$PYTHON" - "$OUT/biophysical" "$(result biophysical FAILED_COUNT)" <<'PY'
import os
import sys

import numpy as np
from osgeo import gdal

folder, failed = sys.argv[1], sys.argv[2]
files = sorted(n for n in os.listdir(folder) if n.endswith(".tif"))
lai = [gdal.Open(os.path.join(folder, n)).ReadAsArray() for n in files if "_LAI_" in n]
values = np.concatenate([a[np.isfinite(a)] for a in lai]) if lai else np.array([])
print(f"BIOPHYSICAL: {len(files)} COGs for {len(lai)} products in {folder} (failed: {failed}); LAI of the clear "
      f"pixels {values.min():.2f} to {values.max():.2f} (median {np.median(values):.2f})" if values.size else
      f"BIOPHYSICAL: {len(files)} COGs, no clear pixel")
PY

step 8 "Monthly composites (median) of data/demo/composite_area.geojson from the local STAC API's L2A COGs"
run composite sentinel2:composite AOI="$ROOT/data/demo/composite_area.geojson" START=2023-06-01 END=2023-07-15 \
    PERIOD=month METHOD=median BANDS=B2 BANDS=B3 BANDS=B4 BANDS=B8 URL="$STAC_URL" MAX_CLOUD=100 \
    OUTPUT_FOLDER="$OUT/composite"
"$PYTHON" - "$(result composite REPORT)" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1], encoding="utf-8"))
for period in report["periods"]:
    print(f"    {period['period']}: {period['status']:<8} {period['scene_count']} scenes, cloud "
          f"{100 * (period['cloud_share'] or 0):.1f}%, valid {100 * (period['valid_share'] or 0):.1f}% of the area")
print(f"COMPOSITE: {len(report['periods'])} periods ({report['method']}, {', '.join(report['bands'])}); report "
      f"{sys.argv[1]} and composite_report.html")
PY

echo
echo "demo: done in $((SECONDS - STARTED)) s; outputs in $OUT"

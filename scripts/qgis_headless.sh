#!/usr/bin/env bash
# qgis_process with this plugin enabled, in an isolated profile, from a source checkout:
#
#   scripts/qgis_headless.sh list
#   scripts/qgis_headless.sh help sentinel2:tiles
#   scripts/qgis_headless.sh --json run sentinel2:tiles -- AOI=data/demo/gers_toulouse.geojson MINIMAL=true \
#       OUTPUT=/tmp/tiles.gpkg
#
# What it does (the recipe for any headless use of the plugin):
# - calls qgis_process.bin: Debian's /usr/bin/qgis_process wrapper is broken on QGIS 3.22;
# - QT_QPA_PLATFORM=offscreen, since there is no display;
# - QGIS_CUSTOM_CONFIG_PATH: a profile of its own (build/qgis-headless/profile), never ~/.local/share/QGIS;
# - QGIS_PLUGINPATH: a folder with a sentinel2_pipeline link to this checkout;
# - enables the plugin in that profile once (qgis_process loads only enabled plugins);
# - PYTHONPATH starts with .venv's site-packages, so what pip installed there is importable by qgis_process.
# Override with S2_HEADLESS_DIR (profile base folder) and QGIS_PROCESS (the executable).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PLUGIN=sentinel2_pipeline
BASE=${S2_HEADLESS_DIR:-$ROOT/build/qgis-headless}
QGIS_PROCESS=${QGIS_PROCESS:-$(command -v qgis_process.bin || command -v qgis_process || true)}
if [ -z "$QGIS_PROCESS" ]; then
    echo "qgis_process.bin is not installed: run 'make deps' (as root) or install the qgis package." >&2
    exit 127
fi

export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR=$BASE/runtime
export QGIS_CUSTOM_CONFIG_PATH=$BASE/profile
export QGIS_PLUGINPATH=$BASE/pluginpath
for site in "$ROOT"/.venv/lib/python3*/site-packages; do
    if [ -d "$site" ]; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
done

mkdir -p "$QGIS_CUSTOM_CONFIG_PATH" "$QGIS_PLUGINPATH"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
ln -sfn "$ROOT" "$QGIS_PLUGINPATH/$PLUGIN"

ini=$QGIS_CUSTOM_CONFIG_PATH/profiles/default/QGIS/QGIS3.ini
if ! grep -qs "^$PLUGIN=true" "$ini"; then
    if ! "$QGIS_PROCESS" plugins enable "$PLUGIN" >"$BASE/enable.log" 2>&1 || ! grep -qs "^$PLUGIN=true" "$ini"; then
        cat "$BASE/enable.log" >&2
        echo "could not enable $PLUGIN in $QGIS_CUSTOM_CONFIG_PATH (a plugin that fails to load is not enabled)" >&2
        exit 1
    fi
fi

exec "$QGIS_PROCESS" "$@"

#!/usr/bin/env bash
# The QGIS LTR test lane (`make test-lts`): the whole test suite on Debian testing's QGIS (3.44 LTR, Python 3.14,
# GDAL 3.13, numpy 2) in a chroot under build/lts, beside the host's QGIS 3.22 lane.
#
#   scripts/lts.sh test [pytest arguments]   build the root if needed, then run scripts/deps.sh and pytest inside it
#   scripts/lts.sh shell                     an interactive shell in the root, the checkout mounted
#   scripts/lts.sh umount                    undo every mount under the root (also run by `make clean`)
#
# The root is made once with debootstrap (as root) from the Debian mirror of this machine's apt sources (LTS_MIRROR
# overrides it) and kept in build/lts/root: later runs reuse it, and scripts/deps.sh inside it installs only what is
# missing. It is built in build/lts/root.partial and renamed when complete. The checkout and ../shared are bind-mounted
# at the same paths inside the root, with /proc, /sys and /dev; every mount is undone on exit, failure included, and
# processes left running inside the root are stopped first.
set -euo pipefail

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LTS_DIR=${LTS_DIR:-$CHECKOUT/build/lts}
ROOTFS=$LTS_DIR/root
SUITE=${LTS_SUITE:-forky}
VENV_IN_ROOT=/opt/sentinel2-pipeline-venv
HOST_CA=/etc/sentinel2-host-ca-certificates.crt
JUNIT_IN_LANE=${JUNIT_LTS:-build/test-results/junit-lts.xml}

say() { printf '[lts] %s\n' "$*" >&2; }

# The first Debian archive URI of the apt sources (deb822 .sources or one-line sources.list), not the security one.
apt_mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list)
    local file line
    for file in "${files[@]}"; do
        [ -f "$file" ] || continue
        while read -r line; do
            case $line in
                URIs:*) line=${line#URIs:} ;;
                deb\ *) line=$(awk '{for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; exit}}' <<<"$line") ;;
                *) continue ;;
            esac
            for uri in $line; do
                case $uri in *debian-security*|*security.debian*) continue ;; */debian|*/debian/) echo "${uri%/}"; return ;; esac
            done
        done <"$file"
    done
    return 1
}

# Mount points under the root, deepest first.
root_mounts() {
    [ -d "$ROOTFS" ] || return 0
    local real
    real=$(realpath "$ROOTFS")
    awk -v root="$real" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/self/mounts | sort -r
}

stop_root_processes() {
    local real pid link stopped=()
    [ -d "$ROOTFS" ] || return 0
    real=$(realpath "$ROOTFS")
    for signal in TERM KILL; do
        stopped=()
        for link in /proc/[0-9]*/root; do
            pid=${link#/proc/}; pid=${pid%/root}
            [ "$(readlink "$link" 2>/dev/null)" = "$real" ] || continue
            kill "-$signal" "$pid" 2>/dev/null && stopped+=("$pid")
        done
        [ ${#stopped[@]} -eq 0 ] && return 0
        if [ "$signal" = TERM ]; then sleep 2; fi  # an if, not &&: a false test must not fail the caller (set -e)
    done
}

unmount_all() {
    stop_root_processes
    local point
    for point in $(root_mounts); do
        umount "$point" 2>/dev/null || umount -l "$point" 2>/dev/null || say "could not unmount $point"
    done
    [ -z "$(root_mounts)" ]
}

require_root() {
    [ "$(id -u)" = 0 ] || { say "the LTR lane needs root (debootstrap, chroot, mount); run it as root"; exit 1; }
    command -v debootstrap >/dev/null || {
        command -v apt-get >/dev/null || { say "debootstrap is missing and there is no apt-get to install it"; exit 1; }
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap </dev/null >/dev/null
    }
}

build_root() {
    [ -x "$ROOTFS/usr/bin/apt-get" ] && return 0
    local mirror partial=$LTS_DIR/root.partial
    mirror=${LTS_MIRROR:-$(apt_mirror)} || { say "no Debian mirror in the apt sources: set LTS_MIRROR"; exit 1; }
    say "building the Debian $SUITE root in $ROOTFS from $mirror (once; later runs reuse it)"
    # A leftover partial root may still hold mounts from an interrupted build: never delete through them.
    ROOTFS=$partial unmount_all
    rm -rf --one-file-system "$partial"
    mkdir -p "$LTS_DIR"
    debootstrap --variant=minbase "$SUITE" "$partial" "$mirror" /usr/share/debootstrap/scripts/sid >"$LTS_DIR/debootstrap.log" 2>&1 ||
        { tail -20 "$LTS_DIR/debootstrap.log" >&2; say "debootstrap failed (log: $LTS_DIR/debootstrap.log)"; exit 1; }
    # Testing's Release files on a frozen mirror are past their Valid-Until date; the archive key still checks them.
    echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99sentinel2-valid-until"
    mv "$partial" "$ROOTFS"
}

mount_root() {
    local shared
    mount -t proc proc "$ROOTFS/proc"
    # /sys with its cgroup mounts, as on the host: slurmd of the cluster tests needs /sys/fs/cgroup.
    mount --rbind /sys "$ROOTFS/sys"
    mount --make-rslave "$ROOTFS/sys"
    mount --rbind /dev "$ROOTFS/dev"
    mount --make-rslave "$ROOTFS/dev"
    mkdir -p "$ROOTFS$CHECKOUT"
    mount --bind "$CHECKOUT" "$ROOTFS$CHECKOUT"
    shared=$(dirname "$CHECKOUT")/shared
    if [ -d "$shared" ]; then
        mkdir -p "$ROOTFS$(dirname "$CHECKOUT")/shared"
        mount --bind "$(realpath "$shared")" "$ROOTFS$(dirname "$CHECKOUT")/shared"
    fi
    # The machine's resolver and trust bundle (a copy beside the root's own store, which its ca-certificates
    # package manages): pip inside the root reaches the package index as the host's pip does.
    cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS$HOST_CA"
    fi
}

pip_cert() {
    if [ -f "$ROOTFS$HOST_CA" ]; then echo "$HOST_CA"; else echo /etc/ssl/certs/ca-certificates.crt; fi
}

in_root() {
    chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive QT_QPA_PLATFORM=offscreen PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_CERT="$(pip_cert)" "$@"
}

command=${1:-test}
[ $# -gt 0 ] && shift
case $command in
    umount)
        unmount_all
        exit 0
        ;;
    test|shell) ;;
    *) say "unknown command '$command' (test, shell, umount)"; exit 2 ;;
esac

require_root
build_root
unmount_all
trap unmount_all EXIT
trap 'exit 130' INT TERM
mount_root

if [ "$command" = shell ]; then
    in_root /bin/bash -c "cd '$CHECKOUT' && exec bash -i"
    exit
fi

# Debian's make and the packages deps.sh lists; deps.sh installs only what is missing, then the venv.
in_root /bin/bash -c "command -v make >/dev/null || apt-get install -y -q make </dev/null >/dev/null"
in_root /bin/bash -c "cd '$CHECKOUT' && SYS_PYTHON=/usr/bin/python3 VENV=$VENV_IN_ROOT bash scripts/deps.sh"
versions=$(in_root $VENV_IN_ROOT/bin/python -c \
    'import sys, numpy; from qgis.core import Qgis; from osgeo import gdal; print(f"QGIS {Qgis.QGIS_VERSION}, Python {sys.version.split()[0]}, GDAL {gdal.__version__}, numpy {numpy.__version__}")')
say "lane: $versions"
quoted=$(printf ' %q' "$@")
in_root /bin/bash -c "cd '$CHECKOUT' && mkdir -p '$(dirname "$JUNIT_IN_LANE")' && mkdir -p -m 700 build/runtime-pytest-lts &&
    XDG_RUNTIME_DIR='$CHECKOUT/build/runtime-pytest-lts' VENV=$VENV_IN_ROOT VIRTUAL_ENV=$VENV_IN_ROOT \
    $VENV_IN_ROOT/bin/python -m pytest --junitxml='$JUNIT_IN_LANE' $quoted"

#!/bin/sh
# Install the returns-grading edge controller on a gateway (Raspberry Pi OS 64-bit, Debian 12):
#
#   sudo ./scripts/install.sh
#
# Creates the `edge` system user (in group dialout), a virtualenv in /opt/edge/venv with the package,
# /etc/edge (station, grading policy, catalog; existing files are never overwritten) with a root-only
# credentials folder, /var/lib/edge (journal, Numba cache), installs systemd/edge.service, warms the
# Numba cache as the service user and enables the unit. docs/deploy.md explains every step.
#
# Variables (for packaging and tests): DESTDIR (stage everything under this root; no user, no
# systemctl), PREFIX, CONFDIR, STATEDIR, UNITDIR, EDGE_USER, PYTHON, PACKAGE (what pip installs:
# this source tree by default, or a wheel), PIP_ARGS, SKIP_WARMUP=1, WITH_PYZBAR=1 (the optional pyzbar
# barcode backend and the system zbar library it loads; chosen by itself when an existing
# station.yaml sets `barcode_backend: pyzbar`).
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/edge}
CONFDIR=${CONFDIR:-/etc/edge}
STATEDIR=${STATEDIR:-/var/lib/edge}
UNITDIR=${UNITDIR:-/etc/systemd/system}
EDGE_USER=${EDGE_USER:-edge}
PYTHON=${PYTHON:-python3}
PACKAGE=${PACKAGE:-$SRC}
PIP_ARGS=${PIP_ARGS:-}
SKIP_WARMUP=${SKIP_WARMUP:-0}
WITH_PYZBAR=${WITH_PYZBAR:-}

say() { printf 'install: %s\n' "$*"; }
system_install=0
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ]; then
    system_install=1
elif [ -z "$DESTDIR" ]; then
    echo "install: run as root (sudo), or set DESTDIR to stage into a folder" >&2
    exit 1
fi

if [ "$system_install" = 1 ]; then
    if ! getent passwd "$EDGE_USER" >/dev/null; then
        say "creating system user $EDGE_USER"
        useradd --system --user-group --home-dir "$STATEDIR" --no-create-home --shell /usr/sbin/nologin "$EDGE_USER"
    fi
    # Serial scanners and scales belong to group dialout; the unit adds it as a supplementary group too.
    usermod -a -G dialout "$EDGE_USER"
else
    say "DESTDIR set: not creating user $EDGE_USER"
fi

if [ -z "$WITH_PYZBAR" ]; then
    WITH_PYZBAR=0
    if grep -Eq '^[[:space:]]*barcode_backend:[[:space:]]*"?pyzbar' "$DESTDIR$CONFDIR/station.yaml" 2>/dev/null; then
        say "$CONFDIR/station.yaml uses the pyzbar barcode backend: installing it"
        WITH_PYZBAR=1
    fi
fi
requirement="$PACKAGE"
if [ "$WITH_PYZBAR" = 1 ]; then
    requirement="$PACKAGE[pyzbar]"
    if [ "$system_install" = 1 ]; then
        bash "$SRC/scripts/ensure-zbar.sh"
    else
        say "DESTDIR set: not installing the system zbar library; the target needs libzbar0 for pyzbar"
    fi
fi

VENV="$DESTDIR$PREFIX/venv"
say "virtualenv $VENV"
"$PYTHON" -m venv "$VENV"
# shellcheck disable=SC2086  # PIP_ARGS is a list of options
"$VENV/bin/python" -m pip install --quiet $PIP_ARGS "$requirement"

install -d -m 0755 "$DESTDIR$PREFIX/share/docs" "$DESTDIR$PREFIX/share/config"
install -m 0644 "$SRC/README.md" "$DESTDIR$PREFIX/share/"
install -m 0644 "$SRC"/docs/*.md "$DESTDIR$PREFIX/share/docs/"
install -m 0644 "$SRC"/config/station.example.yaml "$SRC"/config/grading.yaml "$SRC"/config/catalog.csv \
    "$DESTDIR$PREFIX/share/config/"

say "configuration $DESTDIR$CONFDIR"
install -d -m 0755 "$DESTDIR$CONFDIR"
install -d -m 0700 "$DESTDIR$CONFDIR/credentials"
for pair in station.yaml:station.example.yaml grading.yaml:grading.yaml catalog.csv:catalog.csv; do
    target=${pair%%:*}
    source=${pair#*:}
    if [ -e "$DESTDIR$CONFDIR/$target" ]; then
        say "keeping existing $CONFDIR/$target"
    else
        install -m 0644 "$SRC/config/$source" "$DESTDIR$CONFDIR/$target"
    fi
done

install -d -m 0750 "$DESTDIR$STATEDIR" "$DESTDIR$STATEDIR/numba-cache"
if [ "$system_install" = 1 ]; then
    chown -R "$EDGE_USER:$EDGE_USER" "$STATEDIR"
fi

install -d -m 0755 "$DESTDIR$UNITDIR"
install -m 0644 "$SRC/systemd/edge.service" "$DESTDIR$UNITDIR/edge.service"

if [ "$SKIP_WARMUP" != 1 ]; then
    say "warming the Numba cache (the first time compiles; a few minutes on a Pi)"
    cache="$DESTDIR$STATEDIR/numba-cache"
    if [ "$system_install" = 1 ]; then
        # As the service user, so the cache files belong to it and match what the service loads.
        runuser -u "$EDGE_USER" -- "$VENV/bin/edge" warm-up --cache-dir "$cache"
    else
        "$VENV/bin/edge" warm-up --cache-dir "$cache"
    fi
fi

"$VENV/bin/edge" check-config "$DESTDIR$CONFDIR/station.yaml" || say "edit $CONFDIR/station.yaml before starting"

if [ "$system_install" = 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable edge.service
    say "enabled edge.service; after editing $CONFDIR/station.yaml: systemctl start edge"
else
    say "no systemd here (or DESTDIR): run $PREFIX/venv/bin/edge run --config $CONFDIR/station.yaml"
fi

#!/usr/bin/env bash
# Installs everything this project needs on a fresh Debian 12 machine (run as root, or with sudo available).
# System packages come from .ci/apt/*.txt (one file per component, one package per line);
# Python packages go into ./.venv from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
mapfile -t pkgs < <(cat .ci/apt/*.txt | sed -e 's/#.*//' -e '/^[[:space:]]*$/d' | sort -u)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[host,test,dev]"
# The containerd shim (runtime type io.containerd.contrast-cc.v2) on PATH: a launcher that runs this
# checkout's venv (-P: containerd runs shims with the bundle as working directory, never on sys.path).
SHIM=/usr/local/bin/containerd-shim-contrast-cc-v2
printf '#!/bin/sh\nexec %s -P -m runtime "$@"\n' "$(pwd)/.venv/bin/python" | $SUDO tee "$SHIM.tmp" >/dev/null
$SUDO chmod 0755 "$SHIM.tmp" && $SUDO mv -f "$SHIM.tmp" "$SHIM"

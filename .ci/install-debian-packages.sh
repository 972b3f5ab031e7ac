#!/bin/sh
# Debian/Ubuntu packages for headless rendering: EGL (Mesa), with OSMesa as the fallback.
# Physics and training need none of them. Used by the README's install line and by .ci/run.
set -e
PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install EGL or OSMesa with your package manager (Debian names: $PACKAGES)"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
echo "installed: $PACKAGES"

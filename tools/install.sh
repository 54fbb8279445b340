#!/usr/bin/env bash
# Install contimg with its test dependencies, and Debian's chromium (the browser tests drive it)
# when it is missing. Run from anywhere; uses sudo for apt when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing Debian's chromium for the browser tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
python -m pip install --quiet --disable-pip-version-check -e '.[test]'

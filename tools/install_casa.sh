#!/usr/bin/env bash
# Install CASA (casatools + casatasks from PyPI) in a venv of its own, for the validation tools
# that compare contimg with CASA (tools/casa_ngc5921.py). CASA is never a dependency of contimg:
# nothing here touches contimg's environment or pyproject.toml.
#
#   bash tools/install_casa.sh            # venv in /work/casa-venv (or $CASA_VENV)
#   $CASA_VENV/bin/python tools/casa_ngc5921.py --help
#
# Idempotent: reuses an existing venv whose packages already match, and rewrites ~/.casa/config.py
# only when its content would change. Offline: CASA's measures come from python-casacore's
# bundled casacore/data (IERS, leap seconds, observatories), its data (setjy's flux models,
# VLA gain curves, antenna responses) from the casadata package; automatic updates are off, so
# CASA never tries the network at start.
set -euo pipefail
VENV="${CASA_VENV:-/work/casa-venv}"
PY="${PYTHON:-python3}"
# 6.7.0.31 is the newest casatools/casatasks with a wheel for Python 3.11.
PKGS=(casatools==6.7.0.31 casatasks==6.7.0.31 casadata six python-casacore pyuvdata numpy astropy)

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" - <<'PYEOF' 2>/dev/null
import importlib.metadata as md
assert md.version("casatools") == "6.7.0.31" and md.version("casatasks") == "6.7.0.31"
for p in ("casadata", "six", "python-casacore", "pyuvdata", "numpy", "astropy"):
    md.version(p)
PYEOF
then
  echo "installing ${PKGS[*]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}"
fi

SP="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MEASURES="$SP/casacore/data"
DATA="$SP/casadata/__data__"
for d in "$MEASURES/geodetic" "$MEASURES/ephemerides" "$DATA/nrao/VLA/CalModels"; do
  [ -d "$d" ] || { echo "missing $d" >&2; exit 1; }
done

mkdir -p "$HOME/.casa"
CFG="$HOME/.casa/config.py"
NEW="$(cat <<CFGEOF
# Written by contimg's tools/install_casa.sh: CASA offline (no measures or data downloads).
measurespath = "$MEASURES"
# measurespath first, so the IERS tables CASA finds through datapath are the same ones
datapath = ["$MEASURES", "$DATA"]
measures_auto_update = False
data_auto_update = False
# One log under ~/.casa, not a casa-<date>.log in every working folder; tools pick their own
# with casalog.setlogfile.
logfile = "$HOME/.casa/casa.log"
log2term = False
skipnetworkcheck = True
CFGEOF
)"
if [ ! -f "$CFG" ] || [ "$(cat "$CFG")" != "$NEW" ]; then
  if [ -f "$CFG" ]; then cp "$CFG" "$CFG.bak"; echo "previous $CFG kept as $CFG.bak"; fi
  printf '%s\n' "$NEW" > "$CFG"
  echo "wrote $CFG"
fi

# Smoke test: casatools starts offline and sees the measures and the flux-model data.
"$VENV/bin/python" - <<'PYEOF'
import casatools
me = casatools.measures()
assert me.observatory("VLA")["refer"], "no VLA position in the measures data"
print("casatools", casatools.version_string(), "OK offline;", "datapath:", casatools.ctsys.getpath()[:1])
PYEOF

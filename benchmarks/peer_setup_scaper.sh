#!/usr/bin/env bash
# Peer baseline for issue #2: a separate venv (outside the repo) with Scaper 1.6.5, for
# benchmarks/render_scaper_peer.py. Never touches the workspace venv.
#   bash benchmarks/peer_setup_scaper.sh [VENV_DIR]        (default /tmp/scaper-venv)
# Needs the `sox` binary (pysox shells out to it); installs it with apt-get when missing.
set -euo pipefail
VENV="${1:-/tmp/scaper-venv}"
PY="${SCAPER_PYTHON:-3.11}"

# scaper 1.6.5 also depends on soxbindings (libsox in-process), built from source here: needs sox.h
if ! command -v sox >/dev/null 2>&1 || [ ! -f /usr/include/sox.h ]; then
  apt-get update -qq && apt-get install -y -qq sox libsox-fmt-all libsox-dev
fi

[ -x "$VENV/bin/python" ] || uv venv --python "$PY" "$VENV"
# Pins: Scaper 1.6.5 (2022) and its deps as they were when it was current; numpy<2 (jams/scaper use
# pre-2.0 numpy API); librosa is not a Scaper 1.6.5 dependency (it uses sox for pitch/time-stretch).
uv pip install --python "$VENV/bin/python" \
  "scaper==1.6.5" "numpy<2" "scipy<1.14" \
  "setuptools<81"
echo "sox binary: $(sox --version 2>&1 | head -1)"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import platform
print("python", platform.python_version())
for p in ("scaper", "numpy", "scipy", "soundfile", "jams", "sox", "pyloudnorm", "pandas", "mir_eval"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "-")
import scaper  # noqa: F401  (import check)
EOF

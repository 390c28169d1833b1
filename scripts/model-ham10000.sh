#!/usr/bin/env bash
# Builds an optional, trained model directory for dermagate: sklesion's HAM10000 classifier
# converted to ONNX. NOT FOR CLINICAL USE (docs/model-ham10000.md).
#
# Why: the built-in demonstration model has random weights, so nobody can judge the device's
# output on a real photograph. The PyPI package `sklesion` (MIT) ships a trained Keras classifier
# of dermoscopic images (Xception, HAM10000's 7 classes) with its weights inside the wheel; this
# script turns it into what `inference.model_dir` expects (model.onnx + manifest.json), without
# committing an 85 MB binary and without touching the machine's own Python: everything it needs
# (TensorFlow, tf2onnx, onnx, onnxruntime, sklesion) goes into a throw-away virtual environment
# under a temporary directory, with pinned versions, and sklesion's wheel is pinned by its sha256
# so the weights are exactly the ones documented. The embedded demonstration model stays the
# default; nothing here is needed by `make run` or `make test`.
#
# Steps: venv + pinned installs -> scripts/model-ham10000.py (conversion at a fixed ONNX opset,
# metadata inputs folded to "unknown", checks against Keras and against sklesion's own pipeline
# with onnxruntime, manifest with ICD-11 MMS labels) -> the node itself loads the directory (a
# one-node local cluster: tract must read and run the graph, and the node checks it against the
# manifest) -> the directory is moved into place.
#
# Usage: scripts/model-ham10000.sh [--out DIR] [--opset N] [--keep-work] [--no-node-check]
#   --out DIR        model directory to write (default: models/ham10000 in the repository);
#                    replaced only when every step succeeded
#   --opset N        ONNX opset (default 13, as the demonstration model; tract-onnx 0.23 reads it)
#   --keep-work      keep the temporary directory (venv, logs) and print where it is
#   --no-node-check  skip loading the result in a dermagate node
#   PYTHON           the interpreter for the venv (default python3; needs 3.11 or 3.12 with venv)
#   DERMAGATE_BIN    the dermagate binary for the node check
#                    (default /var/tmp/dermagate-target/debug/dermagate; skipped when missing)
# Needs network access to PyPI only (about 400 MB of wheels) and about 2 GB of temporary disk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/models/ham10000
OPSET=13
KEEP_WORK=0
NODE_CHECK=1
PYTHON=${PYTHON:-python3}
BIN=${DERMAGATE_BIN:-/var/tmp/dermagate-target/debug/dermagate}

# The wheel whose model.keras is converted; its sha256 pins the exact weights.
SKLESION_VERSION=0.2.2
SKLESION_SHA256=a4ef0ebc99c6b0a7e1e55b1a0c3ba418f0d6d6cfdffd18a7dd414460a0f671b0
# The conversion tools. tensorflow-cpu is the same TensorFlow as the `tensorflow` sklesion names
# (2.17.0) without the GPU libraries; keras 3.3.3 is the version that saved model.keras; numpy and
# pandas are sklesion's own pins; protobuf 4.25 satisfies both TensorFlow 2.17 (<5) and onnx.
# sha256 of model.onnx from these pins at opset 13 (the conversion is deterministic: constant
# names are canonicalised). A different digest is reported, not fatal: the weights come from the
# pinned wheel and the checks against Keras and sklesion passed, but another CPU may round the
# folded constants differently.
EXPECTED_SHA256=cc72415edf498d13651b4cc11d0d604df479c19876d0eb1470ffbed593c5d9e3
PINS=(
    tensorflow-cpu==2.17.0
    keras==3.3.3
    numpy==1.26.4
    pandas==2.2.3
    protobuf==4.25.5
    onnx==1.17.0
    tf2onnx==1.17.0
    onnxruntime==1.19.2
    pillow==11.0.0
)

say() { printf 'model-ham10000: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --opset) OPSET=${2:?--opset needs a number}; shift 2 ;;
        --keep-work) KEEP_WORK=1; shift ;;
        --no-node-check) NODE_CHECK=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON)"
"$PYTHON" - <<'EOF' || die "needs Python 3.11 or 3.12 (sklesion needs >= 3.11, TensorFlow 2.17 <= 3.12)"
import sys
sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)
EOF
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON has no venv/ensurepip (Debian: apt-get install python3-venv)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/model-ham10000.XXXXXX")
NODE_DIR=$WORK/node-check
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -f "$NODE_DIR/cluster.json" ]; then
        "$BIN" local down --dir "$NODE_DIR" >/dev/null 2>&1 || true
    fi
    if [ "$KEEP_WORK" = 1 ] || [ "$status" != 0 ]; then
        say "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT INT TERM

say "virtual environment in $WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
PY=$WORK/venv/bin/python
"$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
say "installing ${PINS[*]}"
"$PY" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
say "installing sklesion==$SKLESION_VERSION (wheel pinned by sha256; its TensorFlow pin is met by tensorflow-cpu)"
printf 'sklesion==%s --hash=sha256:%s\n' "$SKLESION_VERSION" "$SKLESION_SHA256" >"$WORK/sklesion.txt"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$WORK/sklesion.txt"

STAGE=$WORK/model
say "converting (TensorFlow's own log lines go to $WORK/convert.log)"
if ! TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES='' "$PY" "$ROOT/scripts/model-ham10000.py" \
    --out "$STAGE" --opset "$OPSET" --sklesion-version "$SKLESION_VERSION" >"$WORK/convert.log" 2>&1; then
    grep -v '^model-ham10000: ' "$WORK/convert.log" | tail -n 30 >&2 || true
    grep '^model-ham10000: ' "$WORK/convert.log" >&2 || true
    die "conversion failed (full log: $WORK/convert.log)"
fi
grep '^model-ham10000: ' "$WORK/convert.log" >&2
DIGEST=$(sha256sum "$STAGE/model.onnx" | cut -d' ' -f1)
if [ "$OPSET" = 13 ] && [ "$DIGEST" != "$EXPECTED_SHA256" ]; then
    say "note: sha256(model.onnx) = $DIGEST, not the recorded $EXPECTED_SHA256 (see the comment on EXPECTED_SHA256)"
fi
"$PY" -m pip freeze --disable-pip-version-check >"$STAGE/build-environment.txt"
"$PY" -c 'import sys; print("python", sys.version.split()[0])' >>"$STAGE/build-environment.txt"

if [ "$NODE_CHECK" = 1 ]; then
    if [ -x "$BIN" ]; then
        say "loading it in a one-node dermagate cluster ($BIN)"
        if ! DERMAGATE_INFERENCE__MODEL_DIR=$STAGE "$BIN" local up --nodes 1 --dir "$NODE_DIR" >"$WORK/node-check.out" 2>&1; then
            cat "$WORK/node-check.out" >&2
            cat "$NODE_DIR"/logs/*.log >&2 2>/dev/null || true
            die "the node refused the model (see above)"
        fi
        LOADED=$(grep -h 'model loaded' "$NODE_DIR"/logs/*.log || true)
        [ -n "$LOADED" ] || { cat "$NODE_DIR"/logs/*.log >&2 || true; die "the node did not report the model as loaded"; }
        say "node: ${LOADED#*INFO }"
        "$BIN" local down --dir "$NODE_DIR" >/dev/null
        rm -rf "$NODE_DIR"
    else
        say "no dermagate binary at $BIN: skipping the node check (set DERMAGATE_BIN, or build first)"
    fi
fi

mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
say "done: $OUT"
say "use it with: DERMAGATE_INFERENCE__MODEL_DIR=$OUT make run   (or [inference] model_dir = \"$OUT\")"

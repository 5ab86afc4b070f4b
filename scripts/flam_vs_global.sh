#!/usr/bin/env bash
# FLAM vs FLAM-Global on real sound at CPU scale: render train + held-out mixtures from a corpus, train
# configs/train/tiny-cpu.yaml (FLAM: global + frame-wise losses) and configs/train/tiny-cpu-global.yaml
# (FLAM-Global: global loss only) with the same encoders, steps and clips per step, evaluate both on the
# held-out mixtures (sources never seen in training) and compare them. Results: docs/RESULTS.md.
#
#   scripts/flam_vs_global.sh [CORPUS] [OUT]        # defaults: ../shared/corpus/dev runs/flam_vs_global
#
# Environment: STEPS (600), TRAIN_MIXTURES (5120), HELDOUT_MIXTURES (512), PARALLEL (1: train both at once,
# one thread each; 0: one after the other with all cores). Every stage is resumable: re-running the script
# skips finished stages (rendering resumes by shard, training resumes from its latest checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-../shared/corpus/dev}
OUT=${2:-runs/flam_vs_global}
STEPS=${STEPS:-600}
TRAIN_MIXTURES=${TRAIN_MIXTURES:-5120}
HELDOUT_MIXTURES=${HELDOUT_MIXTURES:-512}
PARALLEL=${PARALLEL:-1}
export HF_HUB_OFFLINE=1
[ -d "$CORPUS" ] || { echo "flam_vs_global: corpus folder $CORPUS not found" >&2; exit 2; }
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*"; }

render() {  # SPLIT N — skipped once the split's index.json exists (delete OUT/data to re-render)
    if [ -f "$OUT/data/mixtures/$1/index.json" ]; then log "render $1: done already"; return 0; fi
    log "render $2 $1 mixtures from $CORPUS"
    uv run python pipelines/render_mixtures.py --corpus "$CORPUS" --out "$OUT/data" --split "$1" \
        --num-mixtures "$2" --shard-size 256 >"$OUT/render_$1.log" 2>&1
}
render train "$TRAIN_MIXTURES"
render heldout "$HELDOUT_MIXTURES"

train() {  # NAME CONFIG [trainer args…]
    local name=$1 config=$2; shift 2
    local resume=()
    [ -f "$OUT/$name/final/model.safetensors" ] && { log "$name: trained already"; return 0; }
    compgen -G "$OUT/$name/checkpoints/step-*" >/dev/null && resume=(--resume)
    log "train $name ($config, $STEPS steps${resume:+, resuming})"
    uv run python -m model.train --config "$config" --out "$OUT/$name" --steps "$STEPS" "${resume[@]}" \
        "$@" optim.total_steps="$STEPS" run.progress=false >"$OUT/$name.log" 2>&1
}
FLAM_ARGS=(--mixtures "$OUT/data/mixtures/train" --audio-text "$OUT/data/audio_text/train")
GLOBAL_ARGS=(--audio-text "$OUT/data/audio_text/train")
if [ "$PARALLEL" = 1 ]; then
    OMP_NUM_THREADS=1 train flam configs/train/tiny-cpu.yaml "${FLAM_ARGS[@]}" & a=$!
    OMP_NUM_THREADS=1 train global configs/train/tiny-cpu-global.yaml "${GLOBAL_ARGS[@]}" & b=$!
    wait $a; wait $b
else
    train flam configs/train/tiny-cpu.yaml "${FLAM_ARGS[@]}"
    train global configs/train/tiny-cpu-global.yaml "${GLOBAL_ARGS[@]}"
fi

cat >"$OUT/eval.yaml" <<YAML
datasets:
  heldout_mixtures: {kind: mixtures, path: $OUT/data/mixtures/heldout}
  heldout_audio_text: {kind: audio-text, path: $OUT/data/audio_text/heldout}
settings: {detection_plots: 6}
YAML
for name in flam global; do
    log "evaluate $name on the held-out mixtures"
    uv run python -m eval.run_all --checkpoint "$OUT/$name/final" --config "$OUT/eval.yaml" \
        --out "$OUT/$name/eval" >"$OUT/$name.eval.log" 2>&1
done
uv run python scripts/compare_runs.py --run FLAM="$OUT/flam/eval" --run FLAM-Global="$OUT/global/eval" \
    --dataset heldout_mixtures --mixtures "$OUT/data/mixtures/heldout" --plots 6 --out "$OUT/compare"
log "done: $OUT/compare/comparison.md, $OUT/compare/detection_*.png, calibration plots in $OUT/*/eval/plots/"

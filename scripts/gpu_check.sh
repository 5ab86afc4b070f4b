#!/usr/bin/env bash
# GPU check: the whole toolkit on one GPU machine in under 8 minutes, one summary table at the end.
#
#   scripts/gpu_check.sh [--cpu-smoke] [--corpus DIR] [--work DIR] [--stages render,bench,train,eval]
#
# Stages (each under its own time limit; a failed stage is one line in the table and the others still run,
# except that train needs rendered shards and eval needs the trained checkpoint):
#   render  pipelines/render_mixtures.py on the corpus (default corpus/demo): 256 held-out + 3,072 train mixtures
#   bench   benchmarks/train_step.py at the paper's model size (HTSAT-base + RoBERTa-base, bf16, B=128 per stream)
#           with LAION-CLAP's own eager step (the peer) in the same run; the peer needs its sources in $PEER_SRC
#           (default .devcarry/peer_src), else its row says why it is missing
#   train   configs/train/tiny-cpu.yaml on the rendered shards on the GPU (32 + 32 clips per step, 8 loader
#           workers, resampling in the step) until its 400 steps or the time limit (SIGTERM: a clean stop with
#           OUT/final written)
#   eval    python -m eval.run_all on the held-out mixtures and audio-text clips
# Output: $WORK/{stages.tsv,*.log,data/,tiny/,eval/,train_step.json} (WORK default runs/gpu_check), the table
# on stdout, and $OUT/gpu_check.json (+ the table as $OUT/gpu_check.txt) when OUT is set.
# --cpu-smoke shrinks every stage (64 + 32 mixtures, HTSAT-small B=1 step, 3 training steps, 16 clips
# evaluated) so the same plumbing runs on a CPU in minutes. Exit status: 0 every stage ok, 1 a stage failed,
# 2 bad arguments or no CUDA without --cpu-smoke. Environment: PY (the Python command; default
# `uv run --frozen python`, or python3 with the workspace packages on PYTHONPATH where uv is absent),
# PEER_SRC, PEER_PY (interpreter for the peer, needs h5py; default $PY), TEXT_PATH (text encoder folder for
# the train stage instead of the MiniLM package), TRAIN_ARGS (extra trainer key=value overrides).
# Details and the time budget: docs/gpu_check.md.
set -u -o pipefail
cd "$(dirname "$0")/.."

SMOKE=0 CORPUS=corpus/demo WORK=runs/gpu_check STAGES=render,bench,train,eval
die() { echo "gpu_check: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) SMOKE=1 ;;
        --corpus) [ $# -ge 2 ] || die "--corpus needs a folder"; CORPUS=$2; shift ;;
        --work) [ $# -ge 2 ] || die "--work needs a folder"; WORK=$2; shift ;;
        --stages) [ $# -ge 2 ] || die "--stages needs a list"; STAGES=$2; shift ;;
        -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
for s in ${STAGES//,/ }; do
    case "$s" in render | bench | train | eval) ;; *) die "unknown stage $s (render, bench, train, eval)" ;; esac
done
want() { [[ ",$STAGES," == *",$1,"* ]]; }
[ -d "$CORPUS" ] || die "corpus folder $CORPUS not found"

export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -z "${PY:-}" ]; then
    if command -v uv >/dev/null; then
        PY="uv run --frozen python"
    else  # a machine without uv (e.g. a bare GPU image): the workspace sources, plus carried wheels if any
        PY=python3
        src=$(printf '%s:' "$PWD"/packages/*/src)
        export PYTHONPATH="${src%:}${PYTHONPATH:+:$PYTHONPATH}"
        if compgen -G ".devcarry/whl/*.whl" >/dev/null; then
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                .devcarry/whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
        fi
    fi
fi
read -ra PYA <<<"$PY"
PEER_PY=${PEER_PY:-$PY}
if [ "$SMOKE" = 0 ]; then  # nvidia-smi first: refusing on a CPU machine costs no torch import
    CUDA=0
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        CUDA=$("${PYA[@]}" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null) ||
            die "$PY cannot import torch"
    fi
    [ "$CUDA" = 1 ] || die "no CUDA device visible to $PY; on a CPU run --cpu-smoke"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'
fi

if [ "$SMOKE" = 1 ]; then
    N_TRAIN=64 N_HELD=32 SHARD=32
    T_RENDER=300 T_BENCH=600 T_TRAIN=400 T_EVAL=300
    BENCH=(--audio small --batch 1 --steps 1 --warmup 0 --no-flops --peer-timeout 240)
    TRAIN=(--steps 3 data.num_workers=1)
    EVAL=(--max-clips 16 --plots 1)
else  # 80 + 170 + 150 + 60 s of limits (+ about 10 s of set-up): the whole fits in 8 minutes
    N_TRAIN=3072 N_HELD=256 SHARD=256
    T_RENDER=80 T_BENCH=170 T_TRAIN=150 T_EVAL=60
    BENCH=(--audio base --batch 128 --steps 5 --warmup 2 --peer-timeout 80)
    TRAIN=(data.global_batch=32 data.sed_batch=32 data.num_workers=8 data.augment_in=step run.checkpoint_every=100)
    EVAL=(--plots 2)
fi
[ -n "${TEXT_PATH:-}" ] && TRAIN+=("model.text_path=$TEXT_PATH")
read -ra EXTRA <<<"${TRAIN_ARGS:-}"

mkdir -p "$WORK" || die "cannot create $WORK"
: >"$WORK/stages.tsv"
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
# stage NAME LIMIT_S CMD…: run under `timeout` (SIGTERM, then SIGKILL 30 s later), output to WORK/NAME.log
stage() {
    local name=$1 limit=$2 t0 rc secs
    shift 2
    log "$name (limit ${limit} s): $*"
    t0=$EPOCHREALTIME
    timeout -s TERM -k 30 "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$limit" >>"$WORK/stages.tsv"
    [ "$rc" = 0 ] || log "$name: exit status $rc — $(tail -n 1 "$WORK/$name.log")"
}
skip() { printf '%s\tskipped\t0\t0\t%s\n' "$1" "$2" >>"$WORK/stages.tsv"; log "$1: skipped ($2)"; }

DATA="$WORK/data"
if want render; then
    rm -rf "$DATA"  # a fresh render each time: the stage measures rendering, not resuming
    # held-out first (small): if the train split runs out of time, its complete shards still feed training
    stage render "$T_RENDER" bash -c "set -e
        ${PY} pipelines/render_mixtures.py --corpus '$CORPUS' --out '$DATA' --split heldout \
            --num-mixtures $N_HELD --shard-size $SHARD
        ${PY} pipelines/render_mixtures.py --corpus '$CORPUS' --out '$DATA' --split train \
            --num-mixtures $N_TRAIN --shard-size $SHARD"
fi
if want bench; then
    stage bench "$T_BENCH" "${PYA[@]}" benchmarks/train_step.py "${BENCH[@]}" --peer --peer-python "$PEER_PY" \
        --json "$WORK/train_step.json"
fi
if want train; then
    if ! compgen -G "$DATA/mixtures/train/*.tar" >/dev/null || ! compgen -G "$DATA/audio_text/train/*.tar" >/dev/null; then
        skip train "no training shards in $DATA (the render stage failed or did not run)"
    else
        rm -rf "$WORK/tiny"
        stage train "$T_TRAIN" "${PYA[@]}" -m model.train --config configs/train/tiny-cpu.yaml --out "$WORK/tiny" \
            --mixtures "$DATA/mixtures/train" --audio-text "$DATA/audio_text/train" "${TRAIN[@]}" \
            run.progress=false run.tensorboard=false ${EXTRA[@]+"${EXTRA[@]}"}
    fi
fi
if want eval; then
    if [ ! -f "$WORK/tiny/final/model.safetensors" ]; then
        skip eval "no checkpoint at $WORK/tiny/final (the train stage failed or did not run)"
    elif ! compgen -G "$DATA/mixtures/heldout/*.tar" >/dev/null; then
        skip eval "no held-out shards in $DATA/mixtures/heldout"
    else
        rm -rf "$WORK/eval"
        stage eval "$T_EVAL" "${PYA[@]}" -m eval.run_all --checkpoint "$WORK/tiny/final" \
            --mixtures "$DATA/mixtures/heldout" --audio-text "$DATA/audio_text/heldout" --out "$WORK/eval" "${EVAL[@]}"
    fi
fi
"${PYA[@]}" scripts/gpu_check_summary.py "$WORK" --smoke "$SMOKE" --corpus "$CORPUS" ${OUT:+--out "$OUT"}

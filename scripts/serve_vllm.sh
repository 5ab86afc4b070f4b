#!/usr/bin/env bash
# Start the captioning LLM behind an OpenAI-compatible endpoint with vLLM, in its OWN environment
# (vLLM pins its own torch/CUDA; it never goes into the FLAM uv workspace). See docs/captioning.md.
#
#   scripts/serve_vllm.sh                                   # Mixtral-8x7B-Instruct (paper §4.1), all GPUs
#   scripts/serve_vllm.sh --model Qwen/Qwen2.5-7B-Instruct --tp 1 --port 8001
#   FLAM_LLM_API_KEY=... scripts/serve_vllm.sh              # require a bearer key (read from the env only)
#   scripts/serve_vllm.sh --dry-run                         # print the command, start nothing
# Mixtral's chat template rejects a system role: keep pipelines/caption.py at --system-prompt merged (default).
#
# Options: --model NAME  --tp N (tensor parallel size; default: number of visible GPUs)  --port P
#          --host H (default 0.0.0.0)  --venv DIR (default ~/.cache/flam/venv-vllm; created with uv if missing)
#          --max-model-len N (default 4096)  --gpu-mem F (default 0.90)  --dry-run
#          anything after `--` goes to `vllm serve` unchanged.
set -euo pipefail

MODEL="mistralai/Mixtral-8x7B-Instruct-v0.1"
TP=""
PORT=8000
HOST="0.0.0.0"
VENV="${HOME}/.cache/flam/venv-vllm"
MAX_LEN=4096
GPU_MEM=0.90
DRY_RUN=0
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --tp|--tensor-parallel-size) TP="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --max-model-len) MAX_LEN="$2"; shift 2 ;;
    --gpu-mem) GPU_MEM="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "serve_vllm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z "$TP" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    TP=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
  fi
  TP=${TP:-1}
  [[ "$TP" -ge 1 ]] || TP=1
fi

CMD=(vllm serve "$MODEL" --host "$HOST" --port "$PORT" --tensor-parallel-size "$TP"
     --max-model-len "$MAX_LEN" --gpu-memory-utilization "$GPU_MEM" --served-model-name "$MODEL")
# The key is passed through vLLM's own VLLM_API_KEY variable, never on the command line (ps would show it).
KEY="${FLAM_LLM_API_KEY:-${OPENAI_API_KEY:-}}"

if [[ "$DRY_RUN" == 1 ]]; then
  echo "${CMD[*]} ${EXTRA[*]:-}"
  [[ -n "$KEY" ]] && echo "(bearer key required: set from FLAM_LLM_API_KEY/OPENAI_API_KEY via VLLM_API_KEY)"
  exit 0
fi

if [[ ! -x "$VENV/bin/vllm" ]]; then
  echo "creating $VENV with vLLM (one time; needs network + CUDA drivers)" >&2
  mkdir -p "$(dirname "$VENV")"
  uv venv --python 3.12 "$VENV"
  uv pip install --python "$VENV/bin/python" vllm
fi

echo "serving $MODEL on http://$HOST:$PORT/v1 (tensor parallel $TP)" >&2
if [[ -n "$KEY" ]]; then export VLLM_API_KEY="$KEY"; fi
exec "$VENV/bin/${CMD[0]}" "${CMD[@]:1}" "${EXTRA[@]}"

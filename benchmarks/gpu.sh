#!/usr/bin/env bash
# Everything a session lent a GPU should run, in one go (issue 15, item 6): the GPU benchmark (training MFU and
# batch-1 decoding against transformers, benchmarks/bench_gpu.py) and the tests marked `gpu`. Installs nothing:
# it needs the project installed with a CUDA build of torch. Results go to $OUT (the device tool's folder that
# comes back) or a fresh temporary folder, and are printed.
#
#   bash benchmarks/gpu.sh            # on the GPU machine
#   bash benchmarks/gpu.sh --smoke    # the same script on a CPU, a tiny model, seconds (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"

if [ "${1:-}" = "--smoke" ]; then
  python benchmarks/bench_gpu.py --smoke > "$out/bench_gpu.json"
  cat "$out/bench_gpu.json"
  exit 0
fi

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: this torch sees no CUDA device (run with --smoke to check the script on a CPU)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
status=0
python benchmarks/bench_gpu.py "${@}" > "$out/bench_gpu.json" 2> "$out/bench_gpu.log" || status=$?
cat "$out/bench_gpu.json"
python -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/pytest_gpu.txt" || status=$?
echo "gpu.sh: results in $out"
exit "$status"

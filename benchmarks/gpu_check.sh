#!/bin/bash
# The GPU checks behind benchmarks/RESULTS_GPU.md in one go (about 7 min on one H200), run from
# the repository root on a CUDA machine with lengen installed: the CUDA tests, the quickstart on
# the GPU, then benchmarks/gpu.py. Logs and tables go to $OUT (default gpu_out/).
set -u
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch, lightning, transformers as t; print('torch', torch.__version__,
  'CUDA', torch.version.cuda, 'lightning', lightning.__version__, 'transformers', t.__version__)"; } \
  > "$out/machine.txt" 2>&1

start=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 -k cuda \
  tests/test_attention.py tests/test_contract.py > "$out/tests.log" 2>&1
echo "rc=$? seconds=$(( $(date +%s) - start ))" >> "$out/tests.log"

start=$(date +%s)
gpu="--trainer.accelerator gpu --trainer.devices 1"
{ timeout 150 lengen fit --config configs/quickstart.yaml $gpu \
  && timeout 90 lengen test --config configs/quickstart.yaml $gpu --ckpt_path last; } \
  > "$out/quickstart.log" 2>&1
echo "rc=$? seconds=$(( $(date +%s) - start ))" >> "$out/quickstart.log"

timeout 110 python3 benchmarks/gpu.py --sections backends --output "$out/gpu_backends.md" \
  > "$out/bench.log" 2>&1
echo "rc=$?" >> "$out/bench.log"
timeout 70 python3 benchmarks/gpu.py --sections lengths --output "$out/gpu_lengths.md" \
  >> "$out/bench.log" 2>&1
echo "rc=$?" >> "$out/bench.log"

#!/usr/bin/env bash
# float32 against bf16-mixed on CPU: the quickstart (configs/quickstart.yaml; seeds from $SEEDS,
# default 0) and a
# short byte-level LM run (configs/experiments/alibi_vs_sinusoidal_ppl.yaml, 300 steps), each
# trained and tested with both precisions. Logs and results.json under runs/precision/; the
# metrics are printed by the test logs (the per-length table). One job at a time:
#   OMP_NUM_THREADS=1 bash benchmarks/precision_runs.sh          # docs/performance.md: seed 0
set -euo pipefail
out=${OUT:-runs/precision}
mkdir -p "$out"
run() {  # name, then the lengen arguments
  local name=$1; shift
  local start=$SECONDS
  lengen fit "$@" --trainer.default_root_dir "$out/$name" > "$out/$name.fit.log" 2>&1
  echo "$name fit $((SECONDS - start)) s" | tee -a "$out/times.txt"
  lengen test "$@" --trainer.default_root_dir "$out/$name" --ckpt_path last > "$out/$name.test.log" 2>&1
}
for seed in ${SEEDS:-0}; do
  for precision in 32-true bf16-mixed; do
    run "quickstart-$precision-seed$seed" --config configs/quickstart.yaml \
      --seed_everything "$seed" --trainer.precision "$precision"
  done
done
for precision in 32-true bf16-mixed; do
  run "lm-$precision" --config configs/experiments/alibi_vs_sinusoidal_ppl.yaml \
    --trainer.max_steps 300 --trainer.precision "$precision"
done

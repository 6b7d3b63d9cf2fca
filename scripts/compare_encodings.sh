#!/usr/bin/env bash
# The five-encoding comparison (Kazemnejad et al. 2023) on copy, reverse, addition and SCAN, 3 seeds,
# then one `lengen report` over all runs. Override any list or the step count from the env:
#   TASKS="copy" ENCODINGS="nope alibi" SEEDS="0" STEPS=300 scripts/compare_encodings.sh
# Extra arguments go to every `lengen fit` and `lengen test`, e.g. --data.init_args.batch_size 32.
# Runs go to $RUNS/<task>/<encoding>/seed<seed>, the report to $OUT (refused if it exists: set
# OUT or pass REPORT_ARGS=--overwrite). A seed sets seed_everything (the initialisation); the
# training and test examples come from data.seed (0), the same for every seed.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-"copy reverse addition scan"}
ENCODINGS=${ENCODINGS:-"nope sinusoidal t5_bias alibi rope"}
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-1500}
RUNS=${RUNS:-runs/compare_encodings}
OUT=${OUT:-reports/compare_encodings}
EXPERIMENT=configs/experiments/encodings
if [[ -e "$OUT/report.md" && " ${REPORT_ARGS:-} " != *" --overwrite "* ]]; then
  echo "$(basename "$0"): $OUT/report.md exists; set OUT or REPORT_ARGS=--overwrite" >&2
  exit 2  # checked before any training, not after it
fi

for task in $TASKS; do
  for encoding in $ENCODINGS; do
    for seed in $SEEDS; do
      root="$RUNS/$task/$encoding/seed$seed"
      configs=(--config "$EXPERIMENT/base.yaml" --config "$EXPERIMENT/$task.yaml"
               --config "configs/pe/$encoding.yaml" --seed_everything "$seed"
               --trainer.default_root_dir "$root" "$@")
      echo "== $task $encoding seed $seed"
      start=$(date +%s)
      mkdir -p "$root"
      # Validating at the last step also writes the checkpoint that `lengen test` loads.
      lengen fit "${configs[@]}" --trainer.max_steps "$STEPS" \
        --trainer.val_check_interval "$(( STEPS < 500 ? STEPS : 500 ))" > "$root/fit.log" 2>&1 \
        || { tail -5 "$root/fit.log"; exit 1; }
      lengen test "${configs[@]}" --ckpt_path last > "$root/test.log" 2>&1 \
        || { tail -5 "$root/test.log"; exit 1; }
      echo "   $(( $(date +%s) - start )) s"
    done
  done
done
lengen report "$RUNS" --out "$OUT" ${REPORT_ARGS:-}

#!/usr/bin/env bash
# Position Interpolation fine-tuning evaluated by passkey (Chen et al. 2023), at 2-core CPU scale.
#  1. base: RoPE trained on passkey contexts of 100-160 bytes (configs/experiments/passkey.yaml);
#     skipped when $RUNS/any/base already holds a checkpoint (the newest one is used);
#  2. per seed, two fine-tunes of the base on contexts of 160-320 bytes, same steps and data (the
#     seed sets `data.seed`: the training examples and the test examples):
#     Position Interpolation (RoPELinear, scale 2: configs/experiments/passkey_pi.yaml) and the
#     control, plain RoPE (direct extension: the same file with configs/pe/rope.yaml);
#  3. every model tested at 128-512 bytes (needle anywhere), and the base also with Position
#     Interpolation but no fine-tuning (RoPELinear, scale 2), then `lengen report` on presence
#     accuracy; the base and the seed-0 PI model also per needle location, then `lengen heatmap`.
# Env: SEEDS (default "0 1 2"), RUNS (runs/passkey_pi), OUT (reports/passkey_pi: refused if it
# exists, unless REPORT_ARGS=--overwrite). Extra arguments go to every `lengen fit` and `test`.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
RUNS=${RUNS:-runs/passkey_pi}
OUT=${OUT:-reports/passkey_pi}
LENGTHS="[128, 160, 256, 320, 384, 512]"
if [[ -e "$OUT/report.md" && " ${REPORT_ARGS:-} " != *" --overwrite "* ]]; then
  echo "$(basename "$0"): $OUT/report.md exists; set OUT or REPORT_ARGS=--overwrite" >&2
  exit 2  # checked before any training, not after it
fi
BASE=(--config configs/experiments/passkey.yaml)
PI=(--config configs/experiments/passkey.yaml --config configs/experiments/passkey_pi.yaml)
ROPE=("${PI[@]}" --config configs/pe/rope.yaml)

newest_checkpoint() { ls -t "$1"/lightning_logs/version_*/checkpoints/*.ckpt 2>/dev/null | head -1 || true; }

# logged ROOT NAME COMMAND...: run COMMAND with its output in ROOT/NAME.log; on failure show its end.
logged() {
  local root=$1 name=$2; shift 2
  mkdir -p "$root"
  "$@" > "$root/$name.log" 2>&1 || { tail -5 "$root/$name.log"; exit 1; }
}

test_at() {  # test_at ROOT CHECKPOINT CONFIG_ARGS...: test at every length, needle anywhere
  local root=$1 checkpoint=$2; shift 2
  logged "$root" test lengen test "$@" --ckpt_path "$checkpoint" \
    --data.init_args.eval_lengths "$LENGTHS" --trainer.default_root_dir "$root"
}

base_root="$RUNS/any/base"
base=$(newest_checkpoint "$base_root")
if [[ -z "$base" ]]; then
  echo "== base (RoPE, 100-160 bytes)"
  logged "$base_root" fit lengen fit "${BASE[@]}" --trainer.default_root_dir "$base_root" "$@"
  base=$(newest_checkpoint "$base_root")
else
  echo "== base: reusing $base"
fi
test_at "$base_root" "$base" "${BASE[@]}" "$@"
echo "== Position Interpolation without fine-tuning: the base tested at positions / 2"
test_at "$RUNS/any/base_pi" "$base" "${BASE[@]}" --model.pos_encoding RoPELinear \
  --model.pos_encoding.init_args.scale 2 "$@"

for seed in $SEEDS; do
  for arm in PI ROPE; do
    root="$RUNS/any/$arm/seed$seed"
    configs=("${PI[@]}")
    [[ $arm == ROPE ]] && configs=("${ROPE[@]}")
    echo "== fine-tune $arm seed $seed"
    seeded=("${configs[@]}" --seed_everything "$seed" --data.init_args.seed "$seed")
    logged "$root" fit lengen fit "${seeded[@]}" --model.init_from "$base" \
      --trainer.default_root_dir "$root" "$@"
    test_at "$root" "$(newest_checkpoint "$root")" "${seeded[@]}" "$@"
  done
done
lengen report "$RUNS/any" --metric presence_accuracy --out "$OUT" ${REPORT_ARGS:-}

pi_seed=$(echo $SEEDS | cut -d' ' -f1)
pi=$(newest_checkpoint "$RUNS/any/PI/seed$pi_seed")
for location in start middle end; do
  echo "== by location: $location"
  test_at "$RUNS/locations/base/$location" "$base" "${BASE[@]}" \
    --data.init_args.task.init_args.location "$location" "$@"
  test_at "$RUNS/locations/PI/$location" "$pi" "${PI[@]}" --seed_everything "$pi_seed" \
    --data.init_args.seed "$pi_seed" \
    --data.init_args.task.init_args.location "$location" "$@"
done
lengen heatmap "$RUNS/locations" --out "$OUT/heatmap" ${REPORT_ARGS:-}

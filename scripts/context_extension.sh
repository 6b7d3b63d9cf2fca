#!/usr/bin/env bash
# Training-free context extension of a RoPE model (issue #17, experiment 1): train two RoPE bases
# once, then test each checkpoint at 1-8x its training length with every method wrapped around
# (or rescaling) the trained RoPE, with no fine-tuning:
#  - language model: perplexity by length (configs/experiments/alibi_vs_sinusoidal_ppl.yaml with
#    RoPE, n_ctx L = 64, evaluated at 64..512);
#  - passkey: presence accuracy by length (needle anywhere) and by depth (needle at the start,
#    middle or end: `lengen heatmap`) (configs/experiments/passkey.yaml, 100-160 bytes, L = 160).
# Methods (METHODS) and their parameters, from each paper's recipe relative to L:
#   rope         plain RoPE (direct extrapolation)
#   pi           RoPELinear, scale = SCALE (Chen et al. 2023: s = target / training length)
#   ntk          RoPENTK, scale = SCALE (bloc97 2023)
#   yarn         YaRN, scale = SCALE, original_max_length L, beta 32/1 (Peng et al. 2023)
#   self_extend  SelfExtend, window L/4, group 12: extends to (L - W) G + W > 8L (Jin et al. 2024)
#   rerope       ReRoPE, window L/8 (Su 2023: 512 for 4096)
#   dca          DualChunkAttention, training_length L: chunk 3L/4 - L/16, local window L/16
#                (An et al. 2024, ChunkLlama's defaults)
#   sinks        AttentionSinks, 4 sinks + window L - 4: a cache of L tokens (Xiao et al. 2024)
# SCALE (8) is the largest test multiple; EXTRA_SCALES ("2 4") adds pi/ntk/yarn rows at those
# scales (perplexity and passkey by length, not by depth).
# Env: RUNS (runs/context_extension), OUT (reports/context_extension: refused if it exists unless
# REPORT_ARGS=--overwrite), PASSKEY_STEPS (6000), LM_STEPS (600), PASSKEY_LENGTHS,
# PASSKEY_EXAMPLES (32 per length and location), LM_EVAL_TOKENS (32768), LOCATIONS, PARTS
# (lm passkey), JOBS (1: test processes side by side).
# A base is trained only when its run folder holds no checkpoint (the newest one is used).
# The tests run in JOBS Python processes (one import of torch and Lightning for many tests).
set -euo pipefail
cd "$(dirname "$0")/.."
METHODS=${METHODS:-"rope pi ntk yarn self_extend rerope dca sinks"}
SCALE=${SCALE:-8}
EXTRA_SCALES=${EXTRA_SCALES-"2 4"}
RUNS=${RUNS:-runs/context_extension}
OUT=${OUT:-reports/context_extension}
PASSKEY_STEPS=${PASSKEY_STEPS:-6000}
LM_STEPS=${LM_STEPS:-600}
PASSKEY_LENGTHS=${PASSKEY_LENGTHS:-"[128, 160, 320, 640, 1280]"}
PASSKEY_EXAMPLES=${PASSKEY_EXAMPLES:-32}
LM_EVAL_TOKENS=${LM_EVAL_TOKENS:-32768}
LOCATIONS=${LOCATIONS-"start middle end"}
PARTS=${PARTS:-"lm passkey"}  # which base and tests: "lm", "passkey" or both
JOBS=${JOBS:-1}               # test processes run side by side
PASSKEY_L=160  # train_max_length of configs/experiments/passkey.yaml
LM_L=64        # n_ctx of configs/experiments/alibi_vs_sinusoidal_ppl.yaml
for part in $PARTS; do
  [[ $part == lm || $part == passkey ]] || { echo "$(basename "$0"): PARTS has '$part'; accepted: lm, passkey" >&2; exit 2; }
  report=$OUT/$([[ $part == lm ]] && echo perplexity || echo passkey)/report.md
  if [[ -e "$report" && " ${REPORT_ARGS:-} " != *" --overwrite "* ]]; then
    echo "$(basename "$0"): $report exists; set OUT or REPORT_ARGS=--overwrite" >&2
    exit 2  # checked before any training, not after it
  fi
done
LM=(--config configs/experiments/alibi_vs_sinusoidal_ppl.yaml --config configs/pe/rope.yaml)
PASSKEY=(--config configs/experiments/passkey.yaml)

newest_checkpoint() { ls -t "$1"/lightning_logs/version_*/checkpoints/*.ckpt 2>/dev/null | head -1 || true; }

train() {  # train ROOT STEPS CONFIG_ARGS...: fit unless ROOT has a checkpoint; print the checkpoint
  local root=$1 steps=$2; shift 2
  if [[ -z "$(newest_checkpoint "$root")" ]]; then
    mkdir -p "$root"
    echo "== train $root ($steps steps)" >&2
    local start=$(date +%s)
    # Validation writes the checkpoint that `lengen test` loads: at the last step for short runs.
    local check=(); (( steps < 300 )) && check=(--trainer.val_check_interval "$steps")
    lengen fit "$@" --trainer.max_steps "$steps" "${check[@]}" \
      --trainer.default_root_dir "$root" > "$root/fit.log" 2>&1 || { tail -5 "$root/fit.log" >&2; exit 1; }
    echo "   $(( $(date +%s) - start )) s" >&2
  fi
  newest_checkpoint "$root"
}

method_args() {  # method_args METHOD L SCALE: the --model options that test the RoPE checkpoint
  local e=--model.pos_encoding a=--model.pos_encoding.init_args
  case $1 in
    rope) ;;
    pi) echo "$e RoPELinear $a.scale $3" ;;
    ntk) echo "$e RoPENTK $a.scale $3" ;;
    yarn) echo "$e YaRN $a.scale $3 $a.original_max_length $2" ;;
    self_extend) echo "$e SelfExtend $a.encoding RoPE $a.group_size 12 $a.window $(( $2 / 4 ))" ;;
    rerope) echo "$e ReRoPE $a.encoding RoPE $a.window $(( $2 / 8 ))" ;;
    dca) echo "$e DualChunkAttention $a.encoding RoPE $a.training_length $2" ;;
    sinks) echo "$e AttentionSinks $a.encoding RoPE $a.sink_tokens 4 $a.window $(( $2 - 4 ))" ;;
    *) echo "$(basename "$0"): unknown method '$1'; accepted: rope pi ntk yarn self_extend rerope dca sinks" >&2
       exit 2 ;;
  esac
}

variants() {  # METHOD<space>SCALE for every run: the methods at SCALE, pi/ntk/yarn also at EXTRA_SCALES
  for m in $METHODS; do
    echo "$m $SCALE"
    if [[ $m == pi || $m == ntk || $m == yarn ]]; then
      for s in $EXTRA_SCALES; do echo "$m $s"; done
    fi
  done
}
for m in $METHODS; do method_args "$m" 1 1 > /dev/null; done  # unknown names fail before training

has() { [[ " $PARTS " == *" $1 "* ]]; }
has lm && lm_ckpt=$(train "$RUNS/lm/base" "$LM_STEPS" "${LM[@]}" "$@")
has passkey && passkey_ckpt=$(train "$RUNS/passkey/base" "$PASSKEY_STEPS" "${PASSKEY[@]}" "$@")

# One line per test: its run folder, a tab, then the `lengen test` arguments.
jobs="$RUNS/tests_${PARTS// /_}.tsv"
: > "$jobs"
while read -r m s; do
  name=$m; [[ $m == pi || $m == ntk || $m == yarn ]] && name=$m$s
  has lm && printf '%s\t%s\n' "$RUNS/lm/test/$name" "$(printf '%q ' "${LM[@]}" "$@") \
--ckpt_path $lm_ckpt --data.init_args.eval_tokens $LM_EVAL_TOKENS $(method_args "$m" $LM_L "$s")" >> "$jobs"
  has passkey || continue
  passkey_test="$(printf '%q ' "${PASSKEY[@]}" "$@") --ckpt_path $passkey_ckpt \
--data.init_args.eval_lengths $(printf '%q' "$PASSKEY_LENGTHS") \
--data.init_args.test_examples_per_length $PASSKEY_EXAMPLES --data.init_args.eval_batch_size 8 \
$(method_args "$m" $PASSKEY_L "$s")"
  printf '%s\t%s\n' "$RUNS/passkey/any/$name" "$passkey_test" >> "$jobs"
  if [[ $s == "$SCALE" ]]; then
    for location in $LOCATIONS; do
      printf '%s\t%s\n' "$RUNS/passkey/depth/$name/$location" \
        "$passkey_test --data.init_args.task.init_args.location $location" >> "$jobs"
    done
  fi
done < <(variants)

run_tests() {  # run_tests FILE: every test of FILE in one Python process
python - "$1" <<'EOF'
"""Run every `lengen test` of the file in this process, each one's output in ROOT/test.log."""
import os
import shlex
import sys
import time

from lengen.cli import main

for line in open(sys.argv[1]):
    root, args = line.rstrip("\n").split("\t")
    os.makedirs(root, exist_ok=True)
    start = time.time()
    saved = os.dup(1), os.dup(2)
    with open(os.path.join(root, "test.log"), "w") as log:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            main(["test", *shlex.split(args), "--trainer.default_root_dir", root])
            status = 0
        except SystemExit as error:
            status = error.code or 0
        except Exception as error:  # noqa: BLE001 - reported below with the log's path
            print(f"{type(error).__name__}: {error}", file=sys.stderr)
            status = 1
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    if status:
        print(f"test failed ({root}/test.log):", *open(os.path.join(root, "test.log")).readlines()[-5:])
        sys.exit(1)
    print(f"   {root}: {time.time() - start:.0f} s", flush=True)
EOF
}
echo "== $(wc -l < "$jobs") tests ($jobs), $JOBS processes"
rm -f "$jobs".part*
split -n r/"$JOBS" -d "$jobs" "$jobs.part"
pids=()
for part in "$jobs".part*; do run_tests "$part" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid"; done  # set -e: a failed part stops the script here

if has lm; then
  lengen report "$RUNS/lm/test" --metric perplexity --out "$OUT/perplexity" ${REPORT_ARGS:-}
fi
if has passkey; then
  lengen report "$RUNS/passkey/any" --metric presence_accuracy --out "$OUT/passkey" ${REPORT_ARGS:-}
  lengen heatmap "$RUNS/passkey/depth" --out "$OUT/heatmap" ${REPORT_ARGS:-}
fi

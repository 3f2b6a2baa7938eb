#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz (every reader of untrusted bytes) with ASan and UBSan.
#
#   scripts/fuzz.sh                  each target for 30 s (the CI smoke run)
#   scripts/fuzz.sh --seconds 300    each target for 5 minutes
#   scripts/fuzz.sh --long           each target for an hour (or --runs N inputs, whichever first)
#   scripts/fuzz.sh --runs 1000000 fuzz_shard fuzz_gzip   one million inputs each, two targets
#   scripts/fuzz.sh --keep-going ...  go on after a finding (libFuzzer's fork mode), to collect
#                                     every distinct one in a single run
#
# Builds the `fuzz` preset (clang) first unless --no-build. Each target starts from its seed
# corpus (tests/fuzz/corpus/<target>, never modified) plus what earlier runs found
# (build/fuzz/corpus/<target>); its log is build/fuzz/logs/<target>.log, and a crashing input
# is saved as build/fuzz/artifacts/<target>/crash-*. Prints one line per target (inputs run,
# coverage, outcome) and exits non-zero if any target found a problem.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
runs=-1
build=1
keep_going=()
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --long) seconds=3600; shift ;;
    --no-build) build=0; shift ;;
    --keep-going) keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1); shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(fuzz_safetensors fuzz_shard fuzz_gzip fuzz_gpt2_encode fuzz_checkpoint_json fuzz_config_toml
     fuzz_tensorboard_events)
[[ ${#targets[@]} -eq 0 ]] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (known: ${all[*]})" >&2; exit 2; }
done

if ! command -v clang++ > /dev/null; then
  echo "fuzz.sh: clang++ is not installed (libFuzzer needs clang: apt install clang)" >&2
  exit 2
fi
if [[ $build -eq 1 ]]; then
  cmake --preset fuzz > /dev/null
  cmake --build --preset fuzz --target "${targets[@]}"
fi

failed=0
mkdir -p build/fuzz/logs
for t in "${targets[@]}"; do
  work="build/fuzz/corpus/$t"
  artifacts="build/fuzz/artifacts/$t/"
  mkdir -p "$work" "$artifacts"
  rm -f "$artifacts"*  # the findings of this run only (earlier ones are in earlier logs)
  dict=()
  [[ -f "tests/fuzz/$t.dict" ]] && dict=(-dict="tests/fuzz/$t.dict")
  log="build/fuzz/logs/$t.log"
  set +e
  # -rss_limit_mb: a reader must not need more than this for any input (the caps are far below).
  "build/fuzz/tests/fuzz/$t" "$work" "tests/fuzz/corpus/$t" "${dict[@]}" -max_total_time="$seconds" -runs="$runs" \
    -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts" "${keep_going[@]}" > "$log" 2>&1
  rc=$?
  set -e
  done_line=$(grep -E '^Done [0-9]+ runs|^INFO: fuzzed for' "$log" | tail -1 || true)
  found=$(ls "$artifacts" | wc -l)
  cov=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  if [[ $rc -eq 0 && $found -eq 0 ]]; then
    echo "$t: ok: ${done_line:-no summary} ${cov}"
  else
    echo "$t: FAILED (exit $rc, $found inputs in $artifacts): $(grep -m1 -E 'ERROR|runtime error|deadly signal|uncaught' "$log" || echo 'see log'); log $log"
    failed=1
  fi
done
exit $failed

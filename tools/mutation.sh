#!/usr/bin/env bash
# Mutation check of the trust-boundary modules (issue 22): one module at a time, against its
# own test files only, bounded in time, at low CPU priority. NOT part of .ci/run.
#
#   tools/mutation.sh [--rev REV] [--budget SECONDS] [MODULE ...]
#
# MODULE is a key of TESTS below (default: all seven, the six of issue 22 and the size-checking
# .npy/.npz reader). Each module is mutated in a fresh copy of
# the tree (the working tree, or REV's tree with --rev) under ${MUTATION_DIR:-/tmp/onboard-mutation},
# with mutmut 3 (pip install mutmut), one child process, `nice -n 10`, killed after --budget
# seconds (default 900). Results: <dir>/<module>/mutants/mutmut-cicd-stats.json and
# <dir>/<module>/results.txt (every mutant not killed, with its name: `mutmut show NAME` there
# prints the diff). tools/mutation_score.py turns them into the table of the README's
# "Mutation testing" section.
set -euo pipefail

declare -A TESTS=(
  [firmware_bridge/auth.py]="tests/test_bridge_auth.py tests/test_boundaries_auth.py"
  [firmware_bridge/framing.py]="tests/test_bridge_framing.py tests/test_boundaries_framing.py"
  [firmware_bridge/messages.py]="tests/test_bridge_messages.py tests/test_boundaries_messages.py"
  [firmware_bridge/spool.py]="tests/test_spool.py tests/test_boundaries_spool.py tests/test_storage.py"
  [onboard/formats/calfile.py]="tests/test_calfile.py tests/test_calfile_hostile.py"
  [onboard/formats/products.py]="tests/test_products_format.py"
  [onboard/formats/npyio.py]="tests/test_npyio.py tests/test_products_format.py tests/test_calfile_hostile.py tests/test_replay_damaged.py"
)
ORDER=(firmware_bridge/auth.py firmware_bridge/framing.py firmware_bridge/messages.py
       firmware_bridge/spool.py onboard/formats/calfile.py onboard/formats/products.py
       onboard/formats/npyio.py)

rev="" budget=900 modules=()
while (($#)); do
  case "$1" in
    --rev) rev="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) modules+=("$1"); shift ;;
  esac
done
((${#modules[@]})) || modules=("${ORDER[@]}")
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
base="${MUTATION_DIR:-/tmp/onboard-mutation}"
command -v mutmut >/dev/null || { echo "mutmut is not installed: pip install 'mutmut>=3.8'" >&2; exit 2; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

for module in "${modules[@]}"; do
  [[ -n "${TESTS[$module]+x}" ]] || { echo "unknown module $module; one of ${ORDER[*]}" >&2; exit 2; }
  work="$base/$(basename "$module" .py)"
  rm -rf "$work" && mkdir -p "$work"
  if [[ -n "$rev" ]]; then
    git -C "$root" archive "$rev" | tar -x -C "$work"
  else
    (cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -c) | tar -x -C "$work"
  fi
  tests=()
  for t in ${TESTS[$module]}; do [[ -f "$work/$t" ]] && tests+=("$t"); done
  {
    echo "[mutmut]"
    echo "source_paths=${module%%/*}"
    echo "only_mutate=$module"
    echo "also_copy="
    for d in onboard firmware_bridge ground hil calibration export bench; do
      [[ -d "$work/$d" && "$d" != "${module%%/*}" ]] && echo "    $d"
    done
    echo "timeout_multiplier=8"
    echo "pytest_add_cli_args_test_selection="
    for t in "${tests[@]}"; do echo "    $t"; done
    echo "pytest_add_cli_args=-p no:cacheprovider -x -q"
  } > "$work/setup.cfg"
  # Hypothesis tests run 20 derandomized examples instead of 100 here: each surviving mutant
  # runs every covering test, and the boundary tests that kill most mutants are deterministic.
  printf '\nfrom hypothesis import settings as _mut_settings\n_mut_settings.register_profile("mutation", max_examples=20, derandomize=True)\n_mut_settings.load_profile("mutation")\n' >> "$work/tests/conftest.py"
  echo "== $module against ${tests[*]} (budget ${budget}s) in $work"
  mkdir -p "$work/mutants"  # must exist before Python starts, or the import system caches it as absent
  (cd "$work" && PYTHONPATH="$work/mutants" timeout "$budget" nice -n 10 mutmut run --max-children 1 \
      > run.log 2>&1) || echo "   mutmut stopped with status $? (124: budget spent; results so far kept)"
  (cd "$work" && mutmut export-cicd-stats >/dev/null 2>&1 || true
   mutmut results > results.txt 2>&1 || true)
  python "$root/tools/mutation_score.py" "$work" "$module" || true
done

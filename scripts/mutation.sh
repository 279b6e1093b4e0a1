#!/usr/bin/env bash
# Mutation testing of archsim's core with mutmut 2.5.1 (docs/testing.md): each file is mutated in place, one mutant at
# a time, and the tests that guard it run against every mutant; a mutant they do not fail "survives".
#   scripts/mutation.sh                      every file below
#   scripts/mutation.sh archsim/attacks/pgd.py   one of them
#   scripts/mutation.sh --resume FILE         go on with FILE's last run, keeping the mutants it tested
# mutmut runs in a venv of its own (.venv-mutmut), never the project's; results in .mutmut-cache (`mutmut results`,
# `mutmut show ID`). Not part of CI: a file takes minutes to tens of minutes on two cores. A mutant that makes a loop
# endless is cut by mutmut's own timeout (and counted as killed). The runner is exec'd under a CPU-time limit
# (prlimit), not wrapped in `timeout`: mutmut kills its direct child, and pytest under a killed `timeout` lived on,
# holding the output pipe mutmut then waited on for ever. Its worker can also die on its own database ("ValueError:
# Attribute Mutant.line is required", in its log), leaving the run waiting: stop it and go on with --resume.
set -euo pipefail
cd "$(dirname "$0")/.."

# file -> the fast tests that guard it (pytest arguments; the runner adds -m 'not slow').
declare -A GUARDS=(
  [archsim/measures/sat.py]="archsim/measures/tests/test_sat.py"
  [archsim/attacks/pgd.py]="archsim/attacks/tests/test_pgd.py"
  [archsim/analysis/clustering.py]="archsim/analysis/tests/test_analysis.py -k 'kmeans or search or firm or fifth or eigengap or spectral_recovers or spectrum or refuses or defaults'"
  [archsim/analysis/stability.py]="archsim/analysis/tests/test_analysis.py"
  [archsim/analysis/importance.py]="archsim/analysis/tests/test_analysis.py"
  [archsim/analysis/keywords.py]="archsim/analysis/tests/test_analysis.py"
  [archsim/analysis/training.py]="archsim/analysis/tests/test_analysis.py -k 'training or strateg or percent or defaults'"
  [archsim/analysis/agreement.py]="archsim/analysis/tests/test_analysis.py"
  [archsim/measures/comparison.py]="archsim/measures/tests/test_measures.py archsim/applications/tests/test_decisions.py"
  [archsim/applications/selection.py]="archsim/applications/tests/test_decisions.py -k 'sampl or select'"
  [archsim/knowledge/alphas.py]="archsim/knowledge/tests/test_knowledge.py -k 'target or deviations or alpha_'"
)

test -x .venv-mutmut/bin/mutmut || { python3 -m venv .venv-mutmut && .venv-mutmut/bin/pip install -q mutmut==2.5.1; }
test -x .venv/bin/python || make .venv/.installed
resume=false
if [ "${1:-}" = --resume ]; then resume=true; shift; fi
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("${!GUARDS[@]}")
for file in "${files[@]}"; do
  tests=${GUARDS[$file]:?"no tests named for $file in scripts/mutation.sh's GUARDS"}
  $resume || rm -f .mutmut-cache
  .venv-mutmut/bin/mutmut run --paths-to-mutate "$file" --tests-dir "$(dirname "${tests%% *}")" --no-progress \
    --runner "prlimit --cpu=240 .venv/bin/python -m pytest -x -q -p no:cacheprovider -m 'not slow' $tests" >/dev/null || true
  survived=$(.venv-mutmut/bin/mutmut result-ids survived | wc -w)
  killed=$(.venv-mutmut/bin/mutmut result-ids killed | wc -w)
  echo "$file: $killed of $((killed + survived)) mutants killed; survivors: $(.venv-mutmut/bin/mutmut result-ids survived)"
  for id in $(.venv-mutmut/bin/mutmut result-ids survived); do .venv-mutmut/bin/mutmut show "$id" | sed 1,2d; done
done

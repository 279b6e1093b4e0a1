#!/usr/bin/env bash
# Mutation testing of archsim's core with mutmut 2.5.1 (docs/testing.md): each file is mutated in place, one mutant at
# a time, and the tests that guard it run against every mutant; a mutant they do not fail "survives".
#   scripts/mutation.sh                      every file below
#   scripts/mutation.sh archsim/attacks/pgd.py   one of them
# mutmut runs in a venv of its own (.venv-mutmut), never the project's; results in .mutmut-cache (`mutmut results`,
# `mutmut show ID`). Not part of CI: a file takes minutes to tens of minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A GUARDS=(
  [archsim/measures/sat.py]="archsim/measures/tests/test_sat.py"
  [archsim/attacks/pgd.py]="archsim/attacks/tests/test_pgd.py"
)

test -x .venv-mutmut/bin/mutmut || { python3 -m venv .venv-mutmut && .venv-mutmut/bin/pip install -q mutmut==2.5.1; }
test -x .venv/bin/python || make .venv/.installed
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("${!GUARDS[@]}")
for file in "${files[@]}"; do
  tests=${GUARDS[$file]:?"no tests named for $file in scripts/mutation.sh's GUARDS"}
  rm -f .mutmut-cache
  .venv-mutmut/bin/mutmut run --paths-to-mutate "$file" --tests-dir "$(dirname "${tests%% *}")" --no-progress \
    --runner ".venv/bin/python -m pytest -x -q -p no:cacheprovider $tests" >/dev/null || true
  survived=$(.venv-mutmut/bin/mutmut result-ids survived | wc -w)
  killed=$(.venv-mutmut/bin/mutmut result-ids killed | wc -w)
  echo "$file: $killed of $((killed + survived)) mutants killed; survivors: $(.venv-mutmut/bin/mutmut result-ids survived)"
done

#!/usr/bin/env bash
# Run a test file or folder (pytest) or a notebook (nbdev_test) N times in a row and count the runs that failed.
#   tests/repeat.sh FILE N [pytest args...]     e.g. tests/repeat.sh tests/test_generate.py 10 -k sharded
#   tests/repeat.sh tests 10 --ignore tests/test_benchmark.py      (every test file but one)
#   tests/repeat.sh nbs 10                                          (every notebook, as tests/run.sh runs them)
# Every run goes on to the end (a flaky test shows how often it fails); the output of each failed run is kept in
# $REPEAT_LOGS (default: a temporary folder). Exit status 0 only when all N runs passed.
set -u
if [ $# -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: tests/repeat.sh FILE N [pytest args...]   (FILE: a tests/*.py file, the tests folder, an nbs/*.ipynb notebook or nbs)" >&2; exit 2
fi
file=$1; n=$2; shift 2
if [ ! -e "$file" ]; then echo "repeat.sh: no such file or folder: $file" >&2; exit 2; fi
logs=${REPEAT_LOGS:-$(mktemp -d -t repeat.XXXXXX)}; mkdir -p "$logs"
fails=0
for i in $(seq 1 "$n"); do
  start=$(date +%s)
  case "$file" in
    *.ipynb) nbdev_test --path "$file" > "$logs/run$i.log" 2>&1 ;;
    nbs|nbs/|*/nbs|*/nbs/) nbdev_test --path "$file" --n_workers 2 > "$logs/run$i.log" 2>&1 ;;   # every notebook
    *)       python -m pytest "$file" -q -p no:cacheprovider "$@" > "$logs/run$i.log" 2>&1 ;;
  esac
  rc=$?
  if [ $rc -eq 0 ]; then status=passed; rm -f "$logs/run$i.log"; else status="FAILED (exit $rc, log $logs/run$i.log)"; fails=$((fails + 1)); fi
  echo "run $i/$n: $status in $(( $(date +%s) - start )) s"
done
echo "$file $*: $((n - fails))/$n passed, $fails failed"
[ $fails -eq 0 ]

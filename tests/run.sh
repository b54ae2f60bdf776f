#!/usr/bin/env bash
# The project's whole test suite, as CI runs it: `bash tests/run.sh`
#  1. the package is exactly what the notebooks export (nbdev_export changes nothing in infcam/)
#  2. the notebooks are clean (nbdev_clean changes nothing in nbs/)
#  3. every notebook runs top to bottom on the CPU (nbdev_test; cells flagged slow/gpu/notest are skipped)
#  4. pytest
#  5. nothing committed was changed by running them (figures/ is rewritten only with INFCAM_FIGURES=1)
# It ends with the time each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS; t=$SECONDS; current=""; times=()
stage() {   # end the running stage (its time goes to the summary printed last), start the next
  [ -z "$current" ] || times+=("$(printf '%5ds  %s' $((SECONDS - t)) "$current")")
  current="$1"; t=$SECONDS; [ -z "$1" ] || echo "== $1"
}
report() { stage ""; echo "== time per stage"; printf '%s\n' "${times[@]}"; printf '%5ds  total\n' $((SECONDS - t0)); }
trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "$current" ]; then current="$current (FAILED)"; report; fi' EXIT
snapshot() { find "$1" -type f \( -name "$2" \) -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum; }

stage "nbdev_export leaves infcam/ unchanged"
before=$(snapshot infcam '*.py'); nbdev_export; after=$(snapshot infcam '*.py')
if [ "$before" != "$after" ]; then
  echo "FAIL: infcam/ differs from what the notebooks export (edit the notebook, run nbdev_export, commit both):"
  diff <(echo "$before") <(echo "$after") || true; exit 1
fi

stage "nbdev_clean leaves nbs/ unchanged"
before=$(snapshot nbs '*.ipynb'); nbdev_clean; after=$(snapshot nbs '*.ipynb')
if [ "$before" != "$after" ]; then
  echo "FAIL: notebooks are not clean (run nbdev_clean and commit):"
  diff <(echo "$before") <(echo "$after") || true; exit 1
fi

stage "README.md is rendered from nbs/index.ipynb"
python tests/readme.py --check

stage "nbdev_test: every notebook runs on the CPU"
export MPLBACKEND=Agg
unset INFCAM_FIGURES
figs=$(snapshot figures '*')
nbdev_test --n_workers "${NBDEV_WORKERS:-2}" --timing

stage "pytest"
python -m pytest tests -q -p no:cacheprovider --durations=15 "$@"   # the 15 slowest tests are listed

stage "the tests left the committed figures alone"
if [ "$figs" != "$(snapshot figures '*')" ]; then
  echo "FAIL: running the tests changed figures/ (save figures with infcam.core.save_figure, which writes only when asked)"
  exit 1
fi
report

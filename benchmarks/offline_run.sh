#!/usr/bin/env bash
# Runs the fashion_jax accelerator kit on an offline machine from this bundle (written by
# benchmarks/offline_bundle.py):   bash run.sh RESULTS_DIR [accelerator.py arguments]
#
# 1. installs the bundle's wheels that are missing here (pip --no-index --no-deps, into ./site);
# 2. runs benchmarks/accelerator.py: RESULTS_DIR/accelerator.jsonl (its last line, rewritten as
#    rows complete), RESULTS_DIR/kit.log;
# 3. one short training with the runner: RESULTS_DIR/train_check/ (skip: FASHION_JAX_TRAIN_CHECK=0).
# Environment: PYTHON (default python3), FASHION_JAX_REPO (default: found beside the bundle).
# Exit status: the kit's (1 if a section failed), else the training's; 128 + N after signal N.
set -u
if [ $# -lt 1 ]; then
  echo "usage: bash run.sh RESULTS_DIR [accelerator.py arguments]" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || exit 2
RESULTS=$(cd "$1" && pwd)
shift
PY=${PYTHON:-python3}

REPO=${FASHION_JAX_REPO:-}
if [ -z "$REPO" ]; then
  for candidate in "$HERE/@REPO_FROM_BUNDLE@" "$HERE/.." "$HERE/../.." "$PWD"; do
    if [ -f "$candidate/fashion_jax/__init__.py" ] && [ -f "$candidate/benchmarks/accelerator.py" ]; then
      REPO=$(cd "$candidate" && pwd)
      break
    fi
  done
fi
if [ -z "$REPO" ]; then
  echo "error: the fashion_jax repository is not beside $HERE; set FASHION_JAX_REPO" >&2
  exit 2
fi

# 1. The wheels this Python lacks, into $HERE/site (nothing else is touched).
SITE="$HERE/site"
mkdir -p "$SITE"
missing=()
for wheel in "$HERE"/wheels/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1)
  if ! "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null; then
    missing+=("$wheel")
  fi
done
{
  echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
  echo "repository: $REPO"
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]##*/}"
    if "$PY" -m pip --version >/dev/null 2>&1; then
      "$PY" -m pip install --no-index --no-deps --quiet --target "$SITE" "${missing[@]}"
    else  # No pip: a pure wheel is a zip of the files to import.
      "$PY" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" "$SITE" "${missing[@]}"
    fi
  else
    echo "installing: nothing (every carried package is installed here)"
  fi
} 2>&1 | tee "$RESULTS/install.log"

export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-$HERE/data}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}

# Runs "$@" with its output also in log file $1; a SIGTERM/SIGINT here is passed on to it.
signalled=0
run_logged() {
  local log=$1
  shift
  "$@" > >(tee -a "$log") 2>&1 &
  local pid=$!
  trap "signalled=1; kill -TERM $pid 2>/dev/null" TERM INT
  wait "$pid"
  local status=$?
  if kill -0 "$pid" 2>/dev/null; then wait "$pid"; status=$?; fi
  trap - TERM INT
  return "$status"
}

# 2. The kit.
run_logged "$RESULTS/kit.log" "$PY" "$REPO/benchmarks/accelerator.py" \
  --results "$RESULTS/accelerator.jsonl" --data-dir "$TFDS_DATA_DIR" "$@"
kit_status=$?
if [ "$signalled" = 1 ] || [ "$kit_status" -gt 128 ]; then
  echo "run.sh: stopped by a signal; results so far in $RESULTS" >&2
  exit $((kit_status > 128 ? kit_status : 143))
fi

# 3. One short training through the runner (real data from the bundle, report included).
train_status=0
if [ "${FASHION_JAX_TRAIN_CHECK:-1}" != 0 ]; then
  run_logged "$RESULTS/train_check.log" "$PY" -m fashion_jax.run --workdir "$RESULTS/train_check" \
    --config.num_epochs=1 --config.max_train_examples=2048 --config.progress_bar=false \
    --config.data_dir="$TFDS_DATA_DIR" --config.download=false
  train_status=$?
  [ "$signalled" = 1 ] && exit 143
fi
echo "run.sh: kit exit $kit_status, training check exit $train_status; results in $RESULTS"
[ "$kit_status" != 0 ] && exit "$kit_status"
exit "$train_status"

#!/bin/sh
# The install steps of simgym's images. The Dockerfiles run this script, and the tests run
# the same script in a fresh venv, so what CI checks is what an image build does.
#
# usage: install.sh KIND PREFIX [--deps-only]
#   KIND    sim        simgym's base install (the sim side: no Ray, no torch)
#           train      + the train extra (Ray RLlib, torch CPU, MLflow) + azureml-mlflow
#           train-gpu  the same with the CUDA build of torch
#   PREFIX  the virtual environment to create
#   --deps-only  only what lock-KIND.txt pins, no simgym (needs only this script, lock.py and
#           the lock): the training images run this first, in a layer of its own, so that
#           Docker's cache keeps their ~2 GB of dependencies when only simgym changes; the
#           full install in the same PREFIX then adds simgym (and checks everything again)
# Files beside this script (a build context staged by `simgym docker-context` or submit):
#   simgym-<version>-*.whl  simgym itself (built from a checkout, or the installed one repacked)
#   lock-KIND.txt           every distribution this kind installs, pinned (made by lock.py)
#   lock.py                 checks that the install brought nothing the lock does not pin
#   requirements.txt        the sim's own requirements (may be empty)
# PYTHON picks the interpreter (default python3); pip's own settings (PIP_EXTRA_INDEX_URL for
# the CPU torch index, PIP_NO_CACHE_DIR in the images, a local mirror, ...) come from the
# environment as usual.
set -eu

kind="${1:?usage: install.sh sim|train|train-gpu PREFIX [--deps-only]}"
prefix="${2:?usage: install.sh sim|train|train-gpu PREFIX [--deps-only]}"
mode="${3:-}"
case "$mode" in
  ""|--deps-only) ;;
  *) echo "install.sh: unknown option '$mode' (--deps-only)" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"

case "$kind" in
  sim) extras="" more="" ;;
  train|train-gpu) extras="[train]" more="azureml-mlflow" ;;
  *) echo "install.sh: unknown kind '$kind' (sim, train or train-gpu)" >&2; exit 2 ;;
esac
lock="$here/lock-$kind.txt"
[ -f "$lock" ] || { echo "install.sh: $lock not found (docker/lock.py makes it)" >&2; exit 2; }
pip="$prefix/bin/python -m pip"
report="$prefix/simgym-install-report.json"
if [ "$mode" = --deps-only ]; then
  "$python" -m venv "$prefix"
  $pip install --report "$report" -r "$lock"
  # A lock that misses a dependency of its own pins shows here already.
  "$prefix/bin/python" "$here/lock.py" check "$lock" "$report"
  rm -f "$report"
  echo "install.sh: the $kind dependencies (lock-$kind.txt) installed in $prefix"
  exit 0
fi
wheel=""
for w in "$here"/simgym-*.whl; do
  [ -e "$w" ] || continue
  [ -z "$wheel" ] || { echo "install.sh: more than one simgym wheel in $here" >&2; exit 2; }
  wheel="$w"
done
[ -n "$wheel" ] || { echo "install.sh: no simgym-*.whl in $here (stage it with simgym docker-context)" >&2; exit 2; }

"$python" -m venv "$prefix"  # an existing venv (--deps-only made it) is kept as it is
# shellcheck disable=SC2086  # $more is a list
$pip install -c "$lock" --report "$report" "$wheel$extras" $more
# Reproducible means nothing floats: fail the build if pip brought a distribution the lock
# does not pin (a new dependency of a new release, an interpreter the lock was not made for).
"$prefix/bin/python" "$here/lock.py" check "$lock" "$report"
rm -f "$report"
if [ -s "$here/requirements.txt" ]; then
  # The sim's own packages: the lock holds simgym's side fixed; the sim pins its own.
  $pip install -c "$lock" -r "$here/requirements.txt"
fi
$pip check
"$prefix/bin/simserver" --help > /dev/null
if [ "$kind" = sim ]; then
  # The sim image stays light: fail the build if anything pulled Ray or torch in.
  if "$prefix/bin/python" -c "import ray" 2>/dev/null || "$prefix/bin/python" -c "import torch" 2>/dev/null; then
    echo "install.sh: the sim image must not contain Ray or torch" >&2
    exit 1
  fi
else
  "$prefix/bin/python" -c "import ray.rllib, torch, mlflow, azureml.mlflow, launcher.node"
  "$prefix/bin/simgym" node --help > /dev/null
fi
echo "install.sh: $kind installed in $prefix"

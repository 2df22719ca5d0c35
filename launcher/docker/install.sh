#!/bin/sh
# The install steps of simgym's images. The Dockerfiles run this script, and the tests run
# the same script in a fresh venv, so what CI checks is what an image build does.
#
# usage: install.sh KIND PREFIX
#   KIND    sim        simgym's base install (the sim side: no Ray, no torch)
#           train      + the train extra (Ray RLlib, torch CPU, MLflow) + azureml-mlflow
#           train-gpu  the same with the CUDA build of torch
#   PREFIX  the virtual environment to create
# Files beside this script (a build context staged by simgym):
#   simgym-src/       simgym's source
#   constraints.txt   the pinned versions every install goes through
#   requirements.txt  the sim's own requirements (may be empty)
# PYTHON picks the interpreter (default python3); pip's own settings (PIP_EXTRA_INDEX_URL for
# the CPU torch index, a local mirror, ...) come from the environment as usual.
set -eu

kind="${1:?usage: install.sh sim|train|train-gpu PREFIX}"
prefix="${2:?usage: install.sh sim|train|train-gpu PREFIX}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"

case "$kind" in
  sim) packages="$here/simgym-src" ;;
  train|train-gpu) packages="$here/simgym-src[train] azureml-mlflow" ;;
  *) echo "install.sh: unknown kind '$kind' (sim, train or train-gpu)" >&2; exit 2 ;;
esac

"$python" -m venv "$prefix"
pip="$prefix/bin/python -m pip"
# shellcheck disable=SC2086  # $packages is a list
$pip install --no-cache-dir -c "$here/constraints.txt" $packages
if [ -s "$here/requirements.txt" ]; then
  $pip install --no-cache-dir -c "$here/constraints.txt" -r "$here/requirements.txt"
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

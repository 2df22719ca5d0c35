#!/bin/sh
# Add simgym's training layer to a sim's own image (docker/sim-train.Dockerfile runs this as
# root, FROM the sim image), in two steps so that Docker caches the first across simgym updates:
#
#   sim-train.sh system          Python 3.11 and Open MPI, with apt-get, if the image lacks them
#   sim-train.sh install PREFIX [--deps-only]
#                                install.sh train into the venv PREFIX (files beside this script:
#                                those of install.sh; --deps-only: the lock's packages alone)
#
# PYTHON picks the interpreter for simgym's venv (default: the image's python3.11, else the one
# the system step installed). The limits: a glibc Linux (Ray and torch ship manylinux wheels
# only: no Alpine/musl) on x86_64 (the lock's wheels), and Python 3.11 with venv — the image's,
# or apt-get's (Debian bookworm has it; Ubuntu 24.04 has 3.12 only: add deadsnakes' python3.11
# to the sim image, or give PYTHON).
set -eu

step="${1:?usage: sim-train.sh system | install PREFIX [--deps-only]}"
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "sim-train.sh: $*" >&2; exit 2; }

is311() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }
find_python() {
  if [ -n "${PYTHON:-}" ]; then
    is311 "$PYTHON" || fail "PYTHON=$PYTHON is not a Python 3.11 with venv and ensurepip"
    echo "$PYTHON"
    return
  fi
  for candidate in python3.11 /usr/local/bin/python3.11 /usr/bin/python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && is311 "$candidate"; then
      command -v "$candidate"
      return
    fi
  done
}

case "$step" in
  system)
    if ! (getconf GNU_LIBC_VERSION >/dev/null 2>&1 || ldd --version 2>&1 | grep -qiE 'glibc|gnu libc'); then
      fail "the sim image is not a glibc Linux (musl? Alpine?): Ray and torch need glibc; build the sim on a Debian/Ubuntu base"
    fi
    [ "$(uname -m)" = x86_64 ] || fail "the sim image is $(uname -m): simgym's lock-train.txt is made for x86_64"
    missing=""
    [ -n "$(find_python)" ] || missing="python3.11 python3.11-venv"
    # Azure ML starts multi-node jobs with the image's own mpirun.
    command -v mpirun >/dev/null 2>&1 || missing="$missing openmpi-bin"
    if [ -z "$missing" ]; then
      echo "sim-train.sh: the sim image has Python 3.11 ($(find_python)) and mpirun ($(command -v mpirun))"
      exit 0
    fi
    command -v apt-get >/dev/null 2>&1 \
      || fail "the sim image lacks$missing and has no apt-get to install them: add them to the sim image (or give PYTHON)"
    echo "sim-train.sh: installing with apt-get:$missing"
    apt-get update
    # shellcheck disable=SC2086  # $missing is a list
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing \
      || fail "apt-get could not install$missing (Python 3.11 is in Debian bookworm; on other bases add it to the sim image)"
    rm -rf /var/lib/apt/lists/*
    [ -n "$(find_python)" ] || fail "no usable Python 3.11 after apt-get"
    ;;
  install)
    prefix="${2:?usage: sim-train.sh install PREFIX [--deps-only]}"
    python="$(find_python)"
    [ -n "$python" ] || fail "no Python 3.11 with venv (run sim-train.sh system first, or give PYTHON)"
    echo "sim-train.sh: simgym's training venv at $prefix with $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
    # shellcheck disable=SC2086  # ${3:-}: the option, or nothing
    PYTHON="$python" sh "$here/install.sh" train "$prefix" ${3:-}
    ;;
  *) fail "unknown step '$step' (system, or install PREFIX [--deps-only])" ;;
esac

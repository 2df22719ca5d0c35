#!/bin/sh
# Add simgym's training layer to a sim's own image (docker/sim-train.Dockerfile runs this as
# root, FROM the sim image): Python 3.11 and Open MPI if the image lacks them, then
# install.sh train into a venv of its own.
#
# usage: sim-train.sh PREFIX        (files beside it: those of install.sh)
#   PYTHON   the interpreter for simgym's venv (default: the image's python3.11, else Debian's
#            python3.11 installed with apt-get)
# The limits: a glibc Linux (Ray and torch ship manylinux wheels only: no Alpine/musl), on
# x86_64 (the lock's wheels), and Python 3.11 — the image's, or apt-get's (Debian bookworm has
# it; Ubuntu 24.04 has 3.12 only: give PYTHON, or add deadsnakes' python3.11 to the sim image).
set -eu

prefix="${1:?usage: sim-train.sh PREFIX}"
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "sim-train.sh: $*" >&2; exit 2; }

if ! (getconf GNU_LIBC_VERSION >/dev/null 2>&1 || ldd --version 2>&1 | grep -qiE 'glibc|gnu libc'); then
  fail "the sim image is not a glibc Linux (musl? Alpine?): Ray and torch need glibc; build the sim on a Debian/Ubuntu base"
fi
case "$(uname -m)" in
  x86_64) ;;
  *) fail "the sim image is $(uname -m): simgym's lock-train.txt is made for x86_64" ;;
esac

is311() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }
python="${PYTHON:-}"
if [ -n "$python" ]; then
  is311 "$python" || fail "PYTHON=$python is not a Python 3.11 with venv and ensurepip"
else
  for candidate in python3.11 /usr/local/bin/python3.11 /usr/bin/python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && is311 "$candidate"; then
      python="$(command -v "$candidate")"
      break
    fi
  done
fi

missing=""
[ -n "$python" ] || missing="python3.11 python3.11-venv"
# Azure ML starts multi-node jobs with the image's own mpirun.
command -v mpirun >/dev/null 2>&1 || missing="$missing openmpi-bin"
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null 2>&1 \
    || fail "the sim image lacks$( [ -n "$python" ] || echo ' Python 3.11')$(command -v mpirun >/dev/null 2>&1 || echo ' Open MPI (mpirun)') and has no apt-get to install them: add them to the sim image, or give PYTHON"
  echo "sim-train.sh: installing with apt-get:$missing"
  apt-get update
  # shellcheck disable=SC2086  # $missing is a list
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing \
    || fail "apt-get could not install$missing (Python 3.11 is in Debian bookworm; on other bases add it to the sim image)"
  rm -rf /var/lib/apt/lists/*
  [ -n "$python" ] || python=/usr/bin/python3.11
  is311 "$python" || fail "$python is not a usable Python 3.11 after apt-get"
fi

echo "sim-train.sh: simgym's training venv at $prefix with $python ($("$python" -c 'import sys; print(sys.version.split()[0])')), mpirun $(command -v mpirun)"
PYTHON="$python" sh "$here/install.sh" train "$prefix"

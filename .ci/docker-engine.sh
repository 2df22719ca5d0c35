#!/bin/sh
# A Docker engine for tests/test_docker.py (make ci-setup runs this): installs docker.io and
# debootstrap (the base stand-ins, tests/dockerkit.py) when missing, starts dockerd when no
# engine answers (these machines have no systemd) and waits until it does. The engine is left
# running. Needs root, as CI and the project's machines run.
set -eu
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
if [ -n "$need" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086  # a list of packages
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
fi
if docker info >/dev/null 2>&1; then
  echo "docker engine: answering"
  exit 0
fi
log=/var/log/simgym-dockerd.log
echo "docker engine: starting dockerd (log: $log)"
setsid nohup dockerd >"$log" 2>&1 </dev/null &
i=0
while [ $i -lt 90 ]; do
  if docker info >/dev/null 2>&1; then
    echo "docker engine: answering after ${i} s"
    exit 0
  fi
  i=$((i + 1))
  sleep 1
done
echo "docker engine: dockerd did not answer within 90 s; the end of $log:" >&2
tail -n 20 "$log" >&2
exit 1

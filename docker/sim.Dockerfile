# syntax=docker/dockerfile:1
# simgym sim image: simgym's base install and the sim's own requirements — no Ray, no torch.
# Serves a sim in its own container; training reaches it over gRPC (token required off loopback).
#
#   simgym docker-context sim build/ --requirements my-sim/requirements.txt
#   docker build -t my-sim build/
#   docker run -p 50051:50051 -v $PWD/my-sim:/sim -e SIMGYM_TOKEN=... my-sim \
#       sim.py:MySim --host 0.0.0.0 --port 50051
FROM python:3.11.11-slim-bookworm

# pip behind a proxy or a mirror (docs/docker.md, "pip behind a proxy or mirror"): pip reads
# these from the build's environment; unset, pip uses PyPI. A CA bundle put in the build context
# as pip-ca.pem is at /opt/simgym-build/pip-ca.pem: --build-arg PIP_CERT=/opt/simgym-build/pip-ca.pem.
# Build args are visible in `docker history`: never put credentials in them.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# The locked dependencies first, in a layer of their own (docs/docker.md, "Layers").
COPY install.sh lock.py lock-sim.txt pip-ca.pe[m] /opt/simgym-build/
RUN sh /opt/simgym-build/install.sh sim /opt/simgym --deps-only && rm -rf /opt/simgym-build
COPY . /opt/simgym-build
RUN sh /opt/simgym-build/install.sh sim /opt/simgym && rm -rf /opt/simgym-build
ENV PATH=/opt/simgym/bin:$PATH

RUN useradd --create-home --uid 1000 sim
USER sim
WORKDIR /sim
EXPOSE 50051
ENTRYPOINT ["simserver"]
CMD ["--help"]

# syntax=docker/dockerfile:1
# simgym training image with CUDA for Azure ML GPU clusters (e.g. STANDARD_NC4AS_T4_V3):
# the same as train.Dockerfile on Azure ML's CUDA base, with PyPI's CUDA build of torch
# (lock-train-gpu.txt pins it and the NVIDIA libraries it pulls).
FROM mcr.microsoft.com/azureml/openmpi5.0-cuda12.6-ubuntu24.04:20250407.v1

USER root
# Python 3.11, as in train.Dockerfile (the lock files are resolved for it).
# Skipped when the base already has /usr/bin/python3.11 with venv (a Debian bookworm base does).
RUN if /usr/bin/python3.11 -c "import ensurepip, venv" 2>/dev/null; then \
        echo "python3.11 with venv present: deadsnakes not needed"; \
    else \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends software-properties-common gpg-agent \
        && add-apt-repository -y ppa:deadsnakes/ppa \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# pip behind a proxy or a mirror (docs/docker.md, "pip behind a proxy or mirror"): pip reads
# these from the build's environment. A CA bundle put in the build context as pip-ca.pem is at
# /opt/simgym-build/pip-ca.pem: --build-arg PIP_CERT=/opt/simgym-build/pip-ca.pem. Build args are visible
# in `docker history`: never put credentials in them.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_EXTRA_INDEX_URL
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# The dependencies first, from the lock alone (and pip-ca.pem when the context has one:
# see PIP_CERT), in a layer of their own: Docker's cache keeps it when only simgym changes.
COPY install.sh lock.py lock-train-gpu.txt pip-ca.pe[m] /opt/simgym-build/
RUN PYTHON=/usr/bin/python3.11 sh /opt/simgym-build/install.sh train-gpu /opt/simgym --deps-only \
    && rm -rf /opt/simgym-build
COPY . /opt/simgym-build
RUN PYTHON=/usr/bin/python3.11 sh /opt/simgym-build/install.sh train-gpu /opt/simgym \
    && rm -rf /opt/simgym-build
ENV PATH=/opt/simgym/bin:$PATH

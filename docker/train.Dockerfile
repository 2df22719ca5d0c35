# syntax=docker/dockerfile:1
# simgym training image (CPU) for Azure ML: Open MPI (Azure ML launches multi-node jobs with
# mpirun), simgym with Ray RLlib, torch (CPU build), MLflow and azureml-mlflow. `simgym submit`
# stages this file with install.sh, lock.py, the kind's lock file, the sim's requirements.txt
# and simgym's wheel as the environment's build context; the sim's own code comes with the job.
FROM mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04:20250303.v1

USER root
# Python 3.11 in its own venv, apart from the base image's conda: the version the lock files
# are resolved for and CI installs with (Ubuntu 24.04's own python3 is 3.12), from the
# deadsnakes archive.
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

# The CPU build of torch (a plain PyPI torch is the multi-GB CUDA build).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# pip behind a proxy or a mirror (docs/docker.md, "pip behind a proxy or mirror"): pip reads
# these from the build's environment. A CA bundle put in the build context as pip-ca.pem is at
# /opt/simgym-build/pip-ca.pem: --build-arg PIP_CERT=/opt/simgym-build/pip-ca.pem. Build args are visible
# in `docker history`: never put credentials in them.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# The dependencies first, from the lock alone (and pip-ca.pem when the context has one:
# see PIP_CERT), in a layer of their own: Docker's cache keeps it when only simgym changes.
COPY install.sh lock.py lock-train.txt pip-ca.pe[m] /opt/simgym-build/
RUN PYTHON=/usr/bin/python3.11 sh /opt/simgym-build/install.sh train /opt/simgym --deps-only \
    && rm -rf /opt/simgym-build
COPY . /opt/simgym-build
RUN PYTHON=/usr/bin/python3.11 sh /opt/simgym-build/install.sh train /opt/simgym \
    && rm -rf /opt/simgym-build
ENV PATH=/opt/simgym/bin:$PATH

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
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

# The CPU build of torch (a plain PyPI torch is the multi-GB CUDA build).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /opt/simgym-build
RUN PYTHON=/usr/bin/python3.11 sh /opt/simgym-build/install.sh train /opt/simgym \
    && rm -rf /opt/simgym-build
ENV PATH=/opt/simgym/bin:$PATH

# syntax=docker/dockerfile:1
# simgym training image (CPU) for Azure ML: Open MPI (Azure ML launches multi-node jobs with
# mpirun), simgym with Ray RLlib, torch (CPU build), MLflow and azureml-mlflow. `simgym submit`
# stages this file with install.sh, constraints.txt, the sim's requirements.txt and simgym's
# source as the environment's build context; the sim's own code comes with the job.
FROM mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04:20250303.v1

USER root
# Ubuntu 24.04's Python (3.12) in its own venv, apart from the base image's conda.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# The CPU build of torch (a plain PyPI torch is the multi-GB CUDA build).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY . /opt/simgym-build
RUN PYTHON=/usr/bin/python3 sh /opt/simgym-build/install.sh train /opt/simgym \
    && rm -rf /opt/simgym-build
ENV PATH=/opt/simgym/bin:$PATH

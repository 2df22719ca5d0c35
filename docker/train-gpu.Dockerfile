# syntax=docker/dockerfile:1
# simgym training image with CUDA for Azure ML GPU clusters (e.g. STANDARD_NC4AS_T4_V3):
# the same as train.Dockerfile on Azure ML's CUDA base, with PyPI's CUDA build of torch
# (lock-train-gpu.txt pins it and the NVIDIA libraries it pulls).
FROM mcr.microsoft.com/azureml/openmpi5.0-cuda12.6-ubuntu24.04:20250407.v1

USER root
# Python 3.11, as in train.Dockerfile (the lock files are resolved for it).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /opt/simgym-build
RUN PYTHON=/usr/bin/python3.11 sh /opt/simgym-build/install.sh train-gpu /opt/simgym \
    && rm -rf /opt/simgym-build
ENV PATH=/opt/simgym/bin:$PATH

# syntax=docker/dockerfile:1
# simgym sim-train image: a sim's OWN image (SIM_IMAGE) with simgym's training layer added, the
# Azure ML environment of `simgym submit --sim-image IMAGE` (docs/azure.md, "A sim that ships as
# its own image"). Built FROM the sim's image, so the sim runs on the OS, runtime, files and
# environment it was built with; simgym's training side (Ray RLlib, torch CPU, MLflow,
# azureml-mlflow, through lock-train.txt) goes into a venv of its own, /opt/simgym-train, that
# the sim never sees. sim-train.sh brings in Python 3.11 and Open MPI with apt-get only when
# the image lacks them, and refuses images it cannot serve (musl, no Python and no apt-get).
# Every node runs the sim's command (SIMGYM_SIM_COMMAND, a JSON list: the image's ENTRYPOINT +
# CMD as `simgym submit` read them, or empty when the training spec's sim.launch.command says
# it) from SIMGYM_SIM_CWD as supervised sidecars, with simserver's transport flags appended.
#
#   simgym docker-context sim-train build/ --sim-image my-sim:1.0   # fills in the ARGs below
#   docker build -t my-sim-train build/
ARG SIM_IMAGE=give-sim-image-as-a-build-arg
FROM ${SIM_IMAGE}

# The training layer installs as root; the job runs as root, as simgym's training image does.
USER root
# The CPU build of torch (a plain PyPI torch is the multi-GB CUDA build).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# pip behind a proxy or a mirror (docs/docker.md, "pip behind a proxy or mirror"), as in
# train.Dockerfile: pip reads these from the build's environment. Never put credentials here.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG SIM_COMMAND=
ARG SIM_CWD=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Python 3.11 and Open MPI first, on their own: this layer stays cached when simgym changes.
COPY sim-train.sh /opt/simgym-build/sim-train.sh
RUN sh /opt/simgym-build/sim-train.sh system
# Then the locked dependencies alone (~2 GB, and pip-ca.pem when the context has one: see
# PIP_CERT), in a layer of their own that the cache keeps when only simgym changes.
COPY sim-train.sh install.sh lock.py lock-train.txt pip-ca.pe[m] /opt/simgym-build/
RUN sh /opt/simgym-build/sim-train.sh install /opt/simgym-train --deps-only \
    && rm -rf /opt/simgym-build
COPY . /opt/simgym-build
RUN sh /opt/simgym-build/sim-train.sh install /opt/simgym-train && rm -rf /opt/simgym-build
# simgym's venv goes LAST on PATH: the sim's command finds its own programs first (a sim image
# may have a `simgym` or `python` of its own); the job calls /opt/simgym-train/bin/simgym.
ENV PATH=${PATH}:/opt/simgym-train/bin \
    SIMGYM_SIM_COMMAND=${SIM_COMMAND} \
    SIMGYM_SIM_CWD=${SIM_CWD}
# Azure ML runs the job's command itself: the sim image's entrypoint must not wrap it.
ENTRYPOINT []
CMD []

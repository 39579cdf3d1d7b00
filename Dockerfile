# fluidserve for GPU calibration runs (and the real-engine harness) on a CUDA + PyTorch base.
#
#   docker build -t fluidserve-gpu .                              # calib + torch + serve extras
#   docker build --build-arg INSTALL_VLLM=1 -t fluidserve-vllm .  # ... and vLLM for 'harness vllm'
#   docker run --rm --gpus all -v "$PWD/out:/out" -e OUT=/out -e PREFIX=h100 fluidserve-gpu
#
# The install step is docker/install.sh (CI runs it outside docker); the entrypoint is
# calibration/run_gpu.sh (environment, PowerMonitor overhead, backend check, step profile).
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG INSTALL_VLLM=0
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHON=python3

WORKDIR /opt/fluidserve
COPY pyproject.toml README.md ./
COPY fluidserve ./fluidserve
COPY calibration ./calibration
COPY bench ./bench
COPY config ./config
COPY tests ./tests
COPY docker ./docker
RUN INSTALL_VLLM=${INSTALL_VLLM} bash docker/install.sh

ENTRYPOINT ["bash", "calibration/run_gpu.sh"]

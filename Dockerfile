# Obscura container image: GPU (default) or CPU-only, one Dockerfile.
#
#   docker build -t obscura:gpu .
#   docker build -t obscura:cpu --build-arg VARIANT=cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# Run it through compose.yaml, which adds what an image cannot carry: the RAM-backed tmpfs for the
# uploads cache (/run/obscura), a read-only root filesystem, no capabilities, no swap, ports on
# 127.0.0.1 and a network with no route out. docs/deploy.md explains every choice and what was and
# was not exercised (this file is linted with hadolint in `make test`; it was not built there).

# gpu | cpu
ARG VARIANT=gpu

# ---------------------------------------------------------------------------------------------
# The two bases. Everything from `FROM base-${VARIANT}` on is shared by both variants.
#
# GPU: NVIDIA's CUDA image, "base" flavour (CUDA driver compatibility + cudart, sets
# NVIDIA_VISIBLE_DEVICES). The torch wheel from PyPI carries its own CUDA libraries (cuBLAS, cuDNN,
# ...), so the "runtime" flavour would only add about 2 GB of copies nobody loads. The host needs the
# NVIDIA driver and the NVIDIA Container Toolkit; the driver must be new enough for the CUDA version
# of the torch wheel (see docs/deploy.md).
FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS base-gpu
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
# socat relays the published port into the sealed network (`gate` in deploy/compose.sealed.yaml).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv socat \
 && rm -rf /var/lib/apt/lists/*

# CPU: Debian slim with the same Python minor version as Ubuntu 24.04 (3.12).
FROM python:3.12-slim-bookworm AS base-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends socat \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------
# Build: a virtual environment in /opt/obscura with torch and the project (no test extras, no
# compilers: every dependency ships wheels). Only /opt/obscura is copied into the final image.
# DL3006 ("tag the image") does not apply: base-${VARIANT} is one of the two stages above.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
# The torch release; PyPI's Linux wheel is the CUDA build. For the CPU variant pass
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to get the much smaller CPU-only wheel.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/obscura
ENV PATH=/opt/obscura/bin:$PATH
RUN PIP_INDEX_URL="${TORCH_INDEX_URL:-https://pypi.org/simple}" \
    pip install --no-cache-dir "torch==${TORCH_VERSION}"
# The build context is an allowlist (.dockerignore): sources and pyproject only, never data or models.
COPY . /src
# Installs the project non-editable, and spandrel (upscaler models) without its declared
# torchvision, as the Makefile does (docs/models.md, "Upscalers"); then removes pip itself: the
# image runs code, it installs none.
RUN pip install --no-cache-dir /src \
 && pip install --no-cache-dir --no-deps "spandrel==0.4.2" \
 && pip uninstall --yes pip

# ---------------------------------------------------------------------------------------------
# Runtime. (DL3006 as above: a stage of this file, not an image.)
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime

LABEL org.opencontainers.image.title="Obscura" \
      org.opencontainers.image.description="A self-hosted, private AI painting studio: your GPU, your photos, nothing leaves the machine." \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, non-root uid/gid (10001): compose.yaml's tmpfs mounts are owned by it, and a bind-mounted
# data directory must be too (`chown -R 10001:10001 DIR`). /data is the only persistent writable
# place; /models is mounted read-only.
RUN groupadd --system --gid 10001 obscura \
 && useradd --system --uid 10001 --gid obscura --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin obscura \
 && install -d -o obscura -g obscura -m 0700 /data \
 && install -d -o root -g root -m 0755 /models /usr/local/lib/obscura

COPY --from=build /opt/obscura /opt/obscura
COPY --chmod=0644 deploy/healthcheck.py /usr/local/lib/obscura/healthcheck.py

# - PYTHONDONTWRITEBYTECODE: the root filesystem is read-only; bytecode was compiled at install time.
# - HOME and XDG_CACHE_HOME on /tmp, a tmpfs in compose.yaml: the few caches libraries keep (CUDA
#   kernel cache, matplotlib fonts) land in RAM, never in the image or in /data. No HF_HOME or
#   TORCH_HOME is needed: Obscura forces Hugging Face offline and loads models from /models only.
# - OBSCURA_RAM_DIR: the uploads cache and TMPDIR. It must be a tmpfs (compose.yaml mounts one;
#   with `docker run` add --tmpfs /run/obscura:rw,noexec,nosuid,nodev,size=512m,mode=0700,uid=10001,gid=10001).
#   Without one, `obscura serve` refuses to start (it reads /proc/mounts), and the read-only root
#   filesystem would not let it create the folder anyway.
# - OBSCURA_HOST=0.0.0.0: a published port reaches the container on its own network address, never
#   on its loopback. The server therefore runs in accounts mode with TLS in a container (see
#   docs/deploy.md); the host-side port is bound to 127.0.0.1 unless you choose a LAN address.
ENV PATH=/opt/obscura/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    OBSCURA_DATA_DIR=/data \
    OBSCURA_MODELS_DIR=/models \
    OBSCURA_RAM_DIR=/run/obscura \
    OBSCURA_HOST=0.0.0.0 \
    OBSCURA_PORT=7860

VOLUME ["/data", "/models"]
EXPOSE 7860
USER 10001:10001
WORKDIR /

# Plain http or https (self-signed or internal CA) alike: see deploy/healthcheck.py. The start period
# covers loading a model onto the GPU.
HEALTHCHECK --interval=30s --timeout=10s --start-period=3m --retries=3 \
  CMD ["/opt/obscura/bin/python", "/usr/local/lib/obscura/healthcheck.py"]

ENTRYPOINT ["/opt/obscura/bin/obscura"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# One Dockerfile, two images:
#   docker build --target bot    -t jukebot-bot .     (Discord bot + scheduler + publisher, no torch)
#   docker build --target worker -t jukebot-worker .  (GPU worker; torch from PyPI ships the CUDA runtime)
# The base is pinned by digest (the tag is for people). Digest as recorded for this tag in a public
# project's ADR found by code search (not looked up from Docker Hub here, which we cannot reach):
# check it with `docker buildx imagetools inspect python:3.11-slim-bookworm` when updating.
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    JUKEBOT_DATABASE_URL=sqlite:////data/jukebot.db \
    JUKEBOT_STORAGE_URL=/data \
    JUKEBOT_MODEL_CACHE_DIR=/models
# /data and /models exist in the image, owned by the non-root user and private to it (0700): a named
# volume mounted there starts as a copy of them, so the worker can write downloaded weights.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:5.1.* fonts-dejavu-core=2.37-* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 jukebot \
    && mkdir /data /models \
    && chown jukebot:jukebot /data /models \
    && chmod 0700 /data /models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY db ./db
COPY engine ./engine
COPY lyrics ./lyrics
COPY publisher ./publisher

FROM base AS bot
RUN pip install --no-cache-dir ".[bot,lyrics,publisher]"
USER 1000
VOLUME ["/data"]
# Healthy while the database answers and its schema is the one this image needs.
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 CMD ["jukebot", "db", "current"]
ENTRYPOINT ["jukebot"]
CMD ["bot", "--no-worker"]

FROM base AS worker
# Triton compiles the fused decode kernels' launcher with a C compiler when the worker starts
# (the official Python image already has Python's headers); without one it falls back to the slow path.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc=4:12.2.* libc6-dev=2.36-* \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir ".[engine]"
# Triton's kernels and Inductor's compiled steps are built at a worker's first decode; on the models
# volume (owned by the worker's user) a restarted or replaced container finds them instead of
# building them again.
# The worker touches its health file while its loop turns and its job heartbeats reach the database;
# the healthcheck fails when the file is older than 3 minutes (a hung worker, a database gone). The
# start period covers loading (or first downloading) the model.
ENV CC=gcc \
    TRITON_CACHE_DIR=/models/triton-cache \
    TORCHINDUCTOR_CACHE_DIR=/models/inductor-cache \
    JUKEBOT_WORKER_HEALTH_FILE=/tmp/jukebot-worker.alive
USER 1000
VOLUME ["/data", "/models"]
HEALTHCHECK --interval=60s --timeout=20s --start-period=600s --retries=3 CMD ["jukebot", "worker-health", "--max-age", "180"]
ENTRYPOINT ["jukebot"]
CMD ["worker", "--device", "cuda:0"]

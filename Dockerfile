# syntax=docker/dockerfile:1
# One Dockerfile, two images:
#   docker build --target bot    -t jukebot-bot .     (Discord bot + scheduler + publisher, no torch)
#   docker build --target worker -t jukebot-worker .  (GPU worker; torch from PyPI ships the CUDA runtime)
FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    JUKEBOT_DATABASE_URL=sqlite:////data/jukebot.db \
    JUKEBOT_STORAGE_URL=/data
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:5.1.* fonts-dejavu-core=2.37-* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 jukebot \
    && mkdir /data && chown jukebot /data
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
ENTRYPOINT ["jukebot"]
CMD ["bot", "--no-worker"]

FROM base AS worker
RUN pip install --no-cache-dir ".[engine]"
USER 1000
VOLUME ["/data"]
ENTRYPOINT ["jukebot"]
CMD ["worker", "--device", "cuda:0"]

# The same service as `make run`, on the embedded default (STT, TTS, LLM and embeddings ship inside pip
# packages: no keys, nothing downloaded at run time). Runs as an unprivileged user (uid 10001); state
# (database, generated API key file, vector store, recordings) lives in /data, its only writable place:
# mount a volume there. `.dockerignore` keeps .env, keys, databases, recordings, .venv, tests and
# benchmark data out of the build context. Schema migrations run at start (or `alembic upgrade head`).
#
#   docker build -t ai-sdr .
#   docker run -p 9001:9001 -v ai-sdr-data:/data ai-sdr   # the generated API key: /data/.api_key
#
# Build arguments:
#   BASE_IMAGE       any Debian bookworm image with Python 3.11 and `python3 -m venv`
#                    (scripts/container_check.sh makes one with debootstrap where no registry is reachable)
#   TORCH_INDEX_URL  an index with the CPU build of torch (PyPI's default torch is a multi-GB CUDA
#                    build), e.g. PyTorch's own CPU wheel index; empty (the default): from pip's own
#                    configuration (the pipconf secret: a mirror or a local wheel). No index is named here.
# Build secrets (optional; mounted for one step, never stored in a layer):
#   pipconf          a pip.conf (private index, mirror, find-links):  --secret id=pipconf,src=FILE
#   pipca            a CA bundle that pip.conf names as /run/secrets/pipca
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
ARG TORCH_INDEX_URL=
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=pipca --mount=type=cache,target=/root/.cache/pip \
    PIP_CONFIG_FILE=/run/secrets/pipconf \
    pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
COPY requirements.txt requirements-nodeps.txt /tmp/req/
# The service's requirements without the test, lint and plotting tools; llama.cpp compiled portable
# (a -march=native build crashed on some CPUs, and an image runs on other machines than its builder).
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=pipca --mount=type=cache,target=/root/.cache/pip \
    grep -v -E '^(pytest|pytest-[a-z-]+|ruff|matplotlib|playwright|schemathesis|hypothesis)==' \
        /tmp/req/requirements.txt > /tmp/req/service.txt \
    && export PIP_CONFIG_FILE=/run/secrets/pipconf \
    && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" pip install -r /tmp/req/service.txt \
    && pip check \
    && pip install --no-deps -r /tmp/req/requirements-nodeps.txt

FROM ${BASE_IMAGE}
# libgomp1: llama.cpp's OpenMP runtime (the compilers stay in the build stage).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data && chown app:app /data && chmod 700 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code belongs to root: the service cannot change it. Byte-compiled here, as the user cannot.
COPY . .
RUN /opt/venv/bin/python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False \
    DATABASE_URL=sqlite+aiosqlite:////data/agents.db \
    API_KEY_FILE=/data/.api_key \
    CHROMA_PATH=/data/chroma_db \
    RECORDINGS_DIR=/data/recordings
USER app:app
VOLUME ["/data"]
EXPOSE 9001
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s \
    CMD python -c "import urllib.request;urllib.request.urlopen('http://127.0.0.1:9001/healthz')"
CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "9001"]

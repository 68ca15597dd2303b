# The same service as `make run`, on the embedded default (no keys needed).
# Runs as an unprivileged user; state (database, API key file, vector store, recordings) lives in
# /data, the only writable place: mount a volume there. `.dockerignore` keeps .env, keys, databases,
# recordings, .venv and benchmark data out of the build context.
FROM python:3.11-slim-bookworm

RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
# torch: the CPU wheel (the default index would pull a multi-GB CUDA build).
# Pass --build-arg PIP_EXTRA_INDEX_URL=<a CPU-only torch index> to avoid the CUDA wheels.
ARG PIP_EXTRA_INDEX_URL=
RUN pip install --no-cache-dir torch==2.13.0 \
    && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" pip install --no-cache-dir -r requirements.txt

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data && chown app:app /data && chmod 700 /data
COPY . .
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False \
    DATABASE_URL=sqlite+aiosqlite:////data/agents.db \
    API_KEY_FILE=/data/.api_key \
    CHROMA_PATH=/data/chroma_db \
    RECORDINGS_DIR=/data/recordings
USER app:app
VOLUME ["/data"]
EXPOSE 9001
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request;urllib.request.urlopen('http://127.0.0.1:9001/healthz')"
CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "9001"]

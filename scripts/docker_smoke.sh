#!/usr/bin/env bash
# Build the image, run it, wait for readiness, predict with every shipped model, check the process is
# not root, try a mounted models folder, measure size / start time / memory, and clean up.
# Exits non-zero on any failure.  Usage: scripts/docker_smoke.sh   (SKIP_BUILD=1 to reuse the image)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-medscan}
PORT=${PORT:-18000}
DATA=${DATA:-../shared/datasets}
NAME=medscan-smoke-$$
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() { docker rm -f "$NAME" "$NAME-mounted" >/dev/null 2>&1 || true; }
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== build"
  docker build --network host -t "$IMAGE" . >/tmp/medscan-docker-build.log 2>&1 || { tail -30 /tmp/medscan-docker-build.log; fail "docker build"; }
fi
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
echo "image size: $((size / 1024 / 1024)) MB"

wait_ready() {  # port, timeout seconds -> prints seconds taken
  local start=$(date +%s.%N)
  for _ in $(seq 1 "$2"0); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$1/health/ready', timeout=1)" 2>/dev/null; then
      python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')"; return 0
    fi
    sleep 0.1
  done
  return 1
}

echo "== run"
docker run -d --name "$NAME" --network host -e MEDSCAN_PORT="$PORT" "$IMAGE" >/dev/null
ready_s=$(wait_ready "$PORT" 120) || { docker logs "$NAME" | tail -30; fail "not ready within 120 s"; }
echo "docker run -> ready: ${ready_s} s"
for _ in $(seq 1 60); do  # the HEALTHCHECK runs every 10 s; wait for its first verdict
  health=$(docker inspect "$NAME" --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}')
  [ "$health" = starting ] || break
  sleep 1
done
echo "HEALTHCHECK: $health"
[ "$health" = healthy ] || fail "HEALTHCHECK says '$health'"

echo "== web page, metrics, V2 health"
curl -sf "http://127.0.0.1:$PORT/" | grep -q "Research use only" || fail "the web page at /"
curl -sf "http://127.0.0.1:$PORT/static/app.js" >/dev/null || fail "the page's script"
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q "medscan_models" || fail "/metrics"
curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null || fail "/v2/health/ready"
echo "== predict with every model"
diseases=$(curl -sf "http://127.0.0.1:$PORT/models" | python3 -c "
import json, sys
models = json.load(sys.stdin)['models']
bad = [m['disease'] for m in models if m['status'] != 'ready']
assert models and not bad, f'models not ready: {bad}'
print(' '.join(m['disease'] for m in models))")
[ -n "$diseases" ] || fail "no models served"
for disease in $diseases; do
  image=$(ls "$DATA/$disease/infected/" 2>/dev/null | head -n 1 || true)
  if [ -n "$image" ]; then
    file="$DATA/$disease/infected/$image"
  else  # no data set here: a synthetic image
    file=$(mktemp --suffix=.png)
    python3 -c "import zlib,struct,sys
w=h=64; raw=b''.join(b'\x00'+bytes((x*4)%256 for x in range(w)) for _ in range(h))
c=lambda t,d: struct.pack('>I',len(d))+t+d+struct.pack('>I',zlib.crc32(t+d))
open(sys.argv[1],'wb').write(b'\x89PNG\r\n\x1a\n'+c(b'IHDR',struct.pack('>IIBBBBB',w,h,8,0,0,0,0))+c(b'IDAT',zlib.compress(raw))+c(b'IEND',b''))" "$file"
  fi
  answer=$(curl -sf -F "file=@$file" "http://127.0.0.1:$PORT/predict/$disease") || fail "predict $disease"
  echo "$answer" | python3 -c "
import json, sys
a = json.load(sys.stdin)
assert a['disease'] == '$disease', a
assert a['label'] in ('infected', 'uninfected'), a
assert abs(sum(a['probabilities'].values()) - 100) < 1e-6, a
assert a['intended_use'] == 'research use only; not for diagnosis', a
print(f\"  {a['disease']:14} v{a['model_version']}  {a['label']:10} {a['probabilities']}\")" || fail "bad answer for $disease: $answer"
done
status=$(curl -s -o /dev/null -w '%{http_code}' -F "file=@README.md" "http://127.0.0.1:$PORT/predict/malaria")
[ "$status" = 415 ] || fail "a text file should give 415, got $status"
echo "  a text file -> $status"

echo "== user"
uid=$(docker exec "$NAME" id -u)
[ "$uid" != 0 ] || fail "the service runs as root"
pid1_user=$(docker exec "$NAME" sh -c 'stat -c %U /proc/1')
echo "uid inside: $uid, process 1 runs as: $pid1_user"
[ "$pid1_user" != root ] || fail "process 1 runs as root"

echo "== resources"
docker stats --no-stream --format 'memory with all models loaded: {{.MemUsage}}' "$NAME"

echo "== mounted models folder"
mounted=$(mktemp -d)
cp -r models/"$(echo "$diseases" | cut -d' ' -f1)" "$mounted/"
chmod -R a+rX "$mounted"
docker run -d --name "$NAME-mounted" --network host -v "$mounted:/models:ro" -e MEDSCAN_MODELS_DIR=/models \
  -e MEDSCAN_PORT=$((PORT + 1)) -e MEDSCAN_MAX_BATCH_SIZE=8 "$IMAGE" >/dev/null
wait_ready $((PORT + 1)) 120 >/dev/null || { docker logs "$NAME-mounted" | tail -20; fail "mounted: not ready"; }
served=$(curl -sf "http://127.0.0.1:$((PORT + 1))/models" | python3 -c "import json,sys; print(' '.join(m['disease'] for m in json.load(sys.stdin)['models']))")
echo "mounted /models serves: $served"
[ "$served" = "$(echo "$diseases" | cut -d' ' -f1)" ] || fail "mounted models folder not used"

echo "== stop"
docker stop -t 10 "$NAME" >/dev/null
echo "stopped with exit code $(docker inspect "$NAME" --format '{{.State.ExitCode}}')"
echo "SMOKE TEST PASSED"

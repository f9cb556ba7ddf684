#!/usr/bin/env bash
# Benchmark: sync a model (>= 1 GiB in shards + 1,000 small files) between two S3-compatible
# servers on loopback with `skybridge sync` (release build), `aws s3 sync` and `rclone sync`;
# prints times, ratios, the no-change re-sync times and skybridge's peak RSS.
#
#   bench/s3_sync.sh                 # moto servers, 4 x 256 MiB shards + 1,000 small files
#   S3_SERVER=s3s bench/s3_sync.sh   # s3s-fs servers (cargo install s3s-fs --features binary)
#   SHARDS=8 SHARD_MIB=256 SMALL_FILES=1000 PARALLEL=16 BIG_GIB=3 bench/s3_sync.sh
#
# BIG_GIB>0 also runs the #[ignore]d several-GiB peak-RSS test (tests/artifacts_memory.rs).
#
# Fairness notes: aws s3 sync cannot copy between two endpoints, so its figure is download to
# local disk + upload (what a user of it has to do); rclone streams remote to remote like
# skybridge. aws gets max_concurrent_requests=$PARALLEL, rclone --transfers/--checkers=$PARALLEL.
set -euo pipefail
cd "$(dirname "$0")/.."

S3_SERVER=${S3_SERVER:-moto}
SHARDS=${SHARDS:-4}
SHARD_MIB=${SHARD_MIB:-256}
SMALL_FILES=${SMALL_FILES:-1000}
PARALLEL=${PARALLEL:-16}
BIG_GIB=${BIG_GIB:-0}
TOOLS=${TOOLS:-skybridge aws rclone}   # subset to run; absent tools print as n/a

WORK=$(mktemp -d /tmp/skybridge-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }

# ---- tools -------------------------------------------------------------------------------
python3 -c 'import moto.server' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
command -v aws >/dev/null || python3 -m pip install --quiet --disable-pip-version-check awscli
command -v rclone >/dev/null || { apt-get update -qq && apt-get install -y -qq rclone >/dev/null; }
if [[ $S3_SERVER == s3s ]] && ! command -v s3s-fs >/dev/null; then
  cargo install --locked s3s-fs@0.14.1 --features binary # 0.14.1: newest that builds with Rust 1.95
fi
log "building skybridge (release)"
cargo build --release --quiet --bin skybridge
SKYBRIDGE=$PWD/target/release/skybridge

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=$WORK/aws-config
printf '[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = %s\n' "$PARALLEL" > "$AWS_CONFIG_FILE"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # poll until the endpoint answers, 60 s deadline
  local url=$1 deadline=$((SECONDS + 60))
  until curl -s -o /dev/null "$url"; do
    (( SECONDS < deadline )) || { echo "server $url did not start" >&2; exit 1; }
    sleep 0.1
  done
}

# Sets ENDPOINT. Not called in $(...): the server's pid must land in this shell's PIDS so the
# EXIT trap stops it.
start_server() {
  local port; port=$(free_port)
  case "$S3_SERVER" in
    moto) python3 -m moto.server -H 127.0.0.1 -p "$port" >"$WORK/server-$port.log" 2>&1 & ;;
    s3s)
      mkdir -p "$WORK/fs-$port"
      s3s-fs --host 127.0.0.1 --port "$port" --access-key test --secret-key test "$WORK/fs-$port" >"$WORK/server-$port.log" 2>&1 & ;;
    *) echo "unknown S3_SERVER=$S3_SERVER" >&2; exit 2 ;;
  esac
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/"
  ENDPOINT="http://127.0.0.1:$port"
}

log "starting two $S3_SERVER servers"
start_server; A=$ENDPOINT
start_server; B=$ENDPOINT
awsA() { aws --endpoint-url "$A" "$@"; }
awsB() { aws --endpoint-url "$B" "$@"; }

# ---- data --------------------------------------------------------------------------------
log "generating model: $SHARDS x $SHARD_MIB MiB shards + $SMALL_FILES small files"
mkdir -p "$WORK/model/weights" "$WORK/model/small"
for i in $(seq 1 "$SHARDS"); do
  head -c "$((SHARD_MIB * 1024 * 1024))" /dev/urandom > "$WORK/model/weights/shard-$i.safetensors"
done
python3 - "$WORK/model/small" "$SMALL_FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}.json"), "wb") as f:
        f.write(os.urandom(1024 + (i * 37) % 8192))
PY
TOTAL_BYTES=$(du -sb "$WORK/model" | cut -f1)
OBJECTS=$((SHARDS + SMALL_FILES))

awsA s3 mb s3://src >/dev/null
for b in dst-skybridge dst-aws dst-rclone; do awsB s3 mb "s3://$b" >/dev/null; done
log "seeding the source store"
awsA s3 sync --quiet "$WORK/model" s3://src/model

# ---- runs --------------------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

sky() {
  /usr/bin/time -v -o "$WORK/time.txt" "$SKYBRIDGE" sync --from s3://src/model --to s3://dst-skybridge/model \
    --from-endpoint "$A" --to-endpoint "$B" --from-path-style --to-path-style \
    --data-class internal --to-cloud public --parallel "$PARALLEL" -o json > "$WORK/sky.json"
  grep "Maximum resident set size" "$WORK/time.txt" | awk '{print $NF}'
}
awssync() {
  mkdir -p "$WORK/aws-dl"
  awsA s3 sync --quiet s3://src/model "$WORK/aws-dl"
  awsB s3 sync --quiet --delete "$WORK/aws-dl" s3://dst-aws/model
}
export RCLONE_CONFIG_SRC_TYPE=s3 RCLONE_CONFIG_SRC_PROVIDER=Other RCLONE_CONFIG_SRC_ENDPOINT=$A \
  RCLONE_CONFIG_SRC_ACCESS_KEY_ID=test RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY=test RCLONE_CONFIG_SRC_FORCE_PATH_STYLE=true
export RCLONE_CONFIG_DST_TYPE=s3 RCLONE_CONFIG_DST_PROVIDER=Other RCLONE_CONFIG_DST_ENDPOINT=$B \
  RCLONE_CONFIG_DST_ACCESS_KEY_ID=test RCLONE_CONFIG_DST_SECRET_ACCESS_KEY=test RCLONE_CONFIG_DST_FORCE_PATH_STYLE=true
# rclone 1.60 refuses custom CA bundles on its S3 transport; loopback is plain HTTP anyway.
rcl() { env -u AWS_CA_BUNDLE rclone sync --transfers "$PARALLEL" --checkers "$PARALLEL" src:src/model dst:dst-rclone/model; }

has() { [[ " $TOOLS " == *" $1 "* ]]; }
AWS=0 AWS2=0 RCL=0 RCL2=0
log "skybridge sync (full)";   t0=$(now); RSS_KB=$(sky); t1=$(now); SKY=$(elapsed "$t0" "$t1")
log "skybridge sync (no change)"; t0=$(now); RSS2_KB=$(sky); t1=$(now); SKY2=$(elapsed "$t0" "$t1")
SKY2_INTERNAL=$(python3 -c "import json;print(f\"{json.load(open('$WORK/sky.json'))['elapsed_seconds']:.3f}\")")
COPIED2=$(python3 -c "import json;print(len(json.load(open('$WORK/sky.json'))['copied']))")
log "skybridge: full ${SKY}s (peak RSS ${RSS_KB} KiB), no change ${SKY2}s (${SKY2_INTERNAL}s in sync_model, copied $COPIED2)"
if has aws; then
  log "aws s3 sync (full)";      t0=$(now); awssync; t1=$(now); AWS=$(elapsed "$t0" "$t1")
  log "aws s3 sync (no change)"; t0=$(now); awssync; t1=$(now); AWS2=$(elapsed "$t0" "$t1")
  log "aws: full ${AWS}s, no change ${AWS2}s"
fi
if has rclone; then
  log "rclone sync (full)";      t0=$(now); rcl; t1=$(now); RCL=$(elapsed "$t0" "$t1")
  log "rclone sync (no change)"; t0=$(now); rcl; t1=$(now); RCL2=$(elapsed "$t0" "$t1")
fi

python3 - <<PY
sky, aws, rcl = $SKY, $AWS, $RCL
sky2, aws2, rcl2 = $SKY2, $AWS2, $RCL2
mib = $TOTAL_BYTES / 2**20
print()
print(f"model: $OBJECTS objects, {mib:.0f} MiB ($SHARDS x $SHARD_MIB MiB shards + $SMALL_FILES small files); servers: $S3_SERVER x2 on loopback; parallel $PARALLEL")
print(f"{'tool':<34}{'full sync s':>12}{'MiB/s':>9}{'no-change s':>13}")
for name, full, again in [("skybridge sync", sky, sky2), ("aws s3 sync (download + upload)", aws, aws2), ("rclone sync", rcl, rcl2)]:
    if full:
        print(f"{name:<34}{full:>12.2f}{mib/full:>9.1f}{again:>13.2f}")
    else:
        print(f"{name:<34}{'n/a':>12}")
if aws:
    print(f"speed-up vs aws s3 sync: {aws/sky:.2f}x (target >= 2x)")
if rcl:
    print(f"speed-up vs rclone: {rcl/sky:.2f}x (target >= 1.5x)")
print(f"skybridge no-change re-sync of $OBJECTS objects: {sky2:.2f} s wall incl. process start ({float('$SKY2_INTERNAL'):.3f} s inside sync_model), copied $COPIED2 (target < 1 s)")
print(f"skybridge peak RSS: full {$RSS_KB/1024:.1f} MiB, no-change {$RSS2_KB/1024:.1f} MiB (target < 200 MB)")
PY

if (( BIG_GIB > 0 )); then
  log "several-GiB peak-RSS test ($BIG_GIB GiB, release)"
  SKYBRIDGE_TEST_S3_A=$A SKYBRIDGE_TEST_S3_B=$B SKYBRIDGE_BIG_GIB=$BIG_GIB \
    cargo test --release --quiet --test artifacts_memory -- --ignored --nocapture 2>&1 | grep -E "rssbig|test result|panicked"
fi

#!/usr/bin/env bash
# A production-like local set of services, as real processes on 127.0.0.1 (no Docker here):
#   - an S3-compatible server (moto's standalone server; MinIO in docker-compose), buckets created idempotently
#   - an MLflow tracking server: backend store in the PostgreSQL that runs on this machine, artifacts in S3
#
#   bash scripts/services.sh up       start what is not running yet, wait until healthy, print the environment
#   bash scripts/services.sh env      print the environment to export (eval "$(bash scripts/services.sh env)")
#   bash scripts/services.sh status   show what runs
#   bash scripts/services.sh down     stop only the processes this script started (from its pid files)
#
# Settings (environment; defaults in brackets):
#   SERVICES_DIR [<repo>/.services]   pid files, logs and the env file
#   SERVICES_S3_PORT [9000]  SERVICES_MLFLOW_PORT [5000]  SERVICES_MLFLOW_WORKERS [2]
#   SERVICES_MLFLOW_JOBS [false]  MLflow's own job runner (huey consumers), unused by the platform
#   SERVICES_PG_URL [postgresql://postgres@127.0.0.1:5432]  SERVICES_MLFLOW_DB [mlflow]
#   SERVICES_DVC_BUCKET [dvc-store]  SERVICES_MLFLOW_BUCKET [mlflow]  SERVICES_JOBS_BUCKET [notebook-jobs]
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [minioadmin / minioadmin] (moto accepts any key)
# Exit codes: 0 ok, 1 a service failed to start (its log is printed), 2 usage.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${SERVICES_DIR:-$ROOT/.services}"
S3_PORT="${SERVICES_S3_PORT:-9000}"
MLFLOW_PORT="${SERVICES_MLFLOW_PORT:-5000}"
MLFLOW_WORKERS="${SERVICES_MLFLOW_WORKERS:-2}"
# MLflow 3 also starts a job runner with seven huey consumers (GenAI evaluation jobs, periodic tasks);
# the platform uses none of them, and on a small machine they cost start-up time, memory and CPU.
MLFLOW_JOBS="${SERVICES_MLFLOW_JOBS:-false}"
PG_URL="${SERVICES_PG_URL:-postgresql://postgres@127.0.0.1:5432}"
MLFLOW_DB="${SERVICES_MLFLOW_DB:-mlflow}"
DVC_BUCKET="${SERVICES_DVC_BUCKET:-dvc-store}"
MLFLOW_BUCKET="${SERVICES_MLFLOW_BUCKET:-mlflow}"
JOBS_BUCKET="${SERVICES_JOBS_BUCKET:-notebook-jobs}"
KEY_ID="${AWS_ACCESS_KEY_ID:-minioadmin}"
SECRET="${AWS_SECRET_ACCESS_KEY:-minioadmin}"
REGION="${AWS_DEFAULT_REGION:-us-east-1}"
S3_URL="http://127.0.0.1:$S3_PORT"
MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT"
PG_BASE="${PG_URL%/}"
# The MLflow server runs with the same Python as this script's caller (the Makefile puts .venv/bin first).
PY="${SERVICES_PYTHON:-$(command -v python || true)}"
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${SERVICES_PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
BIN="$(dirname "$PY")"

say() { echo ">> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# A pid file names a process we started; it is ours only if it still runs the command we started
# (a recycled pid must never be signalled).
ours() {  # ours NAME -> prints the pid and succeeds when NAME's process is alive and ours
  local file="$DIR/$1.pid" pid
  [ -f "$file" ] || return 1
  pid="$(cat "$file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(cat "$DIR/$1.cmd" 2>/dev/null)" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for NAME SECONDS CHECK-COMMAND...
  local name="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ! ours "$name" >/dev/null; then
      echo "error: $name exited during start-up; last lines of $DIR/$name.log:" >&2
      tail -n 30 "$DIR/$name.log" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: $name not healthy after ${limit}s; last lines of $DIR/$name.log:" >&2
      tail -n 30 "$DIR/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

start() {  # start NAME MARKER COMMAND... : run COMMAND detached in its own session, record pid and marker
  local name="$1" marker="$2"; shift 2
  printf '%s' "$marker" >"$DIR/$name.cmd"
  setsid "$@" >"$DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$DIR/$name.pid"
}

s3_up() {
  if pid="$(ours s3)"; then say "S3 server already running (pid $pid) at $S3_URL"; return; fi
  port_open "$S3_PORT" && die "port $S3_PORT is taken by another process; set SERVICES_S3_PORT"
  say "starting the S3 server (moto) at $S3_URL"
  start s3 "moto_server -H 127.0.0.1 -p $S3_PORT" "$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT"
  wait_for s3 30 curl -sf "$S3_URL/"
}

buckets_up() {
  AWS_ACCESS_KEY_ID="$KEY_ID" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_DEFAULT_REGION="$REGION" \
    "$PY" - "$S3_URL" "$DVC_BUCKET" "$MLFLOW_BUCKET" "$JOBS_BUCKET" <<'PY'
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, *names = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint)
for name in dict.fromkeys(names):
    try:
        s3.head_bucket(Bucket=name)
        print(f">> bucket s3://{name} exists", file=sys.stderr)
    except ClientError:
        s3.create_bucket(Bucket=name)
        print(f">> bucket s3://{name} created", file=sys.stderr)
PY
}

database_up() {
  pg_isready -d "$PG_BASE/postgres" -q \
    || die "PostgreSQL is not reachable at $PG_BASE (set SERVICES_PG_URL, or start it: see SETUP.md)"
  if [ "$(psql "$PG_BASE/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$MLFLOW_DB'")" = "1" ]; then
    say "database $MLFLOW_DB exists"
  else
    psql "$PG_BASE/postgres" -qc "CREATE DATABASE \"$MLFLOW_DB\"" >/dev/null
    say "database $MLFLOW_DB created"
  fi
}

mlflow_up() {
  if pid="$(ours mlflow)"; then say "MLflow server already running (pid $pid) at $MLFLOW_URL"; return; fi
  port_open "$MLFLOW_PORT" && die "port $MLFLOW_PORT is taken by another process; set SERVICES_MLFLOW_PORT"
  local backend="${PG_BASE/postgresql:/postgresql+psycopg2:}/$MLFLOW_DB"
  say "starting the MLflow server at $MLFLOW_URL (backend $backend, artifacts s3://$MLFLOW_BUCKET; first start ~20 s)"
  MLFLOW_S3_ENDPOINT_URL="$S3_URL" AWS_ENDPOINT_URL="$S3_URL" AWS_ACCESS_KEY_ID="$KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$SECRET" AWS_DEFAULT_REGION="$REGION" PATH="$BIN:$PATH" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="$MLFLOW_JOBS" \
    start mlflow "--port $MLFLOW_PORT" "$BIN/mlflow" server \
      --backend-store-uri "$backend" --artifacts-destination "s3://$MLFLOW_BUCKET" \
      --host 127.0.0.1 --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS"
  wait_for mlflow 120 curl -sf "$MLFLOW_URL/health"
}

print_env() {
  cat <<EOF
# production-like services (scripts/services.sh); eval "\$(bash scripts/services.sh env)" or: source $DIR/env
export AWS_ENDPOINT_URL=$S3_URL
export MLFLOW_S3_ENDPOINT_URL=$S3_URL
export AWS_ACCESS_KEY_ID=$KEY_ID
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_DEFAULT_REGION=$REGION
export MLFLOW_TRACKING_URI=$MLFLOW_URL
export JOBRUNNER_ARTIFACT_URI=s3://$JOBS_BUCKET/outputs
# DVC remote (credentials stay in the git-ignored .dvc/config.local):
#   dvc remote add --local -d -f s3 s3://$DVC_BUCKET/store
#   dvc remote modify --local s3 endpointurl $S3_URL
#   dvc remote modify --local s3 access_key_id $KEY_ID
#   dvc remote modify --local s3 secret_access_key $SECRET
EOF
}

up() {
  mkdir -p "$DIR"
  command -v curl >/dev/null || die "curl is needed (apt-get install -y curl)"
  [ -x "$BIN/moto_server" ] || die "$BIN/moto_server not found: run make install (moto[server])"
  [ -x "$BIN/mlflow" ] || die "$BIN/mlflow not found: run make install"
  s3_up
  buckets_up
  database_up
  mlflow_up
  print_env >"$DIR/env"
  say "all services healthy; environment (also in $DIR/env):"
  print_env
}

down() {
  local name pid stopped=0
  for name in mlflow s3; do
    if pid="$(ours "$name")"; then
      say "stopping $name (pid $pid)"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
      stopped=$((stopped + 1))
    fi
    rm -f "$DIR/$name.pid" "$DIR/$name.cmd"
  done
  rm -f "$DIR/env"
  say "stopped $stopped service(s) started by this script (the database $MLFLOW_DB is kept)"
}

status() {
  local name pid rc=0
  for name in s3 mlflow; do
    if pid="$(ours "$name")"; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; rc=3; fi
  done
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: bash scripts/services.sh up|down|status|env" >&2; exit 2 ;;
esac

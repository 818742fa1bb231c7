#!/bin/sh
# First start of the PostgreSQL volume only (docker-entrypoint-initdb.d): the MLflow tracking database
# beside the job store (POSTGRES_DB=jobrunner), owned by the same user. MLflow creates its tables itself.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
SELECT 'CREATE DATABASE mlflow OWNER "$POSTGRES_USER"'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec
SQL

#!/usr/bin/env bash
# Make a self-signed TLS certificate for local use of the stack (nginx reads fullchain.pem + privkey.pem).
# Usage: scripts/gen-selfsigned-cert.sh [OUT_DIR] [HOSTNAME]
#   OUT_DIR   default: platform/nginx/certs (what docker-compose.yml mounts unless TLS_CERT_DIR is set)
#   HOSTNAME  default: localhost; the certificate also covers 127.0.0.1
# Production uses Let's Encrypt instead: see docs/operations.md ("TLS").
set -euo pipefail
out="${1:-$(dirname "$0")/../platform/nginx/certs}"
host="${2:-localhost}"
days="${CERT_DAYS:-30}"
mkdir -p "$out"
san="DNS:${host},DNS:localhost,IP:127.0.0.1"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -keyout "$out/privkey.pem" -out "$out/fullchain.pem" \
  -subj "/CN=${host}" -addext "subjectAltName=${san}" 2>/dev/null
chmod 600 "$out/privkey.pem"
echo "self-signed certificate for ${host} (valid ${days} days) in ${out}"

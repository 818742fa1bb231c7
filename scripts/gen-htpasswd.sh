#!/usr/bin/env bash
# Write the nginx basic-auth file that guards /dashboards/, /mlflow/, /prometheus/ and /alertmanager/.
# Usage: scripts/gen-htpasswd.sh USER [FILE]     (reads the password from NGINX_BASIC_AUTH_PASSWORD or asks)
#   FILE default: platform/secrets/nginx_htpasswd (what docker-compose.yml mounts unless NGINX_HTPASSWD_FILE is set)
# Run again with another USER to add a user; an existing USER line is replaced.
set -euo pipefail
user="${1:?usage: gen-htpasswd.sh USER [FILE]}"
file="${2:-$(dirname "$0")/../platform/secrets/nginx_htpasswd}"
password="${NGINX_BASIC_AUTH_PASSWORD:-}"
if [ -z "$password" ]; then
  read -r -s -p "password for ${user}: " password; echo
fi
mkdir -p "$(dirname "$file")"
touch "$file"
# 644: nginx's worker processes (user nginx, not root) read it through the Docker secret bind mount;
# it holds salted hashes only. Keep the folder itself private (platform/secrets is git-ignored).
chmod 644 "$file"
hash="$(printf '%s' "$password" | openssl passwd -apr1 -stdin)"
grep -v "^${user}:" "$file" > "$file.tmp" || true
printf '%s:%s\n' "$user" "$hash" >> "$file.tmp"
chmod 644 "$file.tmp"
mv "$file.tmp" "$file"
echo "basic-auth user ${user} written to ${file}"

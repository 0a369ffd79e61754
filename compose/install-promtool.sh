#!/usr/bin/env bash
# Puts promtool at DEST (make: .venv/bin/promtool) for `compose/lint.sh`.
#
#   compose/install-promtool.sh .venv/bin/promtool
#
# promtool comes from the distribution's `prometheus` package (Debian 12: Prometheus 2.42). The .deb is
# fetched with `apt-get download` and only promtool is unpacked: installing the package would also
# install, and on a systemd host start, a Prometheus server. Without package lists, `apt-get update` runs
# first (as root, or through passwordless sudo, as on CI runners). Where there is no apt-get at all, a
# promtool already on PATH is linked instead.
set -euo pipefail

dest=${1:?usage: compose/install-promtool.sh DEST}

if ! command -v apt-get >/dev/null 2>&1; then
    if found=$(command -v promtool); then
        ln -sf "$found" "$dest"
        echo "promtool: using $found (no apt-get here)"
        exit 0
    fi
    echo "compose/install-promtool.sh: no apt-get and no promtool on PATH; install Prometheus's promtool" >&2
    exit 1
fi

as_root=()
if ((EUID != 0)); then
    if sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    fi
fi
# As root, apt hands downloads to its unprivileged _apt user, which cannot write to a private temp dir.
download=(apt-get -q download)
((EUID == 0)) && download=(apt-get -q -o APT::Sandbox::User=root download)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! "${download[@]}" prometheus >/dev/null 2>&1; then
    if ((EUID != 0 && ${#as_root[@]} == 0)); then
        echo "compose/install-promtool.sh: 'apt-get download prometheus' failed and 'apt-get update' needs root" >&2
        exit 1
    fi
    "${as_root[@]}" apt-get -q update >/dev/null
    "${download[@]}" prometheus
fi
dpkg-deb --extract prometheus_*.deb unpacked
cd - >/dev/null
install -m 0755 "$work/unpacked/usr/bin/promtool" "$dest"
"$dest" --version | head -n 1

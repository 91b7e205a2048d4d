#!/usr/bin/env bash
# Start the daemons the course needs when no init system does (containers, CI, WSL).
#
#   scripts/services.sh start [libvirt] [docker] [registry]   (default: all)
#   scripts/services.sh stop  [...]
#   scripts/services.sh status
#
# Each daemon runs under `tini -s`: a subreaper, so the processes it daemonizes (qemu,
# containerd-shim) are reaped when they exit even where PID 1 does not reap orphans.
# Logs go to /var/log/edu/NAME.log. Starting a running service does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=/var/log/edu
REGISTRY_CONFIG=$PWD/scripts/registry.yml

is_up() {
    case $1 in
        virtlogd) [ -S /run/libvirt/virtlogd-sock ] && pgrep -x virtlogd >/dev/null ;;
        libvirtd) virsh -q -c qemu:///system version >/dev/null 2>&1 ;;
        dockerd) docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ;;
        registry) python3 - <<'PY' 2>/dev/null
import urllib.request
urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=2)
PY
        ;;
    esac
}

command_of() {
    case $1 in
        virtlogd) echo "virtlogd" ;;
        libvirtd) echo "libvirtd" ;;
        dockerd) echo "dockerd" ;;
        registry) echo "docker-registry serve $REGISTRY_CONFIG" ;;
    esac
}

start_one() {
    local name=$1 i
    if is_up "$name"; then
        echo "    $name: already running"
        return 0
    fi
    mkdir -p "$LOG" /var/lib/edu/registry
    # setsid -f: a new session, so Ctrl-C in the terminal that ran `make lab` leaves it be.
    # shellcheck disable=SC2046
    setsid -f tini -s -- $(command_of "$name") >>"$LOG/$name.log" 2>&1 </dev/null
    for i in $(seq 1 150); do
        if is_up "$name"; then
            echo "    $name: started"
            return 0
        fi
        sleep 0.2
    done
    echo "    $name did not come up in 30 s; the end of $LOG/$name.log says:" >&2
    tail -5 "$LOG/$name.log" >&2
    return 1
}

stop_one() {
    local pat i
    pat="tini -s -- $(command_of "$1")"
    if ! pkill -f -- "^$pat"; then echo "    $1: not running"; return 0; fi
    # tini exits when the daemon has: wait for it, so a start right after finds no daemon
    # still shutting down (dockerd would refuse: "pid file found").
    for i in $(seq 1 150); do
        pgrep -f -- "^$pat" >/dev/null || { echo "    $1: stopped"; return 0; }
        sleep 0.2
    done
    echo "    $1 is still stopping after 30 s; see $LOG/$1.log" >&2
    return 1
}

expand() {
    local s
    for s in "$@"; do
        case $s in
            libvirt) echo virtlogd libvirtd ;;
            docker) echo dockerd ;;
            registry) echo registry ;;
            *) echo "unknown service '$s' (known: libvirt docker registry)" >&2; return 2 ;;
        esac
    done
}

action=${1:-status}
shift || true
[ $# -gt 0 ] || set -- libvirt docker registry
names=$(expand "$@")
case $action in
    start) for n in $names; do start_one "$n"; done ;;
    stop) for n in $names; do stop_one "$n"; done ;;
    status) for n in $names; do
                if is_up "$n"; then echo "$n: running"; else echo "$n: stopped"; fi
            done ;;
    *) echo "usage: $0 start|stop|status [libvirt] [docker] [registry]" >&2; exit 2 ;;
esac

# Shared by the setup scripts: one line per step, and a failed step names itself and its fix.
# shellcheck shell=bash

step() {
    # step "what is being done" "how to fix it if it fails" command args...
    local name=$1 fix=$2
    shift 2
    local start=$SECONDS
    printf '\033[1m==> %s\033[0m\n' "$name"
    if ! "$@"; then
        printf '\n\033[31mFAILED: %s\033[0m\n  fix: %s\n' "$name" "$fix" >&2
        exit 1
    fi
    printf '    (%d s)\n' $((SECONDS - start))
}

is_root() { [ "$(id -u)" = 0 ]; }

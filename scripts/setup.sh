#!/usr/bin/env bash
# Prepare everything the course needs; `make lab` and `make test` both run this first.
# Idempotent: each step checks before it acts, so a second run takes seconds.
#
#   scripts/setup.sh          system packages, .venv, services (as root: libvirt, dockerd),
#                             guest kernel, probe guest
#   scripts/setup.sh --test   the same, plus what only tests need (a registry, chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

for_tests=0
[ "${1:-}" = "--test" ] && for_tests=1

# Debian/Ubuntu packages. gcc, pkg-config and the headers are for libvirt-python, which
# builds from source; docker.io and docker-registry are the real peers the tests compare with,
# with apache2-utils (htpasswd: bcrypt logins) and openssl (signed tokens) for registry auth;
# gnupg makes the throwaway key lesson 04 signs an image with (skopeo standalone-sign).
PACKAGES=(gcc python3-dev python3-venv pkg-config busybox-static cpio e2fsprogs
          qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-dev iproute2 nftables
          uidmap tini runc debootstrap skopeo docker.io docker-registry apache2-utils openssl
          gnupg)
# The browser test (tests/test_browser.py) drives Debian's Chromium with Playwright: no browser
# download, which an offline classroom or CI could not do. Students do not need it.
# tests/test_compose.py runs Debian's docker-compose (1.29) beside edu compose as a reference.
if [ $for_tests = 1 ]; then PACKAGES+=(chromium docker-compose); fi
# tests/test_hub.py runs the course's JupyterHub, whose proxy comes from npm (scripts/hub).
if [ $for_tests = 1 ]; then PACKAGES+=(nodejs); command -v npm >/dev/null || PACKAGES+=(npm); fi

missing_packages() {
    local p
    for p in "${PACKAGES[@]}" "$(rootless_net_package)"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" \
            || echo "$p"
    done
}

rootless_net_package() {
    # pasta (from passt) where the distro has it, else slirp4netns (older Ubuntu).
    if apt-cache show passt >/dev/null 2>&1; then echo passt; else echo slirp4netns; fi
}

install_packages() {
    local missing
    missing=$(missing_packages | tr '\n' ' ')
    if [ -z "${missing// /}" ]; then
        echo "    all ${#PACKAGES[@]} packages present"
        return 0
    fi
    if ! is_root; then
        echo "    missing: $missing"
        echo "    run once as root:  sudo apt-get install -y $missing"
        echo "    (continuing: what needs them will say so in 'edu doctor')"
        return 0
    fi
    echo "    installing: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/tmp/edu-apt.log 2>&1 \
        || { tail -20 /tmp/edu-apt.log; return 1; }
}

make_venv() {
    local stamp want
    want=$(cat pyproject.toml | sha256sum | cut -c1-16)
    stamp=.venv/.edu-installed
    if [ -x .venv/bin/python ] && [ "$(cat $stamp 2>/dev/null)" = "$want" ]; then
        echo "    .venv is up to date"
        return 0
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    # compat: a plain .pth path entry. The default editable finder costs ~18 ms at every
    # interpreter start, which `edu run` would pay each time (bench/cli_startup.py).
    .venv/bin/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
    echo "$want" > $stamp
}

edu_launcher() {
    # pip's .venv/bin/edu, rewritten to start Python without `site` (-S): 3-4 ms off every
    # `edu` start, which a thin `edu run` pays (edu_cli/launcher.py says how).
    .venv/bin/python -m edu_cli.launcher .venv/bin/edu "$PWD"
}

tun_for_users() {
    # Rootless containers get their network from pasta, which opens /dev/net/tun. udev makes
    # it mode 0666 on Debian and Ubuntu; where no udev runs (containers, CI) it stays 0600.
    if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
        chmod 0666 /dev/net/tun && echo "    /dev/net/tun made 0666, as udev would"
    fi
    return 0
}

kvm_for_libvirt() {
    # udev gives /dev/kvm to the kvm group (mode 0660) on Debian; where no udev runs it stays
    # root's alone. libvirt's QEMU user (libvirt-qemu, in group kvm) then cannot open it,
    # while libvirt's cache says KVM is there: libvirtd re-probes QEMU on every call, and a
    # guest's start takes 10 s longer (measured; bench/libvirt_overhead.py). Guests still
    # use KVM only if doctor's probe boot under KVM works.
    if [ -c /dev/kvm ] && getent group kvm >/dev/null \
            && [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ]; then
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm \
            && echo "    /dev/kvm given to group kvm, mode 0660, as udev would"
    fi
    return 0
}

edu_on_path() {
    # The README's commands are plain `edu ...`, typed in any new shell: link this clone's
    # .venv/bin/edu where login shells look, as pipx does. Root: /usr/local/bin, on every
    # PATH. Anyone else: ~/.local/bin, which Debian's and Ubuntu's ~/.profile put on PATH at
    # login when it exists. The last clone set up wins; the link says which one it is.
    local dir target=$PWD/.venv/bin/edu
    if is_root; then dir=/usr/local/bin; else dir=$HOME/.local/bin; fi
    mkdir -p "$dir"
    if [ -e "$dir/edu" ] && [ ! -L "$dir/edu" ]; then
        echo "    $dir/edu exists and is not our link: left alone; use $target"
        return 0
    fi
    if [ "$(readlink "$dir/edu" 2>/dev/null)" != "$target" ]; then
        ln -sfn "$target" "$dir/edu"
        echo "    $dir/edu -> $target"
    fi
    case ":$PATH:" in
        *":$dir:"*) ;;
        *) echo "    $dir is not on this shell's PATH yet: open a new login shell, or run"
           echo "    export PATH=\"$dir:\$PATH\"" ;;
    esac
}

docker_for_lessons() {
    # Lessons show Docker beside edu. Where no init system started dockerd (containers, CI,
    # WSL), start it, as root; without it (not installed, or it would not start), the Docker
    # cells replay their recordings and the rest of the course runs live.
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "    docker is not installed: the Docker cells will replay their recordings"
        return 0
    fi
    if ! scripts/services.sh start docker; then
        echo "    dockerd did not start (see /var/log/edu/dockerd.log): the Docker cells will"
        echo "    replay their recordings; 'scripts/services.sh start docker' tries again"
    fi
    return 0
}

docker_without_root() {
    # Not root: dockerd is not ours to start. A dockerd that already answers this user (the
    # docker group, or rootless Docker) serves the Docker cells; else they replay.
    if command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; then
        echo "    dockerd answers you: the Docker cells run live"
    else
        echo "    not root, so dockerd is not started: the Docker cells will replay their"
        echo "    recordings (as root, 'make lab' starts dockerd)"
    fi
}

compile_bytecode() {
    # Where PYTHONDONTWRITEBYTECODE is set (this project's CI is), every `edu` start would
    # recompile the project from source: ~80 ms. Write the .pyc files once, here.
    .venv/bin/python -m compileall -q edu_runtime edu_cli vm_compare >/dev/null
}

step "system packages (apt-get)" \
     "run 'sudo apt-get update' and try again; see /tmp/edu-apt.log" install_packages
step "Python environment in .venv (pip install -e .[dev])" \
     "check that python3 >= 3.11 and python3-venv are installed, then delete .venv and retry" \
     make_venv
step "the edu command, started without site (fast start-up)" \
     "check that .venv/bin is writable, then delete .venv and retry" edu_launcher
step "the edu command on your PATH" "check that you may write to /usr/local/bin or ~/.local/bin" \
     edu_on_path
step "byte-compile the project (fast start-up)" "check file permissions in the checkout" \
     compile_bytecode
if is_root; then
    step "/dev/net/tun for rootless networking (pasta)" "check that the tun module is loaded" \
         tun_for_users
    step "/dev/kvm for libvirt's QEMU user" "check that /dev/kvm and the kvm group exist" \
         kvm_for_libvirt
    step "services: virtlogd and libvirtd (under tini -s)" \
         "see /var/log/edu/libvirtd.log; 'scripts/services.sh status' shows what runs" \
         scripts/services.sh start libvirt
    if [ $for_tests = 1 ]; then
        step "services for tests: dockerd and a registry on 127.0.0.1:5000" \
             "see /var/log/edu/dockerd.log and registry.log" \
             scripts/services.sh start docker registry
    else
        step "services: dockerd, so lessons can show Docker beside edu (under tini -s)" \
             "see /var/log/edu/dockerd.log; the Docker cells replay meanwhile" \
             docker_for_lessons
    fi
else
    echo "==> services: not root, so libvirt is qemu:///session"
    docker_without_root
fi
step "guest kernel (Debian's linux-image-amd64) and the probe guest" \
     "run 'sudo apt-get update' (apt-get download needs the package lists), then retry" \
     .venv/bin/python -m vm_compare.setup
step "base image busybox (every later lesson and test uses it)" \
     "see the message above; 'edu bootstrap busybox' retries" \
     .venv/bin/edu bootstrap busybox
if is_root && [ $for_tests = 1 ]; then
    step "JupyterHub for tests/test_hub.py: its proxy (npm), the students' course (/opt/edu-course)" \
         "see the message above; 'scripts/hub install' retries" scripts/hub install
fi

offer_more_images() {
    local have
    have=$(.venv/bin/edu images 2>/dev/null | awk 'NR>1 {print $1}' | sort -u | tr '\n' ' ')
    local want=()
    for name in debian python node; do
        [[ " $have " == *" $name "* ]] || want+=("$name")
    done
    [ ${#want[@]} -gt 0 ] || return 0
    if [ -t 0 ] && [ -t 1 ]; then
        read -r -p "    Build the ${want[*]} base images now (debootstrap, about 2 min)? [y/N] " a
        case $a in
            y|Y|yes) .venv/bin/edu bootstrap "${want[@]}" ;;
            *) echo "    later: .venv/bin/edu bootstrap ${want[*]}" ;;
        esac
    else
        echo "    not at a terminal; build them later with: .venv/bin/edu bootstrap ${want[*]}"
    fi
}
if [ $for_tests = 0 ]; then
    step "more base images (debian, python, node)" \
         "see the message above; 'edu bootstrap debian' retries" offer_more_images
fi
echo "==> ready"

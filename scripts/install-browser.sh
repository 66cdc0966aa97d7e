#!/bin/sh
# Installs what the studio's browser test and the music renderer need from Debian:
#   chromium + chromium-driver  (required: tests/test_studio.py drives headless Chromium
#                                 with Selenium through /usr/bin/chromedriver, offline)
#   fluidsynth + fluid-soundfont-gm (optional: nicer WAV rendering of compositions)
# Idempotent: packages already installed are skipped, and nothing runs apt when all are.
# Run as root (CI containers) or as a user with sudo.
#   sh scripts/install-browser.sh
set -eu

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-browser.sh: needs root (or sudo) to run apt-get" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser.sh: apt-get not found; install chromium and chromium-driver" \
         "(chromedriver at /usr/bin/chromedriver) with your system's package manager" >&2
    exit 1
fi

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing() {
    for package in "$@"; do
        is_installed "$package" || printf '%s ' "$package"
    done
}

export DEBIAN_FRONTEND=noninteractive
updated=no
apt_update_once() {
    if [ "$updated" = no ]; then
        $SUDO apt-get update
        updated=yes
    fi
}

required=$(missing chromium chromium-driver)
if [ -n "$required" ]; then
    apt_update_once
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    $SUDO apt-get install -y --no-install-recommends $required
else
    echo "chromium and chromium-driver already installed"
fi

# The music renderer falls back to its own synthesiser without these, so a failure is a note.
for package in fluidsynth fluid-soundfont-gm; do
    if is_installed "$package"; then
        echo "$package already installed"
        continue
    fi
    apt_update_once || true
    if ! $SUDO apt-get install -y --no-install-recommends "$package"; then
        echo "note: could not install $package; music renders with the built-in synthesiser instead" >&2
    fi
done

for tool in chromium chromedriver; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-browser.sh: $tool is still missing after installing" >&2
        exit 1
    fi
done
echo "ok: $(chromium --version 2>/dev/null || echo chromium); $(chromedriver --version 2>/dev/null | head -n 1)"

#!/usr/bin/env bash
# The Debian packages the tests need, installed when one of their programs is missing:
#   prometheus -> prometheus, promtool (alert rules, the real-Prometheus test)
#   chromium   -> chromium               (the freshness report, rendered headless)
# Called by `make setup`; silent and instant when everything is there. Installs with
# apt-get as root, or through sudo when it works without a password prompt; otherwise
# it fails with one line naming the package and the command to run.
set -euo pipefail

# program:package, in the order they are checked.
NEEDED="promtool:prometheus prometheus:prometheus chromium:chromium"

missing_packages() {
  local entry program package out=""
  for entry in $NEEDED; do
    program=${entry%%:*} package=${entry#*:}
    if ! command -v "$program" >/dev/null 2>&1 && [[ " $out " != *" $package "* ]]; then
      out="${out:+$out }$package"
    fi
  done
  echo "$out"
}

fail() {
  echo "error: $1" >&2
  exit 1
}

packages=$(missing_packages)
[[ -z $packages ]] && exit 0

command="apt-get install -y --no-install-recommends $packages"
if ! command -v apt-get >/dev/null 2>&1; then
  fail "missing Debian package(s) $packages and no apt-get here: install them with your package manager (wanted: promtool, prometheus, chromium on PATH)"
fi
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  fail "missing Debian package(s) $packages; run: sudo apt-get update && sudo $command"
fi

echo "installing Debian package(s): $packages"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # $packages is a list of words
if ! "${as_root[@]}" apt-get update -q ||
  ! "${as_root[@]}" apt-get install -y -q --no-install-recommends $packages; then
  fail "could not install Debian package(s) $packages; run: sudo apt-get update && sudo $command"
fi
packages=$(missing_packages)
[[ -z $packages ]] || fail "installed, yet still missing the programs of: $packages (check PATH)"

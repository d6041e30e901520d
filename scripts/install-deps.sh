#!/usr/bin/env bash
# Installs the Debian packages twofold builds and tests with, if missing.
# Usage: scripts/install-deps.sh [build|test|bench|package|package-test]
set -euo pipefail

build=(libpam0g-dev pkg-config libssl-dev)
# systemd: systemd-socket-activate, for the test of socket activation.
runtime=(dbus dbus-bin oathtool passwd util-linux mandoc openssh-server openssh-client openssl python3-aiosmtpd systemd postgresql)
bench=(libpam-google-authenticator libpam-oath libnss-wrapper eatmydata)
# dpkg-shlibdeps finds the libraries the binaries need (cargo-deb's $auto);
# rpmbuild makes the RPM; python3 runs scripts/copyright.py.
package=(dpkg-dev rpm python3)
# A scratch Debian root for the .deb, systemd-analyze for the unit, and the
# distributions' linters.
package_test=(mmdebstrap systemd oathtool lintian rpmlint)

case "${1:-test}" in
  build) wanted=("${build[@]}") ;;
  test) wanted=("${build[@]}" "${runtime[@]}") ;;
  bench) wanted=("${build[@]}" "${runtime[@]}" "${bench[@]}") ;;
  package) wanted=("${build[@]}" "${package[@]}") ;;
  package-test) wanted=("${build[@]}" "${package[@]}" "${package_test[@]}") ;;
  *) echo "usage: $0 [build|test|bench|package|package-test]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "twofold needs these Debian packages: ${missing[*]}" >&2
  echo "Run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Installing openssh-server must not start the host's own sshd on port 22:
# the tests and the demo run their own on 127.0.0.1. policy-rc.d is Debian's
# switch for "do not start services from maintainer scripts".
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

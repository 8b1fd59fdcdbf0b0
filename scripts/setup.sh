#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for virt-reconcile: host packages, npm
# dependencies, the build, and libvirt's daemons. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-utils qemu-block-extra qemu-system-x86
  libvirt-daemon-system libvirt-clients
  libvirt-daemon-driver-storage-iscsi-direct libvirt-daemon-driver-storage-rbd
  tgt e2fsprogs xfsprogs btrfs-progs parted util-linux kmod xorriso scrub
  xz-utils gzip zstd bzip2 podman attr
  git gnupg openssl chromium
  openssh-client openssh-server
)

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs packages and starts libvirtd)" >&2
  exit 1
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup.sh: Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  # No service may start from the package scripts: this machine may have no init system.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# /dev/kvm as udev's rule leaves it (root:kvm 0660), where no udev manages /dev (containers,
# minimal VMs): a root-only node lets no QEMU that libvirt starts use KVM, and makes libvirt
# re-probe QEMU at every capabilities call.
if [ -c /dev/kvm ] && ! pgrep -x systemd-udevd >/dev/null && ! pgrep -x udevd >/dev/null; then
  getent group kvm >/dev/null || groupadd --system kvm
  if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
    echo "setup.sh: no udev here; giving /dev/kvm group kvm and mode 0660 (was $(stat -c '%U:%G %a' /dev/kvm))"
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  fi
fi

# npm ci builds too (the prepare script); otherwise build here. The build bundles the CLI
# into dist/cli.js and its chunks (scripts/bundle.mjs) and marks it executable.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build --silent
fi

# `reconcile` on the PATH, from this clone (a global symlink, as npm link makes): CI jobs and
# the systemd unit run it by name, never through npx, which in another repository would fetch
# an unrelated npm package that happens to be called "reconcile".
npm link --silent --no-audit --no-fund >/dev/null

# libvirt for the example and for people using the host's own daemon (tests start private ones).
if ! pgrep -x virtlogd >/dev/null; then virtlogd -d; fi
if ! pgrep -x libvirtd >/dev/null; then libvirtd -d; fi
# Ready when it answers: a socket file alone may be left over from a daemon that is gone.
for _ in $(seq 1 100); do
  virsh -q -c qemu:///system uri >/dev/null 2>&1 && break
  sleep 0.1
done
echo "setup.sh: ready ($(qemu-img --version | head -1); libvirt $(libvirtd --version | awk '{print $NF}'))"

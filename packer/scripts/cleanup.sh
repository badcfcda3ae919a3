#!/usr/bin/env bash
# Last provisioning step: leaves nothing instance-specific or secret in the AMI (host keys,
# machine id, cloud-init state, logs, shell history, package caches). Runs as root.
set -euo pipefail
log() { printf 'cleanup: %s\n' "$*" >&2; }
log "caches and instance state"
if command -v apt-get >/dev/null 2>&1; then
  apt-get clean
  rm -rf /var/lib/apt/lists/*
else
  dnf clean all
fi
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init clean --logs --seed
fi
rm -f /etc/ssh/ssh_host_*
# An empty machine-id is regenerated at first boot (a missing one would mark it "first boot"
# for every unit preset too).
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -rf /tmp/* /var/tmp/* /root/.bash_history /home/*/.bash_history /root/.ssh /home/*/.ssh/authorized_keys
find /var/log -type f -exec truncate -s 0 {} +
sync

#!/usr/bin/env bash
# Last provisioning step: leaves nothing instance-specific or secret in the AMI (host keys,
# machine id, cloud-init state, logs, shell history, package caches), then removes
# openssh-server. Runs as root.
#
# Packer's communicator is SSH tunnelled through Session Manager: every script is a new SSH
# session, so sshd must stay until this, the last script of the last provisioner. Removing the
# package stops the listening sshd only (Debian's ssh.service and AL2023's sshd.service stop the
# listener, not the sessions it forked, which live in their own session scopes), so this session
# finishes and reports its exit status; nothing after it needs a new session (Packer stops the
# instance through the EC2 API). (The tests build with communicator none and never run this over
# SSH; tests/ checks the order statically.)
#
# The very last step writes the image's SBOM (bake-agent sbom, after the last package change)
# to /usr/share/bake/sbom.cdx.json and prints it framed on this script's output, which is how
# it leaves an EC2 build instance: `bake build` reads it from Packer's output and stores it in
# S3 (docs/bake.md, "The image's SBOM").
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

# Last: the SSH server (CIS 2.2; harden.sh masked it, and Session Manager replaces it).
log "openssh-server"
if command -v apt-get >/dev/null 2>&1; then
  if dpkg -s openssh-server >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq openssh-server >/dev/null
    apt-get autoremove --purge -y -qq >/dev/null
    mapfile -t rc < <(dpkg -l | awk '/^rc/ {print $2}')
    if ((${#rc[@]})); then dpkg --purge "${rc[@]}" >/dev/null; fi
    apt-get clean
  fi
elif rpm -q openssh-server >/dev/null 2>&1; then
  dnf -y -q remove openssh-server
  dnf clean all
fi
log "software bill of materials"
/usr/local/bin/bake-agent sbom --output /usr/share/bake/sbom.cdx.json --frame
sync

#!/usr/bin/env bash
# The local target's stand-in for a build instance: a Debian root file system in a directory,
# into which the Packer template's shell-local steps (source null.local) upload the same files and
# run the same provisioning scripts (install-app.sh, harden.sh, cleanup.sh) that the amazon-ebs
# build uploads and runs over SSH on its build instance. Runs on the build host, as root.
#
#   local-root.sh base                 the Debian base (debootstrap, cached) copied into the root
#   local-root.sh stage SRC DEST       SRC (a file, or a directory's contents when SRC ends in /)
#                                      to DEST inside the root, like Packer's file provisioner
#   local-root.sh run SCRIPT           SCRIPT run by bash as root inside the root, with every
#                                      BAKE_* variable of the environment (Packer's
#                                      environment_vars) and nothing else of the host's
#   local-root.sh finish               removes what `base` added for the build only
#
# Environment (set by the template from its local_* variables):
#   BAKE_LOCAL_ROOT      the root file system being built (absolute; bake passes a temporary
#                        directory and renames it when every step succeeded)
#   BAKE_LOCAL_CACHE     the debootstrap cache directory (bake: <work dir>/debootstrap)
#   BAKE_LOCAL_SUITE     Debian suite (bookworm)
#   BAKE_LOCAL_PACKAGES  debootstrap --include list, comma-separated
#   BAKE_LOCAL_MIRROR    Debian mirror (http://deb.debian.org/debian)
#
# The debootstrap cache: one directory per (suite, architecture, package list, mirror), named
# SUITE-ARCH-<first 16 hex digits of the sha256 of that key>, holding rootfs/ and, once
# complete, a file `complete` (and a lock file SUITE-ARCH-KEY.lock beside it). A second build
# copies it instead of running debootstrap again.
# Delete the directory (or all of BAKE_LOCAL_CACHE) to make the next build fetch a fresh base,
# e.g. for newer security updates (harden.sh also dist-upgrades at every build).
#
# What differs from an EC2 build instance, and why (the scripts themselves run unchanged):
# - No init runs in the root (no systemd as PID 1, no boot): the scripts run in a
#   systemd-nspawn container of their own (own PID, IPC, UTS and mount namespaces, so that
#   nothing a package starts outlives the step and nothing touches the host's mounts), sharing
#   the host's network only to reach the Debian mirror. `systemctl enable/mask` work offline
#   there; a maintainer script's `invoke-rc.d start` is refused by a policy-rc.d (exit 101) that
#   `finish` removes again, as Debian's own image builders do.
# - No sshd, no SSM agent: nothing connects to the root, so the base has no openssh-server and
#   cleanup.sh's removal of it finds nothing to remove.
# - The AIDE database is optional (BAKE_HARDEN_AIDE_INIT, the template's aide_init), as on EC2.
set -euo pipefail
log() { printf 'local-root: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

root=${BAKE_LOCAL_ROOT:?BAKE_LOCAL_ROOT (the root file system being built) is not set}
[[ $root == /* ]] || die "BAKE_LOCAL_ROOT must be absolute: $root"
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, systemd-nspawn)"

# Runs ARGS… inside the root: no boot, its own namespaces, the host's network.
in_root() {
  local env=() name
  while IFS= read -r name; do
    env+=("--setenv=$name=${!name}")
  done < <(compgen -e | grep -E '^BAKE_' | grep -Ev '^BAKE_LOCAL_' || true)
  # SYSTEMD_NSPAWN_TMPFS_TMP=0: the root's own /tmp, where the uploads are (nspawn would mount
  # an empty tmpfs there). The second stream drops a notice nspawn prints about its
  # propagation directory when /run is not a tmpfs.
  SYSTEMD_NSPAWN_TMPFS_TMP=0 systemd-nspawn --quiet --register=no --keep-unit --pipe --as-pid2 \
    --machine="bake-build-$$" --resolv-conf=bind-host --timezone=off --link-journal=no \
    -D "$root" "${env[@]}" "$@" 2> >(grep -v '^Attempted to remove disk file system under' >&2)
}

base() {
  local cache=${BAKE_LOCAL_CACHE:?BAKE_LOCAL_CACHE is not set}
  local suite=${BAKE_LOCAL_SUITE:-bookworm}
  local packages=${BAKE_LOCAL_PACKAGES:-systemd,systemd-sysv,dbus}
  local mirror=${BAKE_LOCAL_MIRROR:-http://deb.debian.org/debian}
  local arch key dir start
  arch=$(dpkg --print-architecture)
  key=$(printf '%s\n' "$suite" "$arch" "$packages" "$mirror" | sha256sum | cut -c1-16)
  dir="$cache/$suite-$arch-$key"
  mkdir -p "$cache"
  # One debootstrap per cache entry at a time; a concurrent build waits and then copies it.
  exec 9>"$dir.lock"
  flock 9
  if [[ -f $dir/complete ]]; then
    log "debootstrap base $dir (cached)"
  else
    log "debootstrap $suite ($arch, --include=$packages) into $dir"
    start=$SECONDS
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    if ! debootstrap --variant=minbase --arch="$arch" --include="$packages" "$suite" \
        "$dir.tmp/rootfs" "$mirror" >"$dir.tmp/debootstrap.log" 2>&1; then
      tail -20 "$dir.tmp/debootstrap.log" >&2
      die "debootstrap failed (log: $dir.tmp/debootstrap.log)"
    fi
    # Package downloads are not part of the base.
    rm -rf "$dir.tmp/rootfs/var/cache/apt/archives/"*.deb
    printf 'suite=%s\narch=%s\npackages=%s\nmirror=%s\n' "$suite" "$arch" "$packages" "$mirror" \
      >"$dir.tmp/complete"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    log "debootstrap took $((SECONDS - start)) s"
  fi
  [[ ! -e $root || -z $(ls -A "$root") ]] || die "$root is not empty"
  mkdir -p "$root"
  cp -a "$dir/rootfs/." "$root/"
  exec 9>&-
  # Refuse service starts from maintainer scripts: there is no init to start them with.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
}

stage() {
  local src=$1 dest=$2
  [[ $dest == /* ]] || die "stage: destination must be absolute: $dest"
  [[ $dest != *..* ]] || die "stage: destination must not contain ..: $dest"
  # Like the EC2 build's `install -d -m 0700 /tmp/bake`.
  install -d -m 0700 "$root/tmp/bake"
  if [[ $src == */ ]]; then
    [[ -d $src ]] || die "stage: no directory $src"
    mkdir -p "$root$dest"
    cp -a "$src." "$root$dest/"
  else
    [[ -f $src ]] || die "stage: no file $src"
    install -D -m 0644 "$src" "$root$dest"
    # Packer's file provisioner keeps the mode of what it uploads (the agent binary).
    chmod --reference="$src" "$root$dest"
  fi
}

run() {
  local script=$1 name
  [[ -f $script ]] || die "run: no script $script"
  name=$(basename "$script")
  install -d -m 0700 "$root/tmp/bake-run"
  install -m 0700 "$script" "$root/tmp/bake-run/$name"
  log "running $name in $root"
  in_root /bin/bash "/tmp/bake-run/$name"
  rm -rf "$root/tmp/bake-run"
}

finish() {
  rm -f "$root/usr/sbin/policy-rc.d"
  rm -rf "$root/tmp/bake-run"
}

cmd=${1:-}
shift || true
case $cmd in
  base) base ;;
  stage) (($# == 2)) || die "usage: stage SRC DEST"; stage "$1" "$2" ;;
  run) (($# == 1)) || die "usage: run SCRIPT"; run "$1" ;;
  finish) finish ;;
  *) die "usage: local-root.sh base|stage SRC DEST|run SCRIPT|finish" ;;
esac

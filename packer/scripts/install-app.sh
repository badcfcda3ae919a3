#!/usr/bin/env bash
# Installs what Packer uploaded to /tmp/bake: the app release (a tarball or a directory) into
# /opt/app, bake-agent into /usr/local/bin, the systemd units, and the baked agent config.
# Runs as root on the build instance before harden.sh. Idempotent.
#
# Environment:
#   BAKE_UPLOAD_DIR     where the uploads are (default /tmp/bake)
#   BAKE_APP_PACKAGES   space-separated packages the app needs at run time (the template's
#                       app_packages), e.g. "nodejs"; default none
set -euo pipefail
umask 022
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
src=${BAKE_UPLOAD_DIR:-/tmp/bake}
log() { printf 'install-app: %s\n' "$*" >&2; }

for f in "$src/bake-agent" "$src/agent.toml" "$src/systemd/bake-agent.service"; do
  [[ -e $f ]] || { log "missing upload $f"; exit 1; }
done

# The app's own unprivileged user: owns nothing under /opt/app (the code is read-only to it),
# only its log directory; bake-agent drops to it before starting the app and its jobs.
# uid/gid 10000 in every image: the EFS access point's POSIX user (cloudformation/data.yaml), and
# without an access point the owner of the uploads, the same on every instance and image.
if ! getent group app >/dev/null; then groupadd --system --gid 10000 app; fi
if ! getent passwd app >/dev/null; then
  useradd --system --uid 10000 --gid app --home-dir /opt/app --no-create-home --shell /usr/sbin/nologin app
fi

log "app release"
# The release is complete as uploaded: a Node app's node_modules is in it (examples/app: built
# once by `npm ci` when the release is cut, tools/setup; docs/app.md). Nothing is fetched from a
# package registry here, so every image of a release carries the same bytes.
rm -rf /opt/app.new
install -d -m 0755 /opt/app.new
if [[ -f "$src/app-release.tar.gz" ]]; then
  tar -xf "$src/app-release.tar.gz" -C /opt/app.new --no-same-owner
elif [[ -d "$src/app-release" ]]; then
  cp -a "$src/app-release/." /opt/app.new/
else
  log "no app release uploaded (app-release.tar.gz or app-release/)"; exit 1
fi
if [[ -f /opt/app.new/package-lock.json && ! -d /opt/app.new/node_modules ]]; then
  log "warning: the release has a package-lock.json but no node_modules (run npm ci where the release is cut)"
fi
chown -R root:app /opt/app.new
chmod -R u=rwX,g=rX,o= /opt/app.new
rm -rf /opt/app
mv /opt/app.new /opt/app
install -d -m 0750 -o app -g app /var/log/app

log "packages the agent and the app use"
read -r -a app_packages <<<"${BAKE_APP_PACKAGES:-}"
if command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  # nfs-common: mount.nfs for EFS over NFS 4.1 (no rpcbind needed, it is masked by harden.sh).
  apt-get install -y -qq --no-install-recommends nfs-common ca-certificates "${app_packages[@]}" >/dev/null
else
  # Amazon Linux ships the EFS mount helper (TLS in transit, access points). Debian does not
  # package it: there the agent mounts over NFS 4.1 (see docs/deploy.md, EFS on Debian).
  dnf -y -q install nfs-utils amazon-efs-utils "${app_packages[@]}"
fi

log "bake-agent"
install -m 0755 -o root -g root "$src/bake-agent" /usr/local/bin/bake-agent
install -d -m 0755 /etc/bake
# Group app: `bake-agent job` (bake-user-stats.service) runs as the app user and reads it too.
install -m 0640 -o root -g app "$src/agent.toml" /etc/bake/agent.toml
# The EFS mount point (R3, fleet.yaml [efs] mount_point); the agent mounts it at boot.
install -d -m 0755 /mnt/efs

log "systemd units"
for unit in "$src"/systemd/*.service "$src"/systemd/*.timer; do
  install -m 0644 -o root -g root "$unit" "/etc/systemd/system/$(basename "$unit")"
done
# The units' Documentation= link.
install -D -m 0644 "$src/deploy.md" /usr/share/doc/bake/deploy.md
# bake-image-test.service checks and reports only on an instance of `bake test-image` (tag
# bake:image-test), bake-migrate.service migrates only on the migration instance of a `bake
# release` (tag bake:migrate); on every other instance each exits 0 at once.
systemctl enable bake-agent.service bake-user-stats.timer bake-agent-reap.timer bake-image-test.service bake-migrate.service
rm -rf "$src"

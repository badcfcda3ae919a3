#!/bin/bash
# Userdata of the Packer build instance for Debian 12, whose official AMIs have no SSM agent:
# Packer's communicator reaches the instance only through Session Manager (no inbound SSH), so
# the agent is installed at first boot from AWS's regional bucket (HTTPS), then started.
# Amazon Linux 2023 ships the agent and does not use this file.
set -euo pipefail
token=$(curl -sS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)
region=$(curl -sS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/placement/region)
tmp=$(mktemp -d)
curl -sSf --retry 10 --retry-connrefused -o "$tmp/amazon-ssm-agent.deb" \
  "https://s3.${region}.amazonaws.com/amazon-ssm-${region}/latest/debian_amd64/amazon-ssm-agent.deb"
dpkg -i "$tmp/amazon-ssm-agent.deb"
rm -rf "$tmp"
systemctl enable --now amazon-ssm-agent

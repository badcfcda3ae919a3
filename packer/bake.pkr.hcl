# The hardened bake AMI: base image from a filter (Debian 12 or Amazon Linux 2023), the app
# release, bake-agent and its systemd units, then packer/scripts/harden.sh.
#
# Two invocations, picked by `bake` from `packer version` (keep both working):
#   Packer >= 1.7 (plugins from plugins.pkr.hcl):
#     packer init packer/
#     packer build -var region=eu-west-1 -var app_release=dist/app.tar.gz \
#       -var agent_binary=target/x86_64-unknown-linux-musl/release/bake-agent packer/
#   Debian's Packer 1.6.6 (built-in builders; must not see plugins.pkr.hcl):
#     packer build -var region=eu-west-1 -var app_release=… -var agent_binary=… packer/bake.pkr.hcl
# Everything in this file (variables included) must therefore parse with Packer 1.6.6.
#
# Two sources, one set of provisioning steps (the uploads in local.uploads, the scripts in
# local.provision_scripts with local.provision_env):
#   amazon-ebs.bake  an EC2 build instance, provisioned over SSH through Session Manager; with
#                    communicator = "none" (the emulator) it only registers the AMI record.
#   null.local       the local target (`[packer] target = "local"` in bake.toml): no machine,
#                    communicator none; shell-local steps run scripts/local-root.sh on the build
#                    host, which makes a Debian root file system in var.local_root (debootstrap,
#                    cached), uploads the same files into it and runs the same scripts inside it
#                    with systemd-nspawn (see that script's header for what differs from EC2 and
#                    why). Packer 1.6.6 has no builder for a local root file system (its chroot
#                    builder needs EC2 volumes, lxc/docker need their daemons), hence null plus
#                    shell-local. Its steps are skipped unless var.local_root is set, so a build
#                    of the AMI alone (no -only) runs them not.
#   bake runs the local target as two builds: `-only=null.local` (the image, into a temporary
#   directory renamed to .work/images/<inputs hash>/ when every step succeeded), then
#   `-except=null.local -var communicator=none` (the AMI record in the emulator, tagged
#   bake:local-image with the image's path). A failed image build registers no AMI.
#
# IMDSv2: Packer 1.6.6's amazon-ebs knows neither `metadata_options` (build instance) nor
# `imds_support` (AMI), and an unknown block is a hard error there, so they cannot be in this
# file. Instead: the build instance gets IMDSv2-only from the region's EC2 instance-metadata
# defaults (`aws ec2 modify-instance-metadata-defaults --http-tokens required`, docs/deploy.md
# step 1); the AMI is marked `ImdsSupport=v2.0` by `bake` after the build (ModifyImageAttribute);
# and every fleet instance is launched by a launch template with HttpTokens=required, hop limit 1
# (cloudformation/fleet.yaml), which is what enforces it at run time.

variable "region" {
  type        = string
  description = "AWS region to build in (no default: bake passes it from bake.toml)."
}

variable "base_os" {
  type        = string
  default     = "debian-12"
  description = "Base image family: debian-12 or al2023."
}

variable "source_ami" {
  type        = string
  default     = ""
  description = "An explicit base AMI id; empty = the newest image matching local.source_ami_filter. bake resolves the filter itself before building and passes the id here."
}

variable "source_ami_owner" {
  type        = string
  default     = ""
  description = "Owner of the base images (an account id, or self: your own mirrored copies); empty = base_os's official account (Debian's or Amazon's)."
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance (needs outbound HTTPS to SSM); empty = default VPC."
}

variable "iam_instance_profile" {
  type        = string
  default     = ""
  description = "Instance profile of the build instance (iam.yaml's BuildInstanceProfileName); empty = Packer creates a temporary one (needs IAM write permissions)."
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key (id, ARN or alias ARN) for the root volume and AMI snapshot; empty = aws/ebs."
}

variable "volume_size_gib" {
  type    = number
  default = 16
}

variable "communicator" {
  type        = string
  default     = "ssh"
  description = "ssh: SSH tunnelled through Session Manager (ssh_interface), no inbound port; needs iam_instance_profile or IAM rights for a temporary one. none: the emulator (provisioners skipped)."
}

variable "ssh_interface" {
  type        = string
  default     = "session_manager"
  description = "How the communicator reaches the build instance; session_manager needs no inbound rule."
}

variable "custom_endpoint_ec2" {
  type        = string
  default     = ""
  description = "EC2 endpoint override (the local emulator); empty = AWS."
}

variable "skip_credential_validation" {
  type    = bool
  default = false
}

variable "skip_region_validation" {
  type    = bool
  default = false
}

variable "skip_metadata_api_check" {
  type    = bool
  default = false
}

variable "app_release" {
  type        = string
  default     = ""
  description = "The app release: a .tar.gz/.tgz/.tar file or a directory (uploaded to /opt/app)."
}

variable "agent_binary" {
  type        = string
  default     = ""
  description = "The bake-agent binary for the image's architecture (static musl build recommended)."
}

variable "app_packages" {
  type        = string
  default     = ""
  description = "Debian (or dnf) packages the app needs at run time, space-separated, installed by install-app.sh (e.g. nodejs for the example app, whose command is /usr/bin/node)."
}

variable "agent_config" {
  type        = string
  default     = ""
  description = "The baked /etc/bake/agent.toml; empty = packer/files/agent.toml. Userdata TOML is laid over it at boot."
}

variable "aide_init" {
  type        = bool
  default     = true
  description = "Build the AIDE file-integrity database in the image (adds a few minutes)."
}

variable "local_root" {
  type        = string
  default     = ""
  description = "The local target: the root file system directory to build (bake passes a temporary directory); empty = no local build."
}

variable "local_cache_dir" {
  type        = string
  default     = ""
  description = "The local target: the debootstrap cache directory (bake passes <work dir>/debootstrap)."
}

variable "local_suite" {
  type        = string
  default     = "bookworm"
  description = "The local target: the Debian suite of the base root file system (Debian 12, as the debian-12 AMIs)."
}

variable "local_packages" {
  type        = list(string)
  default     = ["systemd", "systemd-sysv", "dbus"]
  description = "The local target: packages debootstrap adds to its minbase variant: what a Debian cloud AMI has and the scripts and the agent need that the scripts do not install themselves (systemd as init, D-Bus for systemctl)."
}

variable "local_mirror" {
  type        = string
  default     = "http://deb.debian.org/debian"
  description = "The local target: the Debian mirror debootstrap uses."
}

variable "ami_name_prefix" {
  type    = string
  default = "bake"
}

variable "app_version" {
  type        = string
  default     = "unknown"
  description = "The app release's version, tagged bake:app-version on the AMI and its snapshots."
}

variable "bake_inputs_hash" {
  type    = string
  default = ""
}

variable "bake_git_commit" {
  type    = string
  default = ""
}

variable "bake_version" {
  type    = string
  default = ""
}

variable "bake_built_at" {
  type    = string
  default = ""
}

variable "extra_tags" {
  type        = map(string)
  default     = {}
  description = "More tags for the AMI, its snapshots and the build instance."
}

locals {
  # The base image: `bake build` evaluates this with `packer console`, resolves it with
  # DescribeImages (newest match) before building, folds the AMI id into the inputs hash and
  # passes it as source_ami; Packer itself uses it only when run by hand without source_ami.
  # Official owners: Debian's AWS account and Amazon's.
  source_ami_filter = {
    filters = {
      name                = { "debian-12" = "debian-12-amd64-*", "al2023" = "al2023-ami-2023.*-x86_64" }[var.base_os]
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = [var.source_ami_owner != "" ? var.source_ami_owner : { "debian-12" = "136693071363", "al2023" = "137112412989" }[var.base_os]]
    most_recent = true
  }
  base = {
    "debian-12" = { name = "debian-12-amd64-*", owner = "136693071363", user = "admin" }
    "al2023"    = { name = "al2023-ami-2023.*-x86_64", owner = "137112412989", user = "ec2-user" }
  }
  stamp = formatdate("YYYYMMDD-hhmmss", timestamp())
  tags = merge(var.extra_tags, {
    "Name"               = "${var.ami_name_prefix}-${var.app_version}"
    "bake:app-version"   = var.app_version
    "bake:inputs-hash"   = var.bake_inputs_hash
    "bake:git-commit"    = var.bake_git_commit
    "bake:version"       = var.bake_version
    "bake:built-at"      = var.bake_built_at
    "bake:base-os"       = var.base_os
    "bake:packer-source" = "amazon-ebs.bake"
  })
  # What both sources upload to /tmp/bake before the scripts run (a source ending in / is a
  # directory whose contents are uploaded). A release file is uploaded as is, a directory's
  # contents into /tmp/bake/app-release. (Packer 1.6.6 has no regex functions, and its locals
  # cannot refer to other locals.)
  uploads = [
    {
      source      = (substr(var.app_release, -7, 7) == ".tar.gz" || substr(var.app_release, -4, 4) == ".tgz" || substr(var.app_release, -4, 4) == ".tar") ? var.app_release : "${var.app_release}/"
      destination = (substr(var.app_release, -7, 7) == ".tar.gz" || substr(var.app_release, -4, 4) == ".tgz" || substr(var.app_release, -4, 4) == ".tar") ? "/tmp/bake/app-release.tar.gz" : "/tmp/bake/app-release"
    },
    { source = var.agent_binary, destination = "/tmp/bake/bake-agent" },
    { source = "${path.root}/../systemd/", destination = "/tmp/bake/systemd" },
    { source = "${path.root}/../docs/deploy.md", destination = "/tmp/bake/deploy.md" },
    { source = var.agent_config == "" ? "${path.root}/files/agent.toml" : var.agent_config, destination = "/tmp/bake/agent.toml" },
  ]
  # The provisioning scripts, in order, and their environment: the same for both sources.
  provision_scripts = [
    "${path.root}/scripts/install-app.sh",
    "${path.root}/scripts/harden.sh",
    "${path.root}/scripts/cleanup.sh",
  ]
  provision_env = [
    "BAKE_HARDEN_AIDE_INIT=${var.aide_init ? 1 : 0}",
    "BAKE_APP_PACKAGES=${var.app_packages}",
  ]
  # The local target's driver and its settings (scripts/local-root.sh).
  local_root_sh = "${path.root}/scripts/local-root.sh"
  local_env = [
    "BAKE_LOCAL_ROOT=${var.local_root}",
    "BAKE_LOCAL_CACHE=${var.local_cache_dir}",
    "BAKE_LOCAL_SUITE=${var.local_suite}",
    "BAKE_LOCAL_PACKAGES=${join(",", var.local_packages)}",
    "BAKE_LOCAL_MIRROR=${var.local_mirror}",
  ]
}

# The local target: no machine; the shell-local steps of the build make the image.
source "null" "local" {
  communicator = "none"
}

source "amazon-ebs" "bake" {
  region                     = var.region
  custom_endpoint_ec2        = var.custom_endpoint_ec2
  skip_credential_validation = var.skip_credential_validation
  skip_region_validation     = var.skip_region_validation
  skip_metadata_api_check    = var.skip_metadata_api_check

  ami_name        = "${var.ami_name_prefix}-${var.app_version}-${local.stamp}"
  ami_description = "bake: hardened ${var.base_os} with app ${var.app_version}"
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id

  source_ami = var.source_ami
  dynamic "source_ami_filter" {
    for_each = var.source_ami == "" ? [local.source_ami_filter] : []
    content {
      filters     = source_ami_filter.value.filters
      owners      = source_ami_filter.value.owners
      most_recent = source_ami_filter.value.most_recent
    }
  }

  # The communicator is SSH through a Session Manager port forward (ssh_interface =
  # "session_manager"): no inbound port, but sshd must run on the build instance until the last
  # provisioner has finished, which is why openssh-server is removed at the very end of
  # cleanup.sh and not by harden.sh. Session Manager needs the SSM agent on the instance and an
  # instance profile: iam_instance_profile (iam.yaml's BuildInstanceProfileName, set in
  # examples/bake.toml), or a temporary one Packer creates (needs IAM write permissions), which
  # allows only what the SSM agent needs to register and open the tunnel.
  communicator            = var.communicator
  ssh_interface           = var.communicator == "none" ? "" : var.ssh_interface
  ssh_username            = local.base[var.base_os].user
  ssh_timeout             = "15m"
  pause_before_ssm        = "30s"
  temporary_key_pair_type = "ed25519"
  # Debian's AMIs have no SSM agent: install it at first boot (AL2023 ships it).
  user_data_file       = var.base_os == "debian-12" ? "${path.root}/files/ssm-agent-userdata.sh" : ""
  iam_instance_profile = var.iam_instance_profile
  dynamic "temporary_iam_instance_profile_policy_document" {
    for_each = var.iam_instance_profile == "" ? [1] : []
    content {
      Version = "2012-10-17"
      Statement {
        Effect = "Allow"
        Action = [
          "ssm:UpdateInstanceInformation",
          "ssmmessages:CreateControlChannel",
          "ssmmessages:CreateDataChannel",
          "ssmmessages:OpenControlChannel",
          "ssmmessages:OpenDataChannel",
          "ec2messages:AcknowledgeMessage",
          "ec2messages:DeleteMessage",
          "ec2messages:FailMessage",
          "ec2messages:GetEndpoint",
          "ec2messages:GetMessages",
          "ec2messages:SendReply",
        ]
        Resource = ["*"]
      }
    }
  }

  # Encrypted root volume and AMI snapshot.
  encrypt_boot = true
  kms_key_id   = var.kms_key_id
  launch_block_device_mappings {
    device_name           = "/dev/xvda" # the root device of both Debian 12 and AL2023 AMIs
    volume_size           = var.volume_size_gib
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    encrypted             = true
    kms_key_id            = var.kms_key_id
    delete_on_termination = true
  }

  # Empty provenance values (a build outside `bake`) are left out rather than tagged "".
  tags          = { for k, v in local.tags : k => v if v != "" }
  snapshot_tags = { for k, v in local.tags : k => v if v != "" }
  run_tags      = merge({ for k, v in local.tags : k => v if v != "" }, { "Name" = "bake-build-${var.app_version}" })
}

build {
  sources = ["source.amazon-ebs.bake", "source.null.local"]

  # amazon-ebs.bake: with communicator = "none" (the emulator) there is no machine to
  # provision: every provisioner is skipped and the build just registers the image.
  # Order matters: every provisioner opens new SSH sessions over Session Manager, so sshd stays
  # installed and running until the last line of the last script (cleanup.sh removes it).
  provisioner "shell" {
    except = var.communicator == "none" ? ["amazon-ebs.bake", "null.local"] : ["null.local"]
    inline = ["install -d -m 0700 /tmp/bake"]
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake", "null.local"] : ["null.local"]
    source      = local.uploads[0].source
    destination = local.uploads[0].destination
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake", "null.local"] : ["null.local"]
    source      = local.uploads[1].source
    destination = local.uploads[1].destination
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake", "null.local"] : ["null.local"]
    source      = local.uploads[2].source
    destination = local.uploads[2].destination
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake", "null.local"] : ["null.local"]
    source      = local.uploads[3].source
    destination = local.uploads[3].destination
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake", "null.local"] : ["null.local"]
    source      = local.uploads[4].source
    destination = local.uploads[4].destination
  }

  provisioner "shell" {
    except           = var.communicator == "none" ? ["amazon-ebs.bake", "null.local"] : ["null.local"]
    execute_command  = "sudo -n env {{ .Vars }} bash '{{ .Path }}'"
    scripts          = local.provision_scripts
    environment_vars = local.provision_env
  }

  # null.local (only when var.local_root is set): the base root file system, the same uploads,
  # the same scripts with the same environment, run inside the root by scripts/local-root.sh.
  provisioner "shell-local" {
    except           = var.local_root == "" ? ["amazon-ebs.bake", "null.local"] : ["amazon-ebs.bake"]
    environment_vars = local.local_env
    inline = concat(
      ["'${local.local_root_sh}' base"],
      [for u in local.uploads : "'${local.local_root_sh}' stage '${u.source}' '${u.destination}'"],
    )
  }

  provisioner "shell-local" {
    except           = var.local_root == "" ? ["amazon-ebs.bake", "null.local"] : ["amazon-ebs.bake"]
    environment_vars = concat(local.local_env, local.provision_env)
    execute_command  = ["/bin/bash", "-c", "{{.Vars}} '${local.local_root_sh}' run '{{.Script}}'"]
    scripts          = local.provision_scripts
  }

  provisioner "shell-local" {
    except           = var.local_root == "" ? ["amazon-ebs.bake", "null.local"] : ["amazon-ebs.bake"]
    environment_vars = local.local_env
    inline           = ["'${local.local_root_sh}' finish"]
  }

  # Next to the template directory, not in it: what a build writes must not change the
  # template's inputs hash (bake hashes the template directory), or no AMI is ever reused.
  post-processor "manifest" {
    output     = "${path.root}/../packer-manifest.json"
    strip_path = true
  }
}

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
  # A release file is uploaded as is, a directory's contents into /tmp/bake/app-release.
  # (Packer 1.6.6 has no regex functions, and its locals cannot refer to other locals.)
  app_dest   = (substr(var.app_release, -7, 7) == ".tar.gz" || substr(var.app_release, -4, 4) == ".tgz" || substr(var.app_release, -4, 4) == ".tar") ? "/tmp/bake/app-release.tar.gz" : "/tmp/bake/app-release"
  app_source = (substr(var.app_release, -7, 7) == ".tar.gz" || substr(var.app_release, -4, 4) == ".tgz" || substr(var.app_release, -4, 4) == ".tar") ? var.app_release : "${var.app_release}/"
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
  sources = ["source.amazon-ebs.bake"]

  # With communicator = "none" (the emulator) there is no machine to provision: every
  # provisioner is skipped and the build just registers the image.
  # Order matters: every provisioner opens new SSH sessions over Session Manager, so sshd stays
  # installed and running until the last line of the last script (cleanup.sh removes it).
  provisioner "shell" {
    except = var.communicator == "none" ? ["amazon-ebs.bake"] : []
    inline = ["install -d -m 0700 /tmp/bake"]
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake"] : []
    source      = local.app_source
    destination = local.app_dest
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake"] : []
    source      = var.agent_binary
    destination = "/tmp/bake/bake-agent"
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake"] : []
    source      = "${path.root}/../systemd/"
    destination = "/tmp/bake/systemd"
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake"] : []
    source      = "${path.root}/../docs/deploy.md"
    destination = "/tmp/bake/deploy.md"
  }

  provisioner "file" {
    except      = var.communicator == "none" ? ["amazon-ebs.bake"] : []
    source      = var.agent_config == "" ? "${path.root}/files/agent.toml" : var.agent_config
    destination = "/tmp/bake/agent.toml"
  }

  provisioner "shell" {
    except          = var.communicator == "none" ? ["amazon-ebs.bake"] : []
    execute_command = "sudo -n env {{ .Vars }} bash '{{ .Path }}'"
    scripts = [
      "${path.root}/scripts/install-app.sh",
      "${path.root}/scripts/harden.sh",
      "${path.root}/scripts/cleanup.sh",
    ]
    environment_vars = [
      "BAKE_HARDEN_AIDE_INIT=${var.aide_init ? 1 : 0}",
    ]
  }

  # Next to the template directory, not in it: what a build writes must not change the
  # template's inputs hash (bake hashes the template directory), or no AMI is ever reused.
  post-processor "manifest" {
    output     = "${path.root}/../packer-manifest.json"
    strip_path = true
  }
}

# Current Packer (>= 1.7) needs the Amazon plugin declared and installed with `packer init`.
# Debian's Packer 1.6.6 has the builder built in and rejects `required_plugins`, which is why this
# block lives in a file of its own: `bake` passes the whole directory to current Packer and only
# bake.pkr.hcl to 1.6.6 (see the header of bake.pkr.hcl and docs/deploy.md).
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0, < 2.0.0"
    }
  }
}

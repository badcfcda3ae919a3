//! Test set-up: an emulator, a temporary directory with a copy of the Packer fixture (or of the
//! shipped template with what it uploads) and a `bake.toml`, and the `bake` binary run with the
//! emulator's environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_autoscaling::types::{
    DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences,
};
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use bake_e2e::{Aws, Emulator};

/// An AMI moto has out of the box (DescribeImages lists ~1300 of them).
pub const BASE_AMI: &str = "ami-1e749f67";

/// One test's world.
pub struct World {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub aws: Aws,
    pub name: String,
}

/// What a `bake` run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// What a finished `bake` process did.
    pub fn from_output(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// stdout as JSON (fails the test if it is not exactly one document).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

impl World {
    /// A fresh emulator and directory; `name` prefixes every AWS resource the test makes.
    pub fn new(name: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emu = Emulator::start().expect("emulator starts");
        let aws = rt.block_on(emu.aws());
        let dir = tempfile::Builder::new()
            .prefix(&format!("bake-{name}-"))
            .tempdir()
            .unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packer"),
            &dir.path().join("packer"),
        );
        std::fs::write(dir.path().join("bake-agent"), b"not really an agent").unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let w = Self {
            emu,
            dir,
            rt,
            aws,
            name: name.to_owned(),
        };
        w.write_config("");
        w
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A fresh emulator and directory holding copies of the shipped template (`packer/`), the
    /// units it uploads (`systemd/`), `docs/deploy.md` and a directory app release (`app/`),
    /// with a bake.toml that builds it against the emulator as Debian's Packer 1.6.6 can:
    /// communicator none (no provisioners), the emulator as EC2 endpoint, and the base image
    /// filter's owner set to the account itself, where [`World::register_base_image`] puts
    /// Debian 12 images.
    pub fn shipped(name: &str) -> Self {
        let w = Self::new(name);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::remove_dir_all(w.path("packer")).unwrap();
        copy_dir(&repo.join("packer"), &w.path("packer"));
        copy_dir(&repo.join("systemd"), &w.path("systemd"));
        std::fs::create_dir_all(w.path("docs")).unwrap();
        std::fs::copy(repo.join("docs/deploy.md"), w.path("docs/deploy.md")).unwrap();
        std::fs::create_dir_all(w.path("app")).unwrap();
        std::fs::write(w.path("app/server.js"), "// v1\n").unwrap();
        let text = format!(
            r#"[packer]
template = "packer"
agent_binary = "bake-agent"
[packer.variables]
communicator = "none"
custom_endpoint_ec2 = "{url}"
skip_credential_validation = true
skip_region_validation = true
skip_metadata_api_check = true
source_ami_owner = "self"
aide_init = false
[app]
release = "app"
version = "1.0.0"
[target]
auto_scaling_group = "{asg}"
[image_test]
required = false
"#,
            url = w.emu.url(),
            asg = w.asg(),
        );
        w.write_raw_config(&text);
        w
    }

    /// Registers a Debian 12 image the shipped template's `source_ami_filter` matches (owner
    /// self, see [`World::shipped`]); returns its id. Creation dates have second resolution:
    /// wait a second between two.
    pub fn register_base_image(&self, name: &str) -> String {
        use aws_sdk_ec2::types::{ArchitectureValues, BlockDeviceMapping, EbsBlockDevice};
        self.rt.block_on(async {
            self.aws
                .ec2
                .register_image()
                .name(name)
                .architecture(ArchitectureValues::X8664)
                .virtualization_type("hvm")
                .root_device_name("/dev/xvda")
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name("/dev/xvda")
                        .ebs(EbsBlockDevice::builder().volume_size(8).build())
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .image_id()
                .unwrap()
                .to_owned()
        })
    }

    /// The group name of this test.
    pub fn asg(&self) -> String {
        format!("{}-asg", self.name)
    }

    /// Writes bake.toml: packer + target + fast polling, then `extra`.
    pub fn write_config(&self, extra: &str) {
        self.write_config_with("", extra);
    }

    /// [`World::write_config`] with more `[packer.variables]` lines (`vars`).
    pub fn write_config_with(&self, vars: &str, extra: &str) {
        let text = format!(
            r#"[packer]
template = "packer"
agent_binary = "bake-agent"
[packer.variables]
endpoint_ec2 = "{url}"
name = "{name}"
{extra_vars}
[app]
release = "1.0.0"
[target]
auto_scaling_group = "{asg}"
# No instance of these tests ever boots an image: releases take untested ones
# (image_test.rs sets required = true).
[image_test]
parameter_prefix = "/bake/test/image-tests"
required = false
[refresh]
min_healthy_percentage = 50
instance_warmup = "10s"
poll_interval = "100ms"
max_poll_interval = "500ms"
timeout = "2m"
{extra}
"#,
            url = self.emu.url(),
            name = self.name,
            asg = self.asg(),
            extra_vars = vars,
        );
        std::fs::write(self.path("bake.toml"), text).unwrap();
    }

    /// Writes bake.toml verbatim.
    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(self.path("bake.toml"), text).unwrap();
    }

    /// `bake ARGS` in the test directory with the emulator's environment, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bake"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("BAKE_CONFIG")
            .env_remove("RUST_LOG")
            .env("TMPDIR", self.path("tmp"))
            .env("CHECKPOINT_DISABLE", "1");
        for (k, v) in self.emu.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `bake ARGS`.
    pub fn bake(&self, args: &[&str]) -> Run {
        Run::from_output(self.command(args).output().expect("bake runs"))
    }

    /// A launch template (image `image`) and a group of `capacity` on its version 1 over two AZs, without
    /// lifecycle hooks (the emulated instances have no agent to answer them).
    pub fn fleet(&self, image: &str, capacity: i32) -> String {
        self.rt.block_on(async {
            let lt = self
                .aws
                .ec2
                .create_launch_template()
                .launch_template_name(format!("{}-lt", self.name))
                .launch_template_data(
                    RequestLaunchTemplateData::builder()
                        .image_id(image)
                        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                        .build(),
                )
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::LaunchTemplate)
                        .tags(Tag::builder().key("test").value(&self.name).build())
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let lt_id = lt
                .launch_template()
                .unwrap()
                .launch_template_id()
                .unwrap()
                .to_owned();
            self.aws
                .asg
                .create_auto_scaling_group()
                .auto_scaling_group_name(self.asg())
                .launch_template(
                    // A numbered version: AWS supports auto rollback only then.
                    LaunchTemplateSpecification::builder()
                        .launch_template_id(&lt_id)
                        .version("1")
                        .build(),
                )
                .min_size(capacity)
                .max_size(capacity * 2)
                .desired_capacity(capacity)
                .availability_zones("us-east-1a")
                .availability_zones("us-east-1b")
                .send()
                .await
                .unwrap();
            lt_id
        })
    }

    /// A new version of launch template `lt` with image `ami`, made its default (as a change
    /// by hand, or `bake release --no-wait` before the refresh replaced anything). Its number.
    pub fn make_default_image(&self, lt: &str, ami: &str) -> i64 {
        self.rt.block_on(async {
            let v = self
                .aws
                .ec2
                .create_launch_template_version()
                .launch_template_id(lt)
                .launch_template_data(RequestLaunchTemplateData::builder().image_id(ami).build())
                .send()
                .await
                .unwrap();
            let n = v
                .launch_template_version()
                .unwrap()
                .version_number()
                .unwrap();
            self.aws
                .ec2
                .modify_launch_template()
                .launch_template_id(lt)
                .default_version(n.to_string())
                .send()
                .await
                .unwrap();
            n
        })
    }

    /// Starts an instance refresh of the group to version 1 of `lt` that stays running: a
    /// checkpoint at 50 % with an hour's delay (36 s at the emulator's time scale). Its id.
    pub fn start_slow_refresh(&self, lt: &str) -> String {
        self.rt.block_on(async {
            let out = self
                .aws
                .asg
                .start_instance_refresh()
                .auto_scaling_group_name(self.asg())
                .desired_configuration(
                    DesiredConfiguration::builder()
                        .launch_template(
                            LaunchTemplateSpecification::builder()
                                .launch_template_id(lt)
                                .version("1")
                                .build(),
                        )
                        .build(),
                )
                .preferences(
                    RefreshPreferences::builder()
                        .skip_matching(false)
                        .min_healthy_percentage(50)
                        .checkpoint_percentages(50)
                        .checkpoint_percentages(100)
                        .checkpoint_delay(3600)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            out.instance_refresh_id().unwrap().to_owned()
        })
    }

    /// Instances of the group: (id, launch template version, lifecycle state).
    pub fn instances(&self) -> Vec<(String, String, String)> {
        self.rt.block_on(async {
            let out = self
                .aws
                .asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(self.asg())
                .send()
                .await
                .unwrap();
            out.auto_scaling_groups()[0]
                .instances()
                .iter()
                .map(|i| {
                    (
                        i.instance_id().unwrap().to_owned(),
                        i.launch_template()
                            .and_then(|l| l.version())
                            .unwrap_or_default()
                            .to_owned(),
                        i.lifecycle_state()
                            .map(|s| s.as_str().to_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
    }

    /// (default, latest) version of the launch template.
    pub fn lt_versions(&self, lt: &str) -> (i64, i64) {
        self.rt.block_on(async {
            let out = self
                .aws
                .ec2
                .describe_launch_templates()
                .launch_template_ids(lt)
                .send()
                .await
                .unwrap();
            let t = &out.launch_templates()[0];
            (
                t.default_version_number().unwrap(),
                t.latest_version_number().unwrap(),
            )
        })
    }

    /// Tags of an EC2 resource.
    pub fn tags(&self, id: &str) -> std::collections::BTreeMap<String, String> {
        self.rt.block_on(async {
            let out = self
                .aws
                .ec2
                .describe_tags()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("resource-id")
                        .values(id)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            out.tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_owned(),
                        t.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
    }

    /// Snapshots of an AMI (empty if the AMI is gone).
    pub fn image_snapshots(&self, ami: &str) -> Vec<String> {
        self.rt.block_on(async {
            match self.aws.ec2.describe_images().image_ids(ami).send().await {
                Ok(out) => out
                    .images()
                    .iter()
                    .flat_map(|i| i.block_device_mappings())
                    .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(ToOwned::to_owned))
                    .collect(),
                Err(_) => Vec::new(),
            }
        })
    }

    /// The AMI's `ImdsSupport` (`v2.0` when its instances must use IMDSv2).
    pub fn image_imds_support(&self, ami: &str) -> Option<String> {
        self.rt.block_on(async {
            let out = self
                .aws
                .ec2
                .describe_images()
                .image_ids(ami)
                .send()
                .await
                .ok()?;
            out.images()
                .first()
                .and_then(|i| i.imds_support())
                .map(|v| v.as_str().to_owned())
        })
    }

    /// Whether the AMI exists (deprecated and disabled ones too).
    pub fn image_exists(&self, ami: &str) -> bool {
        self.image(ami).is_some()
    }

    /// The AMI as DescribeImages shows it to its owner, deprecated and disabled ones too.
    pub fn image(&self, ami: &str) -> Option<aws_sdk_ec2::types::Image> {
        self.rt.block_on(async {
            self.aws
                .ec2
                .describe_images()
                .owners("self")
                .include_deprecated(true)
                .include_disabled(true)
                .send()
                .await
                .unwrap()
                .images()
                .iter()
                .find(|i| i.image_id() == Some(ami))
                .cloned()
        })
    }

    /// Whether the snapshot exists.
    pub fn snapshot_exists(&self, snap: &str) -> bool {
        self.rt.block_on(async {
            self.aws
                .ec2
                .describe_snapshots()
                .owner_ids("self")
                .send()
                .await
                .unwrap()
                .snapshots()
                .iter()
                .any(|s| s.snapshot_id() == Some(snap))
        })
    }

    /// Polls `f` every 100 ms until it holds or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Builds an AMI with `bake build -o json` and returns its id.
    pub fn build(&self, extra_args: &[&str]) -> String {
        let mut args = vec!["build", "-o", "json"];
        args.extend_from_slice(extra_args);
        let r = self.bake(&args).expect(0);
        r.json()["image_id"].as_str().expect("image_id").to_owned()
    }
}

/// bake.toml with `target.image_parameter = name` (the fleet's image parameter).
pub fn with_image_parameter(w: &World, name: &str) -> String {
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace(
            "[target]\n",
            &format!("[target]\nimage_parameter = \"{name}\"\n"),
        );
    assert!(text.contains("image_parameter"), "{text}");
    w.write_raw_config(&text);
    text
}

/// Puts `image` into SSM parameter `name` as docs/deploy.md's first deploy does.
pub fn put_image_parameter(w: &World, name: &str, image: &str) {
    w.rt.block_on(async {
        w.aws
            .ssm
            .put_parameter()
            .name(name)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .data_type("aws:ec2:image")
            .value(image)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    });
}

/// An image of the emulator other than [`BASE_AMI`].
pub fn other_image(w: &World) -> String {
    w.rt.block_on(async {
        let out = w
            .aws
            .ec2
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .unwrap();
        out.images()
            .iter()
            .filter_map(|i| i.image_id())
            .find(|i| *i != BASE_AMI)
            .unwrap()
            .to_owned()
    })
}

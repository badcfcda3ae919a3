//! The fleet's I/O loop: every poll it observes the group (`DescribeAutoScalingGroups`), the
//! instances it runs and haproxy's targets (`show stat`), asks [`reconcile::decide`] what to do,
//! and does it: boots through the fleet's [`Runtime`] (after resolving the instance's AMI, its
//! tags and its userdata from EC2), registers, admits, drains and removes targets, tells an
//! instance's metadata it is terminated, stops what the group let go.
//!
//! With a runtime that can play them ([`Runtime::boots_outside_the_group`]), it also boots the
//! instances launched outside the group that carry one of the tags [`OUTSIDE_TAGS`] (`bake
//! test-image`'s and `bake release`'s migration `RunInstances`), while EC2 says they are pending or running, and stops them
//! once EC2 says otherwise. They are no member of the group and never behind the load balancer:
//! only EC2's view of them counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bake_common::aws::AwsSettings;

use crate::Aws;

use super::haproxy::Lb;
use super::reconcile::{self, Action, GroupInstance, Registration, Running};
use super::runtime::{Instance, LaunchSpec, Runtime};
use super::{FleetStats, InstanceView};

/// The instance tags that mark the instances bake launches outside the group: `bake
/// test-image`'s (bake/src/image_test.rs) and a release's migration instance
/// (bake/src/migrate.rs).
pub const OUTSIDE_TAGS: [&str; 2] = ["bake:image-test", "bake:migrate"];

/// An instance the fleet runs: what callers see, the instance itself, and the reconciler's
/// record of it.
pub(super) struct Tracked {
    pub(super) view: InstanceView,
    inst: Box<dyn Instance>,
    state: Running,
}

impl Tracked {
    pub(super) fn restarts(&self) -> u64 {
        self.inst.restarts()
    }
}

/// What the watcher thread and the [`super::Fleet`] handle share.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) instances: BTreeMap<String, Tracked>,
    /// Stoppers of instances the group let go (their restarts were counted when they were told
    /// to stop).
    pub(super) gone: Vec<std::thread::JoinHandle<()>>,
    pub(super) stats: FleetStats,
    /// Instances launched outside the group (a tag of [`OUTSIDE_TAGS`]) that EC2 says are pending
    /// or running: what callers see and the instance.
    pub(super) outside: BTreeMap<String, (InstanceView, Box<dyn Instance>)>,
    pub(super) last_error: Option<String>,
    pub(super) lb_servers: Vec<(String, u16)>,
}

/// One instance of the group as `DescribeAutoScalingGroups` lists it.
struct Seen {
    id: String,
    lifecycle: String,
    az: String,
    /// (launch template id, version) it was launched from.
    lt: Option<(String, String)>,
}

/// One instance outside the group as `DescribeInstances` lists it.
struct SeenOutside {
    id: String,
    /// EC2's state name (`pending`, `running`, `shutting-down`, `terminated`, …).
    state: String,
    az: String,
    image_id: String,
    /// (launch template id, version): EC2's tags `aws:ec2launchtemplate:id` and `…:version`.
    lt: Option<(String, String)>,
    /// The instance profile EC2 attached to it (its ARN).
    instance_profile: Option<String>,
    /// Its tags, if its metadata options allow them in its metadata.
    imds_tags: BTreeMap<String, String>,
}

impl SeenOutside {
    fn wanted(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

/// The watcher's own state: the runtime and what it learnt from EC2.
pub(super) struct Watcher {
    asg: String,
    dir: PathBuf,
    runtime: Box<dyn Runtime>,
    /// AMI → its tags.
    image_tags: BTreeMap<String, BTreeMap<String, String>>,
    /// (launch template id, version) → what an instance gets from it.
    templates: BTreeMap<(String, String), FromTemplate>,
    /// The emulator, for what EC2 does on an instance's behalf (its role's credentials).
    emulator: String,
}

/// What an instance takes from its launch template version.
#[derive(Clone, Debug, Default)]
struct FromTemplate {
    /// The userdata, decoded from base64 (gzip stays gzip).
    user_data: Option<Vec<u8>>,
    /// `IamInstanceProfile` (its ARN, or its name).
    instance_profile: Option<String>,
}

/// Starts the watcher thread: a poll every `poll` until `stop`; a poll's error is kept in
/// [`Shared::last_error`] and the next poll goes on.
pub(super) fn spawn(
    mut watcher: Watcher,
    settings: AwsSettings,
    credentials: aws_credential_types::Credentials,
    poll: Duration,
    shared: Arc<Mutex<Shared>>,
    haproxy: Arc<Mutex<Option<Lb>>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fleet-watcher".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the fleet watcher");
            rt.block_on(async move {
                let aws = crate::emulator::clients(&settings, credentials).await;
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = watcher.tick(&aws, &shared, &haproxy).await {
                        shared.lock().expect("fleet lock").last_error = Some(format!("{e:#}"));
                    }
                    tokio::time::sleep(poll).await;
                }
            });
        })
}

impl Watcher {
    /// The watcher of group `asg` in the emulator at `emulator`, its instances' files under
    /// `dir`, booted by `runtime`.
    pub(super) fn new(asg: &str, emulator: &str, dir: PathBuf, runtime: Box<dyn Runtime>) -> Self {
        Self {
            asg: asg.to_owned(),
            dir,
            runtime,
            image_tags: BTreeMap::new(),
            templates: BTreeMap::new(),
            emulator: emulator.to_owned(),
        }
    }

    /// One poll: observe, decide, act, then update what callers see.
    async fn tick(
        &mut self,
        aws: &Aws,
        shared: &Mutex<Shared>,
        haproxy: &Mutex<Option<Lb>>,
    ) -> anyhow::Result<()> {
        let seen = self.describe_group(aws).await?;
        let group: Vec<GroupInstance> = seen
            .iter()
            .map(|s| GroupInstance {
                id: s.id.clone(),
                lifecycle: s.lifecycle.clone(),
            })
            .collect();
        let running: Vec<Running> = shared
            .lock()
            .expect("fleet lock")
            .instances
            .values_mut()
            .map(|t| {
                t.state.exited = t.inst.has_exited();
                t.state.clone()
            })
            .collect();
        let (servers, delay) = {
            let hp = haproxy.lock().expect("haproxy lock");
            let lb = hp.as_ref().context("haproxy is stopped")?;
            (lb.servers()?, lb.deregistration_delay())
        };
        let plan = reconcile::decide(&group, &running, &servers, Instant::now(), delay);

        let by_id: BTreeMap<&str, &Seen> = seen.iter().map(|s| (s.id.as_str(), s)).collect();
        for action in &plan.actions {
            if let Action::Boot { id } = action {
                let s = by_id
                    .get(id.as_str())
                    .context("the reconciler boots only instances of the group")?;
                let tracked = self
                    .boot(aws, s)
                    .await
                    .with_context(|| format!("starting instance {id}"))?;
                let mut g = shared.lock().expect("fleet lock");
                g.stats.launched += 1;
                g.instances.insert(id.clone(), tracked);
            } else {
                let mut g = shared.lock().expect("fleet lock");
                let hp = haproxy.lock().expect("haproxy lock");
                let lb = hp.as_ref().context("haproxy is stopped")?;
                apply(action, &mut g, lb)?;
            }
        }

        {
            let mut g = shared.lock().expect("fleet lock");
            let mut lb_servers = Vec::new();
            for (id, t) in &mut g.instances {
                if let Some(s) = by_id.get(id.as_str()) {
                    t.view.lifecycle.clone_from(&s.lifecycle);
                }
                t.view.in_lb = plan.in_lb.contains(id);
                if t.view.in_lb {
                    lb_servers.push((id.clone(), t.view.port));
                }
            }
            g.lb_servers = lb_servers;
        }
        if self.runtime.boots_outside_the_group() {
            self.outside(aws, shared).await?;
        }
        let mut g = shared.lock().expect("fleet lock");
        // Reap the finished stoppers.
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut g.gone)
            .into_iter()
            .partition(std::thread::JoinHandle::is_finished);
        g.gone = pending;
        for h in done {
            let _ = h.join();
        }
        Ok(())
    }

    async fn describe_group(&self, aws: &Aws) -> anyhow::Result<Vec<Seen>> {
        let out = aws
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.asg)
            .send()
            .await?;
        let Some(group) = out.auto_scaling_groups().first() else {
            bail!("Auto Scaling group {} not found", self.asg);
        };
        Ok(group
            .instances()
            .iter()
            .filter_map(|i| {
                Some(Seen {
                    id: i.instance_id()?.to_owned(),
                    lifecycle: i
                        .lifecycle_state()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    az: i.availability_zone().unwrap_or("us-east-1a").to_owned(),
                    lt: i.launch_template().and_then(|l| {
                        Some((l.launch_template_id()?.to_owned(), l.version()?.to_owned()))
                    }),
                })
            })
            .collect())
    }

    /// Boots the instances outside the group EC2 has pending or running with a tag of
    /// [`OUTSIDE_TAGS`], and stops those it no longer has so.
    async fn outside(&mut self, aws: &Aws, shared: &Mutex<Shared>) -> anyhow::Result<()> {
        let seen = describe_outside(aws).await?;
        let wanted: BTreeMap<&str, &SeenOutside> = seen
            .iter()
            .filter(|s| s.wanted())
            .map(|s| (s.id.as_str(), s))
            .collect();
        {
            let mut g = shared.lock().expect("fleet lock");
            let gone: Vec<String> = g
                .outside
                .keys()
                .filter(|id| !wanted.contains_key(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                if let Some((_, inst)) = g.outside.remove(&id) {
                    g.stats.outside_terminated += 1;
                    g.gone.push(std::thread::spawn(move || drop(inst)));
                }
            }
        }
        for (id, s) in wanted {
            if shared.lock().expect("fleet lock").outside.contains_key(id) {
                continue;
            }
            let mut from_template = self.template_of(aws, s.lt.as_ref()).await?;
            if s.instance_profile.is_some() {
                from_template
                    .instance_profile
                    .clone_from(&s.instance_profile);
            }
            let spec = self
                .launch_spec(
                    aws,
                    id,
                    None,
                    s.imds_tags.clone(),
                    &s.az,
                    &s.image_id,
                    from_template,
                )
                .await
                .with_context(|| format!("starting instance {id} (outside the group)"))?;
            let inst = self
                .runtime
                .boot(&spec, &self.dir)
                .with_context(|| format!("starting instance {id} (outside the group)"))?;
            let view = view_of(id, inst.as_ref(), "");
            let mut g = shared.lock().expect("fleet lock");
            g.stats.outside_launched += 1;
            g.outside.insert(id.to_owned(), (view, inst));
        }
        Ok(())
    }

    /// What an instance launched from `lt` takes from it (cached by template and version).
    async fn template_of(
        &mut self,
        aws: &Aws,
        lt: Option<&(String, String)>,
    ) -> anyhow::Result<FromTemplate> {
        let Some(key) = lt else {
            return Ok(FromTemplate::default());
        };
        if let Some(t) = self.templates.get(key) {
            return Ok(t.clone());
        }
        let v = aws
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(&key.0)
            .versions(&key.1)
            .send()
            .await?;
        let data = v
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data());
        let t = FromTemplate {
            user_data: data
                .and_then(|d| d.user_data())
                .and_then(|b64| aws_smithy_types::base64::decode(b64).ok()),
            instance_profile: data
                .and_then(|d| d.iam_instance_profile())
                .and_then(|p| p.arn().or_else(|| p.name()).map(str::to_owned)),
        };
        self.templates.insert(key.clone(), t.clone());
        Ok(t)
    }

    /// The tags of AMI `ami` (cached).
    async fn image_tags(
        &mut self,
        aws: &Aws,
        ami: &str,
        id: &str,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        if let Some(t) = self.image_tags.get(ami) {
            return Ok(t.clone());
        }
        let imgs = aws.ec2.describe_images().image_ids(ami).send().await?;
        let image = imgs
            .images()
            .first()
            .with_context(|| format!("EC2 does not know AMI {ami} of instance {id}"))?;
        let tags: BTreeMap<String, String> = image
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect();
        self.image_tags.insert(ami.to_owned(), tags.clone());
        Ok(tags)
    }

    /// The [`LaunchSpec`] of instance `id` on `ami` in `az`.
    #[allow(clippy::too_many_arguments)]
    async fn launch_spec(
        &mut self,
        aws: &Aws,
        id: &str,
        asg: Option<String>,
        tags: BTreeMap<String, String>,
        az: &str,
        ami: &str,
        from_template: FromTemplate,
    ) -> anyhow::Result<LaunchSpec> {
        let image_tags = self.image_tags(aws, ami, id).await?;
        // What EC2 does for an instance launched with a profile: its role's credentials,
        // served in its metadata.
        let role_credentials = match &from_template.instance_profile {
            None => None,
            Some(profile) => Some(crate::emulator::role_credentials_at(
                &self.emulator,
                profile,
                id,
            )?),
        };
        Ok(LaunchSpec {
            id: id.to_owned(),
            asg,
            tags,
            availability_zone: az.to_owned(),
            image_id: ami.to_owned(),
            image_tags,
            user_data: from_template.user_data,
            role_credentials,
        })
    }

    /// Resolves what EC2 says of `s` and boots it.
    async fn boot(&mut self, aws: &Aws, s: &Seen) -> anyhow::Result<Tracked> {
        let out = aws
            .ec2
            .describe_instances()
            .instance_ids(&s.id)
            .send()
            .await?;
        let ami = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.image_id().map(str::to_owned))
            .with_context(|| format!("EC2 does not know instance {}", s.id))?;
        let from_template = self.template_of(aws, s.lt.as_ref()).await?;
        let spec = self
            .launch_spec(
                aws,
                &s.id,
                Some(self.asg.clone()),
                BTreeMap::new(),
                &s.az,
                &ami,
                from_template,
            )
            .await?;
        let inst = self.runtime.boot(&spec, &self.dir)?;
        Ok(Tracked {
            view: view_of(&s.id, inst.as_ref(), &s.lifecycle),
            inst,
            state: Running::new(&s.id),
        })
    }
}

/// What callers see of instance `id`, just booted as `inst`, in lifecycle state `lifecycle`.
fn view_of(id: &str, inst: &dyn Instance, lifecycle: &str) -> InstanceView {
    let target = inst.target();
    InstanceView {
        id: id.to_owned(),
        version: inst.version().to_owned(),
        port: target.port(),
        addr: target,
        lifecycle: lifecycle.to_owned(),
        in_lb: false,
        exited: false,
        log: inst.log().to_path_buf(),
        leader: inst.leader(),
    }
}

/// The instances with a tag of [`OUTSIDE_TAGS`], in any state.
async fn describe_outside(aws: &Aws) -> anyhow::Result<Vec<SeenOutside>> {
    let out = aws
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag-key")
                .set_values(Some(OUTSIDE_TAGS.map(str::to_owned).to_vec()))
                .build(),
        )
        .send()
        .await?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let tags: BTreeMap<String, String> = i
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                .collect();
            let imds_tags_enabled = i
                .metadata_options()
                .and_then(|m| m.instance_metadata_tags())
                .is_some_and(|t| t.as_str() == "enabled");
            Some(SeenOutside {
                id: i.instance_id()?.to_owned(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                az: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or("us-east-1a")
                    .to_owned(),
                image_id: i.image_id()?.to_owned(),
                lt: tags.get("aws:ec2launchtemplate:id").and_then(|id| {
                    Some((
                        id.clone(),
                        tags.get("aws:ec2launchtemplate:version")?.clone(),
                    ))
                }),
                instance_profile: i
                    .iam_instance_profile()
                    .and_then(|p| p.arn())
                    .map(str::to_owned),
                imds_tags: if imds_tags_enabled {
                    tags
                } else {
                    BTreeMap::new()
                },
            })
        })
        .collect())
}

/// Carries out one action other than [`Action::Boot`] and records it.
fn apply(action: &Action, g: &mut Shared, lb: &Lb) -> anyhow::Result<()> {
    let id = action.id();
    match action {
        Action::Boot { .. } => bail!("{action:?} is not carried out here"),
        Action::Admit { .. } => return lb.admit(id),
        Action::Stop { .. } => {
            if let Some(mut t) = g.instances.remove(id) {
                g.stats.terminated += 1;
                // Counted now, so that the fleet's counters never miss an instance being
                // stopped (its stopper's count is folded in later).
                g.stats.restarts += t.restarts();
                t.view.in_lb = false;
                g.gone.push(std::thread::spawn(move || drop(t)));
            }
            return Ok(());
        }
        _ => {}
    }
    let Some(t) = g.instances.get_mut(id) else {
        bail!("instance {id} is not running here");
    };
    match action {
        Action::Register { .. } => {
            lb.register_target(id, t.inst.target())?;
            t.state.registration = Registration::Registered;
            g.stats.registered += 1;
        }
        Action::Deregister { .. } => {
            lb.deregister(id)?;
            t.state.registration = Registration::Draining {
                since: Instant::now(),
            };
        }
        Action::Remove { .. } => {
            lb.remove(id)?;
            t.state.registration = Registration::Removed;
            g.stats.deregistered += 1;
        }
        Action::NotifyTerminated { .. } => {
            t.inst.notify_terminated();
            t.state.told_terminated = true;
        }
        Action::Crashed { .. } => {
            t.state.crash_reported = true;
            t.view.exited = true;
        }
        Action::Boot { .. } | Action::Admit { .. } | Action::Stop { .. } => {}
    }
    Ok(())
}

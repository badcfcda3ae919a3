//! Secret rotation (`[secrets] poll_interval`): the versions of the parameters under
//! `[secrets] path` are polled, and a change is answered as `on_change` says: `restart` reads the
//! new values (refusing overrides as at boot), rewrites the env file and restarts the app with
//! them; `rollout` starts the group's instance refresh once per rotation ([`crate::rollout`]);
//! `ignore` logs it. A poll or a read that fails keeps the app on its old values and is tried
//! again at the next poll.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{OnChange, SecretsSettings, Settings};
use crate::rollout::Rollout;
use crate::secrets;
use crate::supervisor::process::AppSpec;
use crate::supervisor::SupervisorHandle;

/// Starts polling when `[secrets]` has a `poll_interval`; `group` is the instance's Auto Scaling
/// group (a rollout needs one), `versions` the versions the app was started with. With
/// `on_change = "rollout"` in a group, a rollout that launched this instance is followed to its
/// end too ([`Rollout::resume`]). Call it within a Tokio runtime.
pub fn start(
    settings: &Settings,
    aws: &crate::aws::Aws,
    group: Option<&str>,
    instance_id: &str,
    handle: SupervisorHandle,
    spec: AppSpec,
    versions: BTreeMap<String, i64>,
) {
    let Some(s) = &settings.secrets else {
        return;
    };
    let Some(poll) = s.poll_interval else {
        return;
    };
    let rollout = match (group, s.on_change) {
        (Some(group), OnChange::Rollout) => Some(Rollout {
            ssm: aws.ssm.clone(),
            asg: aws.asg.clone(),
            cw: aws.cw.clone(),
            metrics: settings.metrics.clone(),
            group: group.to_owned(),
            instance_id: instance_id.to_owned(),
            lease_prefix: settings.lease.prefix.clone(),
            poll,
        }),
        _ => None,
    };
    if let Some(r) = &rollout {
        // An instance that a rollout's refresh launched follows it to its end too.
        let r = r.clone();
        let id = secrets::versions_id(&versions);
        tokio::spawn(async move { r.resume(&id).await });
    }
    let rotation = Rotation {
        ssm: aws.ssm.clone(),
        settings: s.clone(),
        rollout,
        handle,
        spec,
        poll,
        baseline: versions,
    };
    tokio::spawn(rotation.run());
}

/// One instance's rotation watch.
struct Rotation {
    ssm: aws_sdk_ssm::Client,
    settings: SecretsSettings,
    /// `on_change = "rollout"` in a group.
    rollout: Option<Rollout>,
    handle: SupervisorHandle,
    spec: AppSpec,
    poll: Duration,
    baseline: BTreeMap<String, i64>,
}

impl Rotation {
    /// Polls until the agent ends.
    async fn run(mut self) {
        loop {
            tokio::time::sleep(self.poll).await;
            let now = match secrets::versions(&self.ssm, &self.settings.path).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot poll secret versions");
                    continue;
                }
            };
            let changed = secrets::changed(&self.baseline, &now);
            if changed.is_empty() {
                continue;
            }
            tracing::info!(?changed, on_change = ?self.settings.on_change, "secrets changed");
            match self.settings.on_change {
                OnChange::Ignore => {}
                OnChange::Restart => match secrets::fetch(&self.ssm, &self.settings.path)
                    .await
                    .and_then(|e| {
                        secrets::refuse_overrides(&e, &self.spec.env, &self.settings.allow_override)
                            .map(|()| e)
                    }) {
                    Ok(env) => {
                        if let Some(file) = &self.settings.env_file {
                            let owner = self
                                .spec
                                .run_as
                                .as_ref()
                                .map(|r| (r.uid.as_raw(), r.gid.as_raw()));
                            if let Err(e) = secrets::write_env_file(file, &env, owner) {
                                tracing::error!(error = %e, "cannot rewrite the env file");
                            }
                        }
                        self.spec.secrets = env.vars;
                        self.handle.restart(Some(self.spec.clone())).await;
                    }
                    Err(e) => {
                        // Keep the app running on its old values; retry at the next poll.
                        tracing::error!(error = %e, "cannot read the rotated secrets; app keeps the old ones");
                        continue;
                    }
                },
                OnChange::Rollout => match &self.rollout {
                    None => tracing::warn!(
                        "secrets changed but the instance is in no group; nothing to roll out"
                    ),
                    // The outcome of a started rollout (also a failed start) is recorded and
                    // published by the rollout itself; only an unusable lease is retried.
                    Some(r) => {
                        if let Err(e) = r.start(&secrets::versions_id(&now)).await {
                            tracing::error!(error = %e, "cannot take the secret rollout lease; retrying at the next poll");
                            continue;
                        }
                    }
                },
            }
            self.baseline = now;
        }
    }
}

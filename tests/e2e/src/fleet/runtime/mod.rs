//! How an instance of the group runs on this machine. The watcher resolves what EC2 says of a
//! launched instance (its AMI and that AMI's tags, its AZ, its launch template's userdata) into a
//! [`LaunchSpec`] and hands it to the fleet's [`Runtime`], which boots it; the reconciler only
//! ever sees the [`Instance`] that comes back. Two runtimes: [`booted::BootedRuntime`] (the AMI's
//! image booted as a container under systemd: the default) and [`process::ProcessRuntime`] (the
//! agent as a host process, the app on a 127.0.0.1 port: faster, for unit-level work).

use std::collections::BTreeMap;

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::imds::ImdsState;

/// The agent's `target-lifecycle-state` as the group hands an instance in.
pub const TARGET_IN_SERVICE: &str = "InService";
/// The agent's `target-lifecycle-state` once the group terminates the instance.
pub const TARGET_TERMINATED: &str = "Terminated";

/// Boots an instance from its AMI's image under systemd.
pub mod booted;
/// Runs a process-only instance: the agent as a host process.
pub mod process;

/// An instance to boot, as EC2 describes it: one the group launched, or one launched on its own
/// (`bake test-image`'s `RunInstances`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    /// `i-…`.
    pub id: String,
    /// The Auto Scaling group that launched it (its metadata's tag `aws:autoscaling:groupName`
    /// and `autoscaling/target-lifecycle-state`); `None`: launched outside any group, its
    /// metadata serves neither.
    pub asg: Option<String>,
    /// The instance tags its metadata serves (`tags/instance/…`): EC2's tags of an instance
    /// launched with `InstanceMetadataTags=enabled`, else none. A group's instance has
    /// `aws:autoscaling:groupName` besides.
    pub tags: BTreeMap<String, String>,
    /// Its AZ (`us-east-1a`).
    pub availability_zone: String,
    /// Its AMI.
    pub image_id: String,
    /// That AMI's tags (`bake:app-version`, the provenance tags, …).
    pub image_tags: BTreeMap<String, String>,
    /// The userdata of the launch template version it was launched from, as given (decoded
    /// from base64; gzip stays gzip).
    pub user_data: Option<Vec<u8>>,
    /// Its instance profile's role credentials, when the launch template names a profile (a
    /// booted instance's metadata serves them; the process runtime ignores them: its agents
    /// sign with the emulator's credentials).
    pub role_credentials: Option<crate::imds::RoleCredentials>,
}

impl LaunchSpec {
    /// The app version its AMI carries: the AMI's tag `bake:app-version`.
    pub fn app_version(&self) -> anyhow::Result<String> {
        self.image_tags
            .get(crate::fleet::APP_VERSION_TAG)
            .cloned()
            .with_context(|| {
                format!(
                    "AMI {} of instance {} has no {} tag",
                    self.image_id,
                    self.id,
                    crate::fleet::APP_VERSION_TAG
                )
            })
    }

    /// Its region: the AZ without its letter.
    #[must_use]
    pub fn region(&self) -> String {
        self.availability_zone
            .trim_end_matches(|c: char| c.is_ascii_lowercase())
            .to_owned()
    }

    /// What its instance metadata serves at boot: id, image, AZ, region, userdata, its tags
    /// and, for a group's instance, the group's tag and `autoscaling/target-lifecycle-state`
    /// `InService`.
    #[must_use]
    pub fn imds_state(&self) -> ImdsState {
        let mut state = ImdsState::new(&self.id);
        state.ami_id = Some(self.image_id.clone());
        state.availability_zone.clone_from(&self.availability_zone);
        state.region = self.region();
        // As bytes: EC2 serves userdata as it was given (gzip included).
        state.user_data_raw.clone_from(&self.user_data);
        let mut tags = self.tags.clone();
        state.target_lifecycle_state = None;
        if let Some(asg) = &self.asg {
            tags.insert("aws:autoscaling:groupName".to_owned(), asg.clone());
            state.target_lifecycle_state = Some(TARGET_IN_SERVICE.into());
        }
        state.tags = (!tags.is_empty()).then_some(tags);
        state.role_credentials.clone_from(&self.role_credentials);
        state
    }
}

/// A way of running the group's instances here.
pub trait Runtime: Send {
    /// Boots `spec`: its agent starts and starts the app; this does not wait for either to be
    /// ready. `dir` is the fleet's working directory; the instance's files go in
    /// `dir/instances/<id>`.
    fn boot(&mut self, spec: &LaunchSpec, dir: &Path) -> anyhow::Result<Box<dyn Instance>>;

    /// Whether it also boots instances launched outside the group (`bake test-image`'s): only
    /// a runtime whose instances run the image's own units can play them.
    fn boots_outside_the_group(&self) -> bool {
        false
    }
}

/// One booted instance. Dropping it stops it (as [`Instance::stop`] with its runtime's grace)
/// and removes what its runtime made for it (processes, container, network, metadata service).
pub trait Instance: Send {
    /// The app version it serves (its AMI's `bake:app-version` tag).
    fn version(&self) -> &str;
    /// Where the load balancer reaches its app.
    fn target(&self) -> SocketAddr;
    /// The agent's log.
    fn log(&self) -> &Path;
    /// App restarts by its agent so far (from the agent's log).
    fn restarts(&self) -> u64;
    /// Its metadata's `autoscaling/target-lifecycle-state` becomes `Terminated`: the agent
    /// drains the app and completes the terminate hook.
    fn notify_terminated(&mut self);
    /// Its runtime ended on its own (the agent exited, the container powered off).
    fn has_exited(&mut self) -> bool;
    /// Stops it: the agent is asked to stop the app gracefully, and killed after `grace`.
    fn stop(&mut self, grace: Duration);

    /// The PID on the host of the instance's PID 1, for commands run inside it
    /// ([`crate::boot::exec_in`]); `None` where the instance is no container (process runtime).
    fn leader(&self) -> Option<i32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_imds_state_of_a_launch_spec() {
        let spec = LaunchSpec {
            id: "i-1".into(),
            asg: Some("web".into()),
            tags: BTreeMap::new(),
            availability_zone: "eu-west-3b".into(),
            image_id: "ami-1".into(),
            image_tags: BTreeMap::new(),
            user_data: Some(b"\x1f\x8b".to_vec()),
            role_credentials: None,
        };
        let st = spec.imds_state();
        assert_eq!(st.region, "eu-west-3");
        assert_eq!(st.availability_zone, "eu-west-3b");
        assert_eq!(st.user_data_raw.as_deref(), Some(&b"\x1f\x8b"[..]));
        assert_eq!(
            st.tags
                .unwrap()
                .get("aws:autoscaling:groupName")
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(
            st.target_lifecycle_state.as_deref(),
            Some(TARGET_IN_SERVICE)
        );
    }

    #[test]
    fn test_imds_state_of_an_instance_outside_a_group() {
        let spec = LaunchSpec {
            id: "i-2".into(),
            asg: None,
            tags: BTreeMap::from([("bake:image-test".into(), "/p/ami-1/t".into())]),
            availability_zone: "us-east-1a".into(),
            image_id: "ami-1".into(),
            image_tags: BTreeMap::new(),
            user_data: None,
            role_credentials: None,
        };
        let st = spec.imds_state();
        let tags = st.tags.unwrap();
        assert_eq!(tags.len(), 1, "{tags:?}");
        assert_eq!(tags["bake:image-test"], "/p/ami-1/t");
        assert_eq!(st.target_lifecycle_state, None);
        let none = LaunchSpec {
            tags: BTreeMap::new(),
            ..spec
        };
        assert_eq!(none.imds_state().tags, None);
    }
}

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use bake_common::aws::AwsSettings;

use crate::Aws;

/// Clock scale the tests run the emulator at: AWS's minutes become a few seconds.
pub const DEFAULT_TIME_SCALE: f64 = 0.01;

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A running emulator, stopped (its whole process group) when dropped.
///
/// Every test starts its own, so tests never see each other's state.
#[derive(Debug)]
pub struct Emulator {
    url: String,
    child: Child,
}

impl Emulator {
    /// Starts an emulator at [`DEFAULT_TIME_SCALE`].
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_scale(Some(DEFAULT_TIME_SCALE))
    }

    /// Starts an emulator; `None` runs its clocks in real time.
    pub fn start_with_scale(time_scale: Option<f64>) -> anyhow::Result<Self> {
        let serve = crate::paths::repo_root().join("tests/emulator/serve");
        let mut cmd = Command::new(&serve);
        cmd.arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("AWS_ENDPOINT_URL");
        match time_scale {
            Some(s) => cmd.env("BAKE_EMULATOR_TIME_SCALE", s.to_string()),
            None => cmd.env_remove("BAKE_EMULATOR_TIME_SCALE"),
        };
        // Its own process group, so Drop can stop the server and its threads together.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // And it dies with the test that started it, even when the test is killed outright.
        crate::process::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", serve.display()))?;
        let stdout = child.stdout.take().context("emulator stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the emulator's endpoint")?;
        let mut emu = Self {
            url: String::new(),
            child,
        };
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            bail!("emulator did not start (said {line:?})");
        };
        emu.url = url.to_owned();
        emu.wait_ready(Duration::from_secs(30))?;
        Ok(emu)
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let addr = self.url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + timeout;
        loop {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("emulator at {} did not accept connections", self.url);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Environment for a child process (a `bake` or `bake-agent` run): the standard endpoint
    /// override, dummy credentials and the region.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Settings for in-process clients: the endpoint and region given explicitly (never through
    /// the process environment, which tests share).
    #[must_use]
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: Some(REGION.into()),
            endpoint_url: Some(self.url.clone()),
            ..AwsSettings::default()
        }
    }

    /// Clients for every service, pointed at this emulator with dummy credentials.
    pub async fn aws(&self) -> Aws {
        let conf = bake_common::aws::sdk_config(&self.settings()).await;
        // The emulator accepts any credentials; static ones keep the developer's own out of it.
        let creds = SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "bake-e2e",
        ));
        let conf = conf.into_builder().credentials_provider(creds).build();
        Aws::from_conf(&conf)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        crate::process::stop_group(&mut self.child, Duration::from_secs(5));
    }
}

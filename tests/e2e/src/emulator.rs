use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
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
    /// The harness's own access key: the emulator's dummy one, or once IAM is enforced
    /// ([`Emulator::enforce_iam`]) an administrator's.
    keys: Mutex<Keys>,
}

#[derive(Clone)]
struct Keys {
    id: String,
    secret: String,
    enforced: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("id", &self.id)
            .field("enforced", &self.enforced)
            .finish_non_exhaustive()
    }
}

/// The harness's administrator once IAM is enforced: what the harness arranges and inspects
/// with (it stands for the account's operators, not for bake or its agents).
const ADMIN_STACK: &str = "bake-e2e-admin";
const ADMIN_TEMPLATE: &str = r#"
Resources:
  Admin:
    Type: AWS::IAM::User
    Properties: { UserName: bake-e2e-admin }
  AdminPolicy:
    Type: AWS::IAM::Policy
    Properties:
      PolicyName: administrator
      Users: [!Ref Admin]
      PolicyDocument:
        Version: "2012-10-17"
        Statement: [{ Effect: Allow, Action: "*", Resource: "*" }]
  AdminKey:
    Type: AWS::IAM::AccessKey
    Properties: { UserName: !Ref Admin }
Outputs:
  AccessKeyId: { Value: !Ref AdminKey }
  SecretAccessKey: { Value: !GetAtt AdminKey.SecretAccessKey }
"#;

/// Credentials an instance's role got from the emulator, as EC2 gets them for it.
pub use crate::imds::RoleCredentials;

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
            keys: Mutex::new(Keys {
                id: "testing".into(),
                secret: "testing".into(),
                enforced: false,
            }),
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
    /// override, the harness's credentials (dummy ones, or the administrator's once IAM is
    /// enforced) and the region.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let keys = self.keys();
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", keys.id),
            ("AWS_SECRET_ACCESS_KEY", keys.secret),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Environment for a child process that signs in as role `role_arn` with the web identity
    /// token in `token_file`, as a CI job does through OIDC (`AWS_ROLE_ARN`,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`: the SDK's own provider chain calls
    /// AssumeRoleWithWebIdentity): no access key of its own.
    #[must_use]
    pub fn web_identity_env(
        &self,
        role_arn: &str,
        token_file: &std::path::Path,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ROLE_ARN", role_arn.to_owned()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ROLE_SESSION_NAME", "bake-e2e-release".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    fn keys(&self) -> Keys {
        self.keys.lock().expect("emulator keys").clone()
    }

    /// The harness's credentials ([`Emulator::env`]'s).
    #[must_use]
    pub fn credentials(&self) -> Credentials {
        let keys = self.keys();
        Credentials::new(keys.id, keys.secret, None, None, "bake-e2e")
    }

    /// Whether [`Emulator::enforce_iam`] ran.
    #[must_use]
    pub fn iam_enforced(&self) -> bool {
        self.keys().enforced
    }

    /// From now on every call is authenticated and authorised as on AWS: moto's own switch
    /// (`POST /moto-api/reset-auth 0`: the calls before it were free), after the harness made
    /// itself an administrator (an IAM user allowed everything, by a CloudFormation stack of
    /// its own) whose key [`Emulator::env`], [`Emulator::aws`] and [`Emulator::credentials`]
    /// use from then on. What the emulator evaluates (and what not): docs/emulator.md.
    pub async fn enforce_iam(&self) -> anyhow::Result<()> {
        let aws = self.aws().await;
        aws.cfn
            .create_stack()
            .stack_name(ADMIN_STACK)
            .template_body(ADMIN_TEMPLATE)
            .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
            .send()
            .await
            .context("creating the harness's administrator")?;
        let outputs = crate::iam::stack_outputs(&aws, ADMIN_STACK, Duration::from_secs(30)).await?;
        let key = |k: &str| {
            outputs
                .get(k)
                .cloned()
                .with_context(|| format!("stack {ADMIN_STACK} has no output {k}"))
        };
        let keys = Keys {
            id: key("AccessKeyId")?,
            secret: key("SecretAccessKey")?,
            enforced: true,
        };
        // The count of free calls left, as text: moto reads a form body as a form and fails.
        let (code, body) = crate::fleet::http_post_text(self.addr()?, "/moto-api/reset-auth", "0")?;
        if code != 200 {
            bail!("switching IAM enforcement on: {code} {body}");
        }
        *self.keys.lock().expect("emulator keys") = keys;
        Ok(())
    }

    /// What EC2 gets for an instance launched with `instance_profile` (an ARN or a name): its
    /// role's credentials, issued by the emulator's STS as EC2 asks for them (the role must
    /// trust `ec2.amazonaws.com`), with the instance id as session name.
    pub fn role_credentials(
        &self,
        instance_profile: &str,
        instance_id: &str,
    ) -> anyhow::Result<RoleCredentials> {
        role_credentials_at(&self.url, instance_profile, instance_id)
    }

    fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("emulator address {}", self.url))
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

    /// Clients for every service, pointed at this emulator with the harness's credentials
    /// ([`Emulator::credentials`]: static ones keep the developer's own out of it).
    pub async fn aws(&self) -> Aws {
        clients(&self.settings(), self.credentials()).await
    }
}

/// [`Emulator::role_credentials`] of the emulator at `url` (`http://127.0.0.1:PORT`).
pub fn role_credentials_at(
    url: &str,
    instance_profile: &str,
    instance_id: &str,
) -> anyhow::Result<RoleCredentials> {
    let key = if instance_profile.starts_with("arn:") {
        "InstanceProfileArn"
    } else {
        "InstanceProfileName"
    };
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair(key, instance_profile)
        .append_pair("InstanceId", instance_id)
        .finish();
    let addr = url
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("emulator address {url}"))?;
    let (code, body) =
        crate::fleet::http_post_form(addr, "/bake-emulator/ec2/role-credentials", &form)?;
    let doc: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("role credentials for {instance_profile}: {code} {body}"))?;
    if code != 200 {
        bail!(
            "the emulator gives instance {instance_id} no credentials of profile \
             {instance_profile}: {code} {}",
            doc["Error"].as_str().unwrap_or(&body)
        );
    }
    let field = |k: &str| {
        doc[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("role credentials for {instance_profile} lack {k}"))
    };
    let instance_profile_arn = if key == "InstanceProfileArn" {
        instance_profile.to_owned()
    } else {
        format!("arn:aws:iam::123456789012:instance-profile/{instance_profile}")
    };
    Ok(RoleCredentials {
        instance_profile_arn,
        role_name: field("RoleName")?,
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        token: field("Token")?,
        expiration: field("Expiration")?,
    })
}

/// Clients for every service from `settings`, signing with `creds`.
pub async fn clients(settings: &AwsSettings, creds: Credentials) -> Aws {
    let conf = bake_common::aws::sdk_config(settings).await;
    let creds = SharedCredentialsProvider::new(creds);
    Aws::from_conf(&conf.into_builder().credentials_provider(creds).build())
}

impl Drop for Emulator {
    fn drop(&mut self) {
        crate::process::stop_group(&mut self.child, Duration::from_secs(5));
    }
}

//! An environment's identities in the emulator, from the real stacks: cloudformation/iam.yaml
//! (the instance role and profile, the release role that CI assumes through GitHub's OIDC
//! provider) with the stacks it imports from (network.yaml, data.yaml), deployed as an operator
//! would, before [`crate::Emulator::enforce_iam`] makes every later call answer to them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};

use crate::Aws;

/// The repository the release role trusts in a test environment (iam.yaml's
/// `GitHubRepository`), and the ref a release runs from (its `GitHubRef` default).
pub const GITHUB_REPOSITORY: &str = "example/bake";
/// The ref the release role trusts (iam.yaml's `GitHubRef` default).
pub const GITHUB_REF: &str = "refs/heads/main";
/// GitHub's OIDC issuer (iam.yaml's provider URL).
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// What iam.yaml made for environment `env`.
#[derive(Clone, Debug)]
pub struct Identities {
    /// The environment (`EnvName` of every stack).
    pub env: String,
    /// The app instances' profile (the fleet's launch template names it).
    pub instance_profile_arn: String,
    /// Their role.
    pub instance_role_arn: String,
    /// The role `bake` runs as in CI.
    pub release_role_arn: String,
}

/// Deploys network.yaml, data.yaml and iam.yaml for environment `env` (stacks
/// `bake-<env>-network`, `-data`, `-iam`, in that order: each imports the one before) and
/// returns what iam.yaml made.
pub async fn deploy(aws: &Aws, env: &str) -> anyhow::Result<Identities> {
    let repo = crate::paths::repo_root().join("cloudformation");
    let mut iam = BTreeMap::new();
    for (part, params) in [
        ("network", vec![]),
        ("data", vec![]),
        ("iam", vec![("GitHubRepository", GITHUB_REPOSITORY)]),
    ] {
        let name = format!("bake-{env}-{part}");
        let body = std::fs::read_to_string(repo.join(format!("{part}.yaml")))
            .with_context(|| format!("reading cloudformation/{part}.yaml"))?;
        let mut req = aws
            .cfn
            .create_stack()
            .stack_name(&name)
            .template_body(body)
            .capabilities(Capability::CapabilityNamedIam)
            .parameters(
                Parameter::builder()
                    .parameter_key("EnvName")
                    .parameter_value(env)
                    .build(),
            );
        for (k, v) in params {
            req = req.parameters(
                Parameter::builder()
                    .parameter_key(k)
                    .parameter_value(v)
                    .build(),
            );
        }
        req.send()
            .await
            .with_context(|| format!("CreateStack {name}"))?;
        iam = stack_outputs(aws, &name, Duration::from_secs(60)).await?;
    }
    let out = |k: &str| {
        iam.get(k)
            .cloned()
            .with_context(|| format!("stack bake-{env}-iam has no output {k}"))
    };
    Ok(Identities {
        env: env.to_owned(),
        instance_profile_arn: out("InstanceProfileArn")?,
        instance_role_arn: out("InstanceRoleArn")?,
        release_role_arn: out("ReleaseRoleArn")?,
    })
}

/// [`deploy`] of environment `env` into `emu`, then [`crate::Emulator::enforce_iam`]: from then
/// on every call answers to iam.yaml's roles (and the harness's administrator).
pub async fn deploy_and_enforce(emu: &crate::Emulator, env: &str) -> anyhow::Result<Identities> {
    let ids = deploy(&emu.aws().await, env)
        .await
        .with_context(|| format!("deploying environment {env}'s network, data and iam stacks"))?;
    emu.enforce_iam()
        .await
        .context("switching IAM enforcement on")?;
    Ok(ids)
}

/// The outputs of stack `name` once it is created (within `timeout`); an error names the stack,
/// its status and its resources' failure reasons.
pub async fn stack_outputs(
    aws: &Aws,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, String>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let out = aws
            .cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .with_context(|| format!("DescribeStacks {name}"))?;
        let stack = out
            .stacks()
            .first()
            .with_context(|| format!("no stack {name}"))?;
        match stack.stack_status() {
            Some(StackStatus::CreateComplete) => {
                return Ok(stack
                    .outputs()
                    .iter()
                    .filter_map(|o| {
                        Some((o.output_key()?.to_owned(), o.output_value()?.to_owned()))
                    })
                    .collect());
            }
            Some(StackStatus::CreateInProgress) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            status => {
                let events = aws
                    .cfn
                    .describe_stack_events()
                    .stack_name(name)
                    .send()
                    .await
                    .map(|e| {
                        e.stack_events()
                            .iter()
                            .filter_map(|e| {
                                Some(format!(
                                    "{}: {}",
                                    e.logical_resource_id()?,
                                    e.resource_status_reason()?
                                ))
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                bail!("stack {name} is {status:?}, not CREATE_COMPLETE: {events}");
            }
        }
    }
}

/// A web identity token as GitHub Actions issues one to a workflow run of `repository` on
/// `git_ref` (issuer, audience `sts.amazonaws.com`, subject `repo:<repository>:ref:<git_ref>`),
/// valid for an hour. Its signature is a placeholder: the emulator cannot check GitHub's keys
/// and reads the claims alone (docs/emulator.md).
#[must_use]
pub fn github_token(repository: &str, git_ref: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": "bake-e2e" });
    let claims = serde_json::json!({
        "iss": GITHUB_ISSUER,
        "aud": "sts.amazonaws.com",
        "sub": format!("repo:{repository}:ref:{git_ref}"),
        "repository": repository,
        "ref": git_ref,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    let part = |v: &serde_json::Value| base64url(v.to_string().as_bytes());
    format!(
        "{}.{}.{}",
        part(&header),
        part(&claims),
        base64url(b"unsigned")
    )
}

/// Writes [`github_token`] for `repository`/`git_ref` to `dir/web-identity-token` (mode 0600,
/// as the runner's token file) and returns its path.
pub fn write_github_token(dir: &Path, repository: &str, git_ref: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("web-identity-token");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(github_token(repository, git_ref).as_bytes())?;
    Ok(path)
}

/// Base64url without padding (RFC 7515's JWS encoding).
fn base64url(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_github_token_carries_the_claims_the_release_role_trusts() {
        let t = github_token("o/r", "refs/heads/main");
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| !p.contains(['=', '+', '/'])), "{t}");
        let payload = parts[1].replace('-', "+").replace('_', "/");
        let pad = "=".repeat((4 - payload.len() % 4) % 4);
        let claims: serde_json::Value = serde_json::from_slice(
            &aws_smithy_types::base64::decode(format!("{payload}{pad}")).unwrap(),
        )
        .unwrap();
        assert_eq!(claims["iss"], GITHUB_ISSUER);
        assert_eq!(claims["aud"], "sts.amazonaws.com");
        assert_eq!(claims["sub"], "repo:o/r:ref:refs/heads/main");
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    }
}

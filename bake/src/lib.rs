//! `bake`: bake hardened AMIs with Packer and roll them out with watched, reversible instance
//! refreshes.
//!
//! Configuration: `bake.toml` (`--config`). Exit codes: [`exit::Exit`].

/// Command line.
pub mod cli;
/// Exit codes and error reporting.
pub mod exit;

use anyhow::Context;
use bake_common::aws::{Aws, AwsSettings};

use crate::cli::{Cli, Command, Output};
use crate::exit::{Coded, Exit};

/// Runs one command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Status { asg } => {
            let aws = Aws::load(&AwsSettings::default()).await;
            let Some(asg) = asg else {
                return Err(Coded { code: Exit::Config, message: "no Auto Scaling Group: pass --asg".into() }.into());
            };
            let out = aws
                .asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(&asg)
                .send()
                .await
                .map_err(|e| Coded {
                    code: Exit::Aws,
                    message: format!(
                        "describing auto scaling group '{asg}': {}",
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    ),
                })?;
            let group = out
                .auto_scaling_groups()
                .first()
                .ok_or_else(|| Coded { code: Exit::Aws, message: format!("auto scaling group '{asg}' not found") })
                .context("reading the fleet")?;
            let rows: Vec<serde_json::Value> = group
                .instances()
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "instance_id": i.instance_id(),
                        "availability_zone": i.availability_zone(),
                        "lifecycle_state": i.lifecycle_state().map(|s| s.as_str()),
                        "health_status": i.health_status(),
                        "launch_template_version": i.launch_template().and_then(|t| t.version()),
                    })
                })
                .collect();
            match cli.global.output {
                Output::Json => println!("{}", serde_json::json!({ "asg": asg, "instances": rows })),
                Output::Text => {
                    for r in &rows {
                        println!(
                            "{}\t{}\t{}\t{}\tv{}",
                            r["instance_id"].as_str().unwrap_or("-"),
                            r["availability_zone"].as_str().unwrap_or("-"),
                            r["lifecycle_state"].as_str().unwrap_or("-"),
                            r["health_status"].as_str().unwrap_or("-"),
                            r["launch_template_version"].as_str().unwrap_or("-"),
                        );
                    }
                }
            }
            Ok(Exit::Ok)
        }
    }
}

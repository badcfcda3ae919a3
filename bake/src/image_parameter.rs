//! The SSM parameter naming the fleet's image (`target.image_parameter`; `cloudformation/
//! fleet.yaml`'s `ImageParameter`, of type `AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>`).
//!
//! `bake release` (and `bake rollback`, which releases the previous image) sets it to the image
//! released once the instance refresh ended `Successful` (or `partial`), never before: a release
//! that fails, is rolled back or cancelled, or is not watched to its end (`--no-wait`, a timeout,
//! an interrupt) leaves it naming the image that runs. CloudFormation reads the parameter on
//! every create and update of the fleet stack, so an update launches the image that runs, not
//! the first one.
//!
//! The value is written with data type `aws:ec2:image`, which SSM validates asynchronously (a
//! `PutParameter` that answers 200 may still not change the parameter): the parameter is read
//! back until it names the image, for at most [`CONFIRM_TIMEOUT`].

use std::time::Duration;

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::aws::Aws;

/// The data type of the parameter: SSM checks that the value is an AMI of the account.
pub const DATA_TYPE: &str = "aws:ec2:image";
/// Longest parameter name (AWS counts the parameter's whole ARN against it).
pub const MAX_NAME_LEN: usize = 1011;
/// Deepest hierarchy AWS allows (`/a/b/c` has 3 levels).
pub const MAX_LEVELS: usize = 15;
/// How long the parameter is read back until it names the image written.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two read-backs.
const CONFIRM_INTERVAL: Duration = Duration::from_millis(500);

/// Whether `name` is a parameter name SSM accepts, as AWS documents it for `PutParameter`: a
/// path (a leading `/`; the fleet stack's default is `/bake/<env>/image-id`) of at most 15
/// levels and [`MAX_NAME_LEN`] characters, made of `a-zA-Z0-9_.-`, without an empty level, and
/// not under the reserved `aws` or `ssm` prefixes (case-insensitive). The message says what is
/// wrong.
///
/// # Errors
/// What makes `name` unacceptable.
pub fn check_name(name: &str) -> Result<(), String> {
    let Some(path) = name.strip_prefix('/') else {
        return Err(format!(
            "\"{name}\" must be a path starting with '/' (fleet.yaml's ImageParameter, e.g. \"/bake/prod/image-id\")"
        ));
    };
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "{} characters: an SSM parameter name has at most {MAX_NAME_LEN}",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(*c, '_' | '.' | '-' | '/')))
    {
        return Err(format!(
            "\"{name}\": {c:?} is not allowed in an SSM parameter name (only a-z, A-Z, 0-9, _ . - and /)"
        ));
    }
    let levels: Vec<&str> = path.split('/').collect();
    if levels.iter().any(|l| l.is_empty()) {
        return Err(format!(
            "\"{name}\": empty level (a doubled or trailing '/')"
        ));
    }
    if levels.len() > MAX_LEVELS {
        return Err(format!(
            "\"{name}\": {} levels, an SSM parameter hierarchy has at most {MAX_LEVELS}",
            levels.len()
        ));
    }
    let first = path.to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err(format!(
            "\"{name}\": names beginning with \"aws\" or \"ssm\" are reserved by AWS"
        ));
    }
    Ok(())
}

/// The parameter after a release, as reported (`image_parameter` of the result).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    /// `target.image_parameter`.
    pub name: String,
    /// Whether it now names the released image (written and read back).
    pub written: bool,
    /// The image it was set to, when written.
    pub image_id: Option<String>,
    /// The parameter's version `PutParameter` made, when written.
    pub version: Option<i64>,
    /// Why it was not written, when not: the refresh did not end `Successful`, it was not
    /// watched to its end, or the write failed (the error).
    pub reason: Option<String>,
}

impl Recorded {
    /// Not written, for `reason`.
    #[must_use]
    pub fn skipped(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            reason: Some(reason.into()),
            ..Self::default()
        }
    }

    /// One line for people: what the parameter names now, or why it was not written.
    #[must_use]
    pub fn describe(&self) -> String {
        match (&self.image_id, self.written) {
            (Some(image), true) => format!(
                "image parameter {} = {image} (version {})",
                self.name,
                self.version.unwrap_or_default()
            ),
            _ => format!(
                "image parameter {} not written: {}",
                self.name,
                self.reason.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// Writing the parameter failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageParameterError {
    /// `PutParameter` failed.
    #[error("writing SSM parameter '{name}': {}", DisplayErrorContext(.source))]
    Put {
        /// The parameter.
        name: String,
        /// The SDK's error.
        source: Box<SdkError<PutParameterError>>,
    },
    /// `GetParameter` (the read-back) failed.
    #[error("reading back SSM parameter '{name}': {}", DisplayErrorContext(.source))]
    Get {
        /// The parameter.
        name: String,
        /// The SDK's error.
        source: Box<SdkError<GetParameterError>>,
    },
    /// The parameter did not name the image within [`CONFIRM_TIMEOUT`] (SSM's asynchronous
    /// validation of `aws:ec2:image` refused it, or has not finished).
    #[error("SSM parameter '{name}' still names {} {}s after PutParameter set it to {image} (SSM validates aws:ec2:image values asynchronously and has not accepted it)", .found.as_deref().unwrap_or("nothing"), .waited.as_secs())]
    NotConfirmed {
        /// The parameter.
        name: String,
        /// The image written.
        image: String,
        /// What it named at the last read.
        found: Option<String>,
        /// How long it was read back.
        waited: Duration,
    },
}

/// The command that sets the parameter by hand, said when bake could not.
#[must_use]
pub fn fix_command(name: &str, image: &str) -> String {
    format!(
        "aws ssm put-parameter --name {name} --type String --data-type {DATA_TYPE} --overwrite --value {image}"
    )
}

/// Sets `name` to `image` (the image of group `asg`) and reads it back until it names it;
/// returns the parameter's new version.
///
/// # Errors
/// A failed `PutParameter` or `GetParameter`, or a parameter that does not name the image
/// within [`CONFIRM_TIMEOUT`].
pub async fn write(
    aws: &Aws,
    name: &str,
    image: &str,
    asg: &str,
) -> Result<i64, ImageParameterError> {
    let put = aws
        .ssm
        .put_parameter()
        .name(name)
        .description(format!(
            "image of auto scaling group '{asg}', set by bake release after a successful instance refresh"
        ))
        .value(image)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .data_type(DATA_TYPE)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| ImageParameterError::Put {
            name: name.to_owned(),
            source: Box::new(e),
        })?;
    let version = put.version();
    let began = std::time::Instant::now();
    loop {
        let found = match aws.ssm.get_parameter().name(name).send().await {
            Ok(out) => out.parameter().cloned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetParameterError::is_parameter_not_found) =>
            {
                None
            }
            Err(e) => {
                return Err(ImageParameterError::Get {
                    name: name.to_owned(),
                    source: Box::new(e),
                })
            }
        };
        let value = found
            .as_ref()
            .and_then(|p| p.value())
            .map(ToOwned::to_owned);
        if value.as_deref() == Some(image) && found.as_ref().is_some_and(|p| p.version() >= version)
        {
            return Ok(version);
        }
        if began.elapsed() >= CONFIRM_TIMEOUT {
            return Err(ImageParameterError::NotConfirmed {
                name: name.to_owned(),
                image: image.to_owned(),
                found: value,
                waited: began.elapsed(),
            });
        }
        tokio::time::sleep(CONFIRM_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_are_checked_as_aws_documents_them() {
        for ok in [
            "/bake/prod/image-id",
            "/a",
            "/My_App/v1.2/image-id",
            format!("/{}", "a".repeat(MAX_NAME_LEN - 1)).as_str(),
            "/a".repeat(MAX_LEVELS).as_str(),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("bake/prod/image-id", "must be a path starting with '/'"),
            ("", "must be a path starting with '/'"),
            ("/bake/prod/image id", "' ' is not allowed"),
            ("/bake/prod/image:id", "':' is not allowed"),
            ("/bake/prød", "'ø' is not allowed"),
            ("/bake//image-id", "empty level"),
            ("/bake/prod/", "empty level"),
            ("/", "empty level"),
            ("/aws/service/x", "reserved"),
            ("/AWSbake/x", "reserved"),
            ("/ssm/x", "reserved"),
            ("/Ssmx", "reserved"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_NAME_LEN));
        assert!(check_name(&long)
            .unwrap_err()
            .starts_with("1012 characters: an SSM parameter name has at most 1011"));
        let deep = "/a".repeat(MAX_LEVELS + 1);
        assert!(check_name(&deep).unwrap_err().contains("16 levels"));
        // Not reserved: "aws" or "ssm" further down, or later in the first level.
        assert_eq!(check_name("/bake/aws/ssm"), Ok(()));
        assert_eq!(check_name("/my-aws"), Ok(()));
    }

    #[test]
    fn test_describe_says_what_it_names_or_why_not() {
        let r = Recorded {
            name: "/bake/prod/image-id".into(),
            written: true,
            image_id: Some("ami-1".into()),
            version: Some(3),
            reason: None,
        };
        assert_eq!(
            r.describe(),
            "image parameter /bake/prod/image-id = ami-1 (version 3)"
        );
        assert_eq!(
            Recorded::skipped("/p", "the refresh ended rolled_back").describe(),
            "image parameter /p not written: the refresh ended rolled_back"
        );
        assert_eq!(
            fix_command("/p", "ami-1"),
            "aws ssm put-parameter --name /p --type String --data-type aws:ec2:image --overwrite --value ami-1"
        );
    }
}

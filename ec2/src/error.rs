//! The client's errors. Each names the call (action, what it was about, region) and, when AWS
//! answered, AWS's code, message and request id, and says what an operator can do about it.

use std::fmt;
use std::time::Duration;

/// One EC2 call, for messages: `EC2 AssociateAddress of eipalloc-… to instance i-… in
/// eu-west-1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The Query API action, e.g. `AssociateAddress`.
    pub action: &'static str,
    /// What it was about, e.g. `of eipalloc-… to instance i-…` (may be empty).
    pub subject: String,
    /// The region the request went to.
    pub region: String,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EC2 {}", self.action)?;
        if !self.subject.is_empty() {
            write!(f, " {}", self.subject)?;
        }
        write!(f, " in {}", self.region)
    }
}

/// What AWS said in an error answer (`<Response><Errors><Error><Code>…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsMessage {
    /// The HTTP status.
    pub status: u16,
    /// AWS's error code, e.g. `AuthFailure`, or `HTTP 503` for an answer without one.
    pub code: String,
    /// AWS's message (empty if it gave none).
    pub message: String,
    /// The request id, to quote to AWS support.
    pub request_id: Option<String>,
}

impl fmt::Display for AwsMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AWS said {}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {:?}", self.message)?;
        }
        write!(f, " (HTTP {}", self.status)?;
        if let Some(request_id) = &self.request_id {
            write!(f, ", request id {request_id}")?;
        }
        f.write_str(")")
    }
}

/// An EC2 call that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's configuration cannot work; nothing was sent.
    #[error("EC2 client configuration: {0}")]
    Config(String),
    /// An argument AWS would refuse (an empty id, …); nothing was sent.
    #[error("{call}: {reason}; nothing was sent")]
    InvalidArgument {
        /// The call.
        call: Call,
        /// What is wrong.
        reason: String,
    },
    /// AWS did not accept the credentials or the signature (`AuthFailure`,
    /// `InvalidClientTokenId`, `SignatureDoesNotMatch`, `RequestExpired`, `ExpiredToken`,
    /// `IncompleteSignature`, `MissingAuthenticationToken`). Never retried.
    #[error("{call}: AWS refused the credentials: {aws}. {}", auth_advice(&aws.code))]
    Auth {
        /// The call.
        call: Call,
        /// What AWS said.
        aws: Box<AwsMessage>,
    },
    /// The credentials are good but their IAM policy does not allow the action
    /// (`UnauthorizedOperation`).
    #[error(
        "{call}: the IAM policy of these credentials does not allow it: {aws}. Allow ec2:{} (docs/ec2.md lists the least permissions)",
        call.action
    )]
    NotPermitted {
        /// The call.
        call: Call,
        /// What AWS said.
        aws: Box<AwsMessage>,
    },
    /// The account holds as many Elastic IPs in the region as it may (`AddressLimitExceeded`,
    /// 5 per region by default).
    #[error(
        "{call}: the account's Elastic IP limit in {} is reached: {aws}. Release addresses no longer used (DescribeAddresses lists them) or ask AWS for a higher limit",
        call.region
    )]
    AddressLimitExceeded {
        /// The call.
        call: Call,
        /// What AWS said.
        aws: Box<AwsMessage>,
    },
    /// No such allocation in this account and region (`InvalidAllocationID.NotFound`).
    #[error(
        "{call}: no Elastic IP allocation {allocation_id} in this account and region: {aws}. It was released, or belongs to another account or region"
    )]
    AllocationNotFound {
        /// The call.
        call: Call,
        /// The allocation id(s) the call named.
        allocation_id: String,
        /// What AWS said.
        aws: Box<AwsMessage>,
    },
    /// No such association (`InvalidAssociationID.NotFound`): the address is no longer
    /// associated through it.
    #[error(
        "{call}: no association {association_id} in this account and region: {aws}. The address was disassociated or associated anew since (DescribeAddresses shows where it is)"
    )]
    AssociationNotFound {
        /// The call.
        call: Call,
        /// The association id the call named.
        association_id: String,
        /// What AWS said.
        aws: Box<AwsMessage>,
    },
    /// AWS throttled every attempt (`RequestLimitExceeded`, `Throttling`, HTTP 503); the call
    /// had no effect.
    #[error(
        "{call}: throttled by AWS on all {attempts} attempts, last: {aws}. The account's request rate in this region is exhausted (other tools using it count too); try again in a minute"
    )]
    Throttled {
        /// The call.
        call: Call,
        /// How many attempts were made.
        attempts: u32,
        /// What AWS said last.
        aws: Box<AwsMessage>,
    },
    /// Any other error answer from AWS.
    #[error("{call}: {aws}")]
    Aws {
        /// The call.
        call: Call,
        /// What AWS said.
        aws: Box<AwsMessage>,
    },
    /// No answer within the request timeout. The request may have reached AWS and taken
    /// effect: DescribeAddresses tells.
    #[error(
        "{call}: no answer within {after:?}; it may or may not have taken effect (DescribeAddresses tells)"
    )]
    Timeout {
        /// The call.
        call: Call,
        /// The timeout.
        after: Duration,
    },
    /// The connection failed. `sent` is false when it could not even be made (nothing
    /// reached AWS); otherwise the call may have taken effect.
    #[error("{call}: {detail}{}", if *sent { "; it may or may not have taken effect (DescribeAddresses tells)" } else { "; nothing was sent" })]
    Transport {
        /// The call.
        call: Call,
        /// The connection's error and its causes.
        detail: String,
        /// Whether the request may have reached AWS.
        sent: bool,
    },
    /// An answer that is not what EC2 sends: not XML, not the expected elements, too large.
    /// After a 2xx status the call took effect even though its result could not be read.
    #[error("{call}: unexpected answer (HTTP {status}): {detail}")]
    UnexpectedAnswer {
        /// The call.
        call: Call,
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        detail: String,
    },
}

impl Error {
    /// The call this error is about (`None` for [`Error::Config`]).
    pub fn call(&self) -> Option<&Call> {
        match self {
            Error::Config(_) => None,
            Error::InvalidArgument { call, .. }
            | Error::Auth { call, .. }
            | Error::NotPermitted { call, .. }
            | Error::AddressLimitExceeded { call, .. }
            | Error::AllocationNotFound { call, .. }
            | Error::AssociationNotFound { call, .. }
            | Error::Throttled { call, .. }
            | Error::Aws { call, .. }
            | Error::Timeout { call, .. }
            | Error::Transport { call, .. }
            | Error::UnexpectedAnswer { call, .. } => Some(call),
        }
    }

    /// What AWS said, when it answered with an error.
    pub fn aws(&self) -> Option<&AwsMessage> {
        match self {
            Error::Auth { aws, .. }
            | Error::NotPermitted { aws, .. }
            | Error::AddressLimitExceeded { aws, .. }
            | Error::AllocationNotFound { aws, .. }
            | Error::AssociationNotFound { aws, .. }
            | Error::Throttled { aws, .. }
            | Error::Aws { aws, .. } => Some(aws.as_ref()),
            _ => None,
        }
    }

    /// Whether the call may have taken effect although it failed: no answer after the request
    /// may have reached AWS, or a success answer that could not be read. A journaled
    /// procedure must look (DescribeAddresses) before it goes on.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Transport { sent, .. } => *sent,
            Error::UnexpectedAnswer { status, .. } => (200..300).contains(status),
            _ => false,
        }
    }
}

/// What to check for each authentication failure code.
fn auth_advice(code: &str) -> &'static str {
    match code {
        "SignatureDoesNotMatch" => {
            "The secret access key does not belong to this access key id: store the key pair again"
        }
        "RequestExpired" => {
            "The request's time is more than 5 minutes off AWS's clock: check this host's clock (chrony or systemd-timesyncd)"
        }
        "ExpiredToken" => {
            "The temporary credentials have expired: get a new session token, or use a long-term access key"
        }
        "IncompleteSignature" | "MissingAuthenticationToken" => {
            "The request was not signed as AWS expects: check the endpoint (is it EC2's?) and report this as a bug"
        }
        _ => {
            "The access key id is unknown to AWS, deactivated or deleted, or its session token is missing or wrong: check the key in IAM (aws iam list-access-keys) and store an active one"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call {
        Call {
            action: "ReleaseAddress",
            subject: "of eipalloc-0123".to_string(),
            region: "eu-west-1".to_string(),
        }
    }

    fn aws(code: &str) -> Box<AwsMessage> {
        Box::new(AwsMessage {
            status: 400,
            code: code.to_string(),
            message: "AWS was not able to validate the provided access credentials".to_string(),
            request_id: Some("7a62c49f-347e-4fc4-9331-6e8eEXAMPLE".to_string()),
        })
    }

    #[test]
    fn messages_name_the_call_what_aws_said_and_what_to_do() {
        let auth = Error::Auth {
            call: call(),
            aws: aws("AuthFailure"),
        }
        .to_string();
        for part in [
            "EC2 ReleaseAddress of eipalloc-0123 in eu-west-1",
            "AWS said AuthFailure",
            "validate the provided access credentials",
            "request id 7a62c49f-347e-4fc4-9331-6e8eEXAMPLE",
            "HTTP 400",
            "iam list-access-keys",
        ] {
            assert!(auth.contains(part), "{part:?} missing from {auth}");
        }
        let clock = Error::Auth {
            call: call(),
            aws: aws("RequestExpired"),
        }
        .to_string();
        assert!(clock.contains("clock"), "{clock}");
        let denied = Error::NotPermitted {
            call: call(),
            aws: aws("UnauthorizedOperation"),
        }
        .to_string();
        assert!(denied.contains("Allow ec2:ReleaseAddress"), "{denied}");
        let unknown = Error::Timeout {
            call: call(),
            after: Duration::from_secs(10),
        };
        assert!(unknown.outcome_unknown());
        assert!(unknown.to_string().contains("may or may not"), "{unknown}");
        let refused = Error::Transport {
            call: call(),
            detail: "connection refused".to_string(),
            sent: false,
        };
        assert!(!refused.outcome_unknown());
        assert!(
            refused.to_string().ends_with("nothing was sent"),
            "{refused}"
        );
    }
}

//! One Query API call over HTTP: the form body, the signature, the timeout and the size bound,
//! throttling retried with full jitter, and AWS's error answers turned into typed errors. Knows
//! nothing of what an action means (that is `client`) or of XML shapes (that is `xml`).
//!
//! Only throttling is retried: AWS refused those requests before acting on them. A timeout or
//! a broken connection is not, since an AllocateAddress that did take effect would allocate a
//! second address; the error says the outcome is unknown and the caller looks.

use std::time::Instant;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};

use crate::config::Ec2Config;
use crate::credentials::Credentials;
use crate::error::{AwsMessage, Call, Error};
use crate::sigv4::{self, AmzDate, PathNormalization, PayloadHashHeader, SessionTokenSigning};
use crate::xml;

/// The Query API version the calls and answers are written for.
pub(crate) const API_VERSION: &str = "2016-11-15";
/// The service name in the credential scope.
pub(crate) const SIGNING_SERVICE: &str = "ec2";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The largest answer read (DescribeAddresses of a few hundred addresses is well below).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// How much of an unexpected answer an error quotes.
const QUOTED_BYTES: usize = 300;

/// Error codes that mean "slow down": the request was refused before it was acted on.
const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
];
/// Error codes that mean the credentials or the signature were not accepted.
const AUTH_CODES: &[&str] = &[
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "RequestExpired",
    "ExpiredToken",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

/// What an error answer is about, for the typed not-found errors.
#[derive(Clone, Debug, Default)]
pub(crate) struct Subjects {
    /// The allocation id(s) the call names, joined by `, `.
    pub(crate) allocation_id: Option<String>,
    /// The association id the call names.
    pub(crate) association_id: Option<String>,
}

/// The HTTP client, the endpoint, the region and the credentials.
#[derive(Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    endpoint: Url,
    /// The `Host` header: sent explicitly so that what is signed is what goes out.
    host: String,
    config: Ec2Config,
    credentials: Credentials,
}

/// A 2xx answer.
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The whole body.
    pub(crate) body: String,
}

/// How one attempt ended without a usable answer.
enum Failure {
    /// Throttled: may be tried again after a delay.
    Throttled(Box<AwsMessage>),
    /// Anything else: ends the call.
    Final(Error),
}

impl Transport {
    pub(crate) fn new(config: Ec2Config, credentials: Credentials) -> Result<Transport, Error> {
        let endpoint = config.validate()?;
        credentials
            .check()
            .map_err(|e| Error::Config(e.to_string()))?;
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(Error::Config(format!("endpoint {endpoint} has no host"))),
        };
        let http = reqwest::Client::builder()
            // Straight to the endpoint: never through a proxy from the environment, never
            // wherever a redirect points (EC2 does not redirect).
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Transport {
            http,
            endpoint,
            host,
            config,
            credentials,
        })
    }

    pub(crate) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub(crate) fn region(&self) -> &str {
        &self.config.region
    }

    pub(crate) fn call_for(&self, action: &'static str, subject: String) -> Call {
        Call {
            action,
            subject,
            region: self.config.region.clone(),
        }
    }

    /// Sends `Action=…&Version=…` and `params`; the body of the 2xx answer. Throttled
    /// attempts are retried up to `max_attempts` in all.
    pub(crate) async fn call(
        &self,
        call: &Call,
        subjects: &Subjects,
        params: &[(String, String)],
    ) -> Result<Answer, Error> {
        let body = form_body(call.action, params);
        let mut attempt = 1;
        loop {
            match self.attempt(call, subjects, &body, attempt).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Throttled(aws)) if attempt >= self.config.max_attempts => {
                    return Err(Error::Throttled {
                        call: call.clone(),
                        attempts: attempt,
                        aws,
                    });
                }
                Err(Failure::Throttled(aws)) => {
                    let delay = self.config.retry_delay(attempt, rand::random::<f64>());
                    tracing::warn!(
                        action = call.action,
                        region = %call.region,
                        attempt,
                        code = %aws.code,
                        request_id = aws.request_id.as_deref().unwrap_or(""),
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "EC2 throttled the call; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        call: &Call,
        subjects: &Subjects,
        body: &str,
        attempt: u32,
    ) -> Result<Answer, Failure> {
        let started = Instant::now();
        let timeout = self.config.timeout;
        // reqwest's own timeout covers connect, send and the body; the outer one also bounds
        // whatever it might not.
        let outcome = match tokio::time::timeout(timeout, self.exchange(call, body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Final(Error::Timeout {
                call: call.clone(),
                after: timeout,
            })),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = outcome.and_then(|(status, answer)| {
            if (200..300).contains(&status) {
                tracing::debug!(
                    action = call.action,
                    region = %call.region,
                    attempt,
                    status,
                    request_id = xml::request_id(&answer).as_deref().unwrap_or(""),
                    elapsed_ms,
                    "EC2 answered"
                );
                Ok(Answer {
                    status,
                    body: answer,
                })
            } else {
                Err(classify(call, subjects, status, &answer))
            }
        });
        if let Err(Failure::Final(error)) = &outcome {
            tracing::debug!(action = call.action, attempt, elapsed_ms, %error, "EC2 call failed");
        }
        outcome
    }

    /// Signs and sends `body`; the status and the whole answer (bounded), as text.
    async fn exchange(&self, call: &Call, body: &str) -> Result<(u16, String), Failure> {
        let headers = [
            ("Host".to_string(), self.host.clone()),
            ("Content-Type".to_string(), FORM_CONTENT_TYPE.to_string()),
        ];
        let time = AmzDate::now();
        let signed = sigv4::sign(
            &sigv4::SignableRequest {
                method: "POST",
                path: self.endpoint.path(),
                query: &[],
                headers: &headers,
                body: body.as_bytes(),
            },
            &sigv4::SigningParams {
                credentials: &self.credentials,
                region: &self.config.region,
                service: SIGNING_SERVICE,
                time: &time,
                path_normalization: PathNormalization::Normalize,
                payload_hash_header: PayloadHashHeader::Omit,
                session_token_signing: SessionTokenSigning::Signed,
            },
        );
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, FORM_CONTENT_TYPE)
            .header(
                USER_AGENT,
                concat!("palisade-ec2/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &signed.headers {
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                // Credentials::check keeps every header value printable ASCII.
                Failure::Final(Error::Config(format!(
                    "the {name} header would not be a valid header value"
                )))
            })?;
            value.set_sensitive(matches!(*name, "Authorization" | "X-Amz-Security-Token"));
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Failure::Final(Error::Config(format!("{name} is not a header name")))
            })?;
            request = request.header(name, value);
        }
        let transport_failure = |error: reqwest::Error| {
            // A connection that could not be made (refused, or timed out while connecting)
            // carried nothing to AWS; any other failure may have come after AWS acted.
            Failure::Final(if error.is_connect() {
                Error::Transport {
                    call: call.clone(),
                    detail: error_chain(&error),
                    sent: false,
                }
            } else if error.is_timeout() {
                Error::Timeout {
                    call: call.clone(),
                    after: self.config.timeout,
                }
            } else {
                Error::Transport {
                    call: call.clone(),
                    detail: error_chain(&error),
                    sent: true,
                }
            })
        };
        let mut response = request
            .body(body.to_string())
            .send()
            .await
            .map_err(transport_failure)?;
        let status = response.status().as_u16();
        let unexpected = |detail: String| {
            Failure::Final(Error::UnexpectedAnswer {
                call: call.clone(),
                status,
                detail,
            })
        };
        let too_large = || unexpected(format!("larger than {MAX_ANSWER_BYTES} bytes"));
        if response
            .content_length()
            .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_failure)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            answer.extend_from_slice(&chunk);
        }
        let answer = String::from_utf8(answer)
            .map_err(|e| unexpected(format!("not UTF-8 ({})", e.utf8_error())))?;
        Ok((status, answer))
    }
}

/// `Action=…&Version=…&name=value…`, form-encoded.
pub(crate) fn form_body(action: &str, params: &[(String, String)]) -> String {
    [("Action", action), ("Version", API_VERSION)]
        .into_iter()
        .chain(
            params
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .map(|(name, value)| {
            format!(
                "{}={}",
                sigv4::percent_encode(name),
                sigv4::percent_encode(value)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A non-2xx answer as a typed failure.
fn classify(call: &Call, subjects: &Subjects, status: u16, answer: &str) -> Failure {
    let Some(parsed) = xml::error_answer(answer) else {
        if matches!(status, 429 | 503) {
            return Failure::Throttled(Box::new(AwsMessage {
                status,
                code: format!("HTTP {status}"),
                message: quote(answer),
                request_id: None,
            }));
        }
        return Failure::Final(Error::UnexpectedAnswer {
            call: call.clone(),
            status,
            detail: format!("no EC2 error in it: {}", quote(answer)),
        });
    };
    let aws = Box::new(AwsMessage {
        status,
        code: parsed.code,
        message: parsed.message,
        request_id: parsed.request_id,
    });
    let call = call.clone();
    let code = aws.code.as_str();
    if THROTTLING_CODES.contains(&code) || matches!(status, 429 | 503) {
        return Failure::Throttled(aws);
    }
    Failure::Final(if AUTH_CODES.contains(&code) {
        Error::Auth { call, aws }
    } else if code == "UnauthorizedOperation" {
        Error::NotPermitted { call, aws }
    } else if code == "AddressLimitExceeded" {
        Error::AddressLimitExceeded { call, aws }
    } else if code == "InvalidAllocationID.NotFound" {
        Error::AllocationNotFound {
            allocation_id: subjects
                .allocation_id
                .clone()
                .unwrap_or_else(|| "(unnamed)".to_string()),
            call,
            aws,
        }
    } else if code == "InvalidAssociationID.NotFound" {
        Error::AssociationNotFound {
            association_id: subjects
                .association_id
                .clone()
                .unwrap_or_else(|| "(unnamed)".to_string()),
            call,
            aws,
        }
    } else {
        Error::Aws { call, aws }
    })
}

/// The start of an answer, for a message: at most [`QUOTED_BYTES`], debug-escaped.
fn quote(answer: &str) -> String {
    let mut end = answer.len().min(QUOTED_BYTES);
    while !answer.is_char_boundary(end) {
        end -= 1;
    }
    let ellipsis = if end < answer.len() { "…" } else { "" };
    format!("{:?}{ellipsis}", &answer[..end])
}

/// reqwest's message with its causes ("error sending request: …: Connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call {
        Call {
            action: "AssociateAddress",
            subject: "of eipalloc-1 to instance i-1".to_string(),
            region: "eu-west-1".to_string(),
        }
    }

    fn error_body(code: &str) -> String {
        format!(
            "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
        )
    }

    fn subjects() -> Subjects {
        Subjects {
            allocation_id: Some("eipalloc-1".to_string()),
            association_id: Some("eipassoc-1".to_string()),
        }
    }

    #[test]
    fn error_codes_map_to_typed_errors() {
        for (status, code, expect) in [
            (401, "AuthFailure", "Auth"),
            (403, "InvalidClientTokenId", "Auth"),
            (403, "SignatureDoesNotMatch", "Auth"),
            (400, "RequestExpired", "Auth"),
            (403, "UnauthorizedOperation", "NotPermitted"),
            (400, "AddressLimitExceeded", "AddressLimitExceeded"),
            (400, "InvalidAllocationID.NotFound", "AllocationNotFound"),
            (400, "InvalidAssociationID.NotFound", "AssociationNotFound"),
            (400, "InvalidInstanceID.NotFound", "Aws"),
            (500, "InternalError", "Aws"),
            (503, "RequestLimitExceeded", "Throttled"),
            (400, "Throttling", "Throttled"),
            (503, "Unavailable", "Throttled"),
        ] {
            let failure = classify(&call(), &subjects(), status, &error_body(code));
            let kind = match &failure {
                Failure::Throttled(aws) => {
                    assert_eq!((aws.code.as_str(), aws.status), (code, status));
                    "Throttled"
                }
                Failure::Final(Error::Auth { .. }) => "Auth",
                Failure::Final(Error::NotPermitted { .. }) => "NotPermitted",
                Failure::Final(Error::AddressLimitExceeded { .. }) => "AddressLimitExceeded",
                Failure::Final(Error::AllocationNotFound { allocation_id, .. }) => {
                    assert_eq!(allocation_id, "eipalloc-1");
                    "AllocationNotFound"
                }
                Failure::Final(Error::AssociationNotFound { association_id, .. }) => {
                    assert_eq!(association_id, "eipassoc-1");
                    "AssociationNotFound"
                }
                Failure::Final(Error::Aws { aws, .. }) => {
                    assert_eq!(aws.request_id.as_deref(), Some("r-1"));
                    "Aws"
                }
                Failure::Final(other) => panic!("{code}: {other}"),
            };
            assert_eq!(kind, expect, "{code}");
        }
    }

    #[test]
    fn answers_without_an_ec2_error() {
        let Failure::Throttled(aws) = classify(&call(), &subjects(), 503, "Slow Down") else {
            panic!("a bare 503 is throttling");
        };
        assert_eq!(
            (aws.code.as_str(), aws.message.as_str()),
            ("HTTP 503", "\"Slow Down\"")
        );
        let long = "x".repeat(1000);
        let Failure::Final(Error::UnexpectedAnswer { status, detail, .. }) =
            classify(&call(), &subjects(), 502, &long)
        else {
            panic!("a 502 without XML is unexpected");
        };
        assert_eq!(status, 502);
        assert!(detail.len() < 400 && detail.ends_with('…'), "{detail}");
    }

    #[test]
    fn form_bodies_are_encoded_in_order() {
        let params = [
            ("AllocationId.1".to_string(), "eipalloc-1".to_string()),
            ("Filter.1.Name".to_string(), "tag:a b/c".to_string()),
        ];
        assert_eq!(
            form_body("DescribeAddresses", &params),
            "Action=DescribeAddresses&Version=2016-11-15&AllocationId.1=eipalloc-1&Filter.1.Name=tag%3Aa%20b%2Fc"
        );
    }
}

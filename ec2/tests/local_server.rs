//! The client against a small HTTP server in the test that answers from a script: throttling
//! retried and given up on, auth failures not retried, malformed and oversized answers, a
//! request timeout, a refused connection, and what the requests carry (the form parameters,
//! a well-formed SigV4 `Authorization` whose signature covers the headers as received).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_ec2::sigv4::{
    self, AmzDate, PathNormalization, PayloadHashHeader, SessionTokenSigning, SignableRequest,
    SigningParams,
};
use palisade_ec2::{
    AddressFilter, AssociationTarget, Credentials, Ec2Client, Ec2Config, Error, Zeroizing,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "FwoGZXIvYXdzEXAMPLEtoken/+=";
const REGION: &str = "eu-west-1";

const DESCRIBE_OK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
   <requestId>f7de5e98-491a-4c19-a92d-908d6EXAMPLE</requestId>
   <addressesSet>
      <item>
         <publicIp>203.0.113.41</publicIp>
         <allocationId>eipalloc-08229861</allocationId>
         <domain>vpc</domain>
      </item>
   </addressesSet>
</DescribeAddressesResponse>"#;

fn ec2_error(code: &str, message: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>req-{code}</RequestID></Response>"#
    )
}

/// One scripted answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    body: String,
    /// Waited before answering.
    delay: Duration,
}

fn answer(status: u16, body: impl Into<String>) -> Canned {
    Canned {
        status,
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// A request as the server received it.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    /// Names lowercased, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers each connection with the next scripted answer (the last one repeats), records
/// what it received, and closes.
struct Server {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    async fn start(script: Vec<Canned>) -> Server {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let canned = script[index.min(script.len() - 1)].clone();
                index += 1;
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    log.lock().unwrap().push(request);
                    tokio::time::sleep(canned.delay).await;
                    let head = format!(
                        "HTTP/1.1 {} Scripted\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        canned.status,
                        canned.body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(canned.body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Server { port, received }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8(data[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buffer[..n]);
    }
    Some(Received {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn credentials(token: Option<&str>) -> Credentials {
    Credentials::new(
        ACCESS_KEY_ID,
        Zeroizing::new(SECRET.to_string()),
        token.map(|t| Zeroizing::new(t.to_string())),
    )
    .unwrap()
}

/// Short delays and timeouts, `max_attempts` attempts.
fn config(server: &Server, max_attempts: u32) -> Ec2Config {
    Ec2Config {
        timeout: Duration::from_secs(5),
        max_attempts,
        retry_base_delay: Duration::from_millis(2),
        retry_max_delay: Duration::from_millis(10),
        ..Ec2Config::new(REGION).with_endpoint(server.endpoint().parse().unwrap())
    }
}

fn client(server: &Server, max_attempts: u32) -> Ec2Client {
    Ec2Client::new(config(server, max_attempts), credentials(None)).unwrap()
}

#[tokio::test]
async fn throttling_twice_is_retried_and_the_call_succeeds() {
    let throttled = ec2_error("RequestLimitExceeded", "Request limit exceeded.");
    let server = Server::start(vec![
        answer(503, throttled.clone()),
        answer(503, throttled),
        answer(200, DESCRIBE_OK),
    ])
    .await;
    let addresses = client(&server, 5)
        .describe_addresses(&AddressFilter::All)
        .await
        .unwrap();
    assert_eq!(addresses.len(), 1);
    assert_eq!(addresses[0].allocation_id, "eipalloc-08229861");
    assert_eq!(
        server.received().len(),
        3,
        "two throttled attempts, then the one that worked"
    );
    // Every attempt is signed anew (its own X-Amz-Date and signature), all the same call.
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.body == "Action=DescribeAddresses&Version=2016-11-15")
    );
}

#[tokio::test]
async fn throttling_and_bare_503s_without_end_give_up_after_max_attempts() {
    let server = Server::start(vec![
        answer(503, "Service Unavailable"),
        answer(400, ec2_error("Throttling", "Rate exceeded")),
    ])
    .await;
    let started = Instant::now();
    let error = client(&server, 4)
        .release_address("eipalloc-0123456789abcdef0")
        .await
        .unwrap_err();
    assert_eq!(server.received().len(), 4);
    let Error::Throttled {
        attempts, ref aws, ..
    } = error
    else {
        panic!("not Throttled: {error:?}");
    };
    assert_eq!((attempts, aws.code.as_str()), (4, "Throttling"));
    let message = error.to_string();
    for part in [
        "EC2 ReleaseAddress of eipalloc-0123456789abcdef0 in eu-west-1",
        "throttled by AWS on all 4 attempts",
        "Throttling",
        "Rate exceeded",
        "request id req-Throttling",
        "try again",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    assert!(!error.outcome_unknown(), "a throttled call had no effect");
    // Three delays of at most 2, 4 and 8 ms.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn auth_failure_is_not_retried_and_says_what_to_check() {
    let server = Server::start(vec![answer(
        401,
        ec2_error(
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        ),
    )])
    .await;
    let error = client(&server, 5)
        .associate_address(
            "eipalloc-1",
            &AssociationTarget::Instance("i-0598c7d356eba48d7".to_string()),
        )
        .await
        .unwrap_err();
    assert_eq!(server.received().len(), 1, "no retry");
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    let message = error.to_string();
    for part in [
        "EC2 AssociateAddress of eipalloc-1 to instance i-0598c7d356eba48d7 in eu-west-1",
        "AWS refused the credentials",
        "AuthFailure",
        "not able to validate",
        "HTTP 401",
        "request id req-AuthFailure",
        "access key id",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    assert!(!message.contains(SECRET));

    let server = Server::start(vec![answer(
        400,
        ec2_error("RequestExpired", "Request has expired."),
    )])
    .await;
    let error = client(&server, 5)
        .describe_addresses(&AddressFilter::All)
        .await
        .unwrap_err();
    assert_eq!(server.received().len(), 1);
    assert!(error.to_string().contains("clock"), "{error}");
}

#[tokio::test]
async fn malformed_and_unexpected_answers_are_clear_errors() {
    let server = Server::start(vec![answer(
        200,
        "<DescribeAddressesResponse><addressesSet><item>",
    )])
    .await;
    let error = client(&server, 5)
        .describe_addresses(&AddressFilter::All)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::UnexpectedAnswer { status: 200, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("EC2 DescribeAddresses (all addresses) in eu-west-1")
            && message.contains("unexpected answer (HTTP 200)")
            && message.contains("not XML"),
        "{message}"
    );
    assert!(
        error.outcome_unknown(),
        "a 2xx took effect even if unreadable"
    );

    let server = Server::start(vec![answer(200, "<AllocateAddressResponse/>")]).await;
    let error = client(&server, 5)
        .allocate_address(&BTreeMap::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no <allocationId>"), "{error}");
    assert!(
        error.outcome_unknown(),
        "an address may have been allocated"
    );

    let server = Server::start(vec![answer(
        502,
        "<html><body>502 Bad Gateway</body></html>",
    )])
    .await;
    let error = client(&server, 5)
        .disassociate_address("eipassoc-1")
        .await
        .unwrap_err();
    assert_eq!(server.received().len(), 1, "a 502 is not retried");
    assert!(
        matches!(error, Error::UnexpectedAnswer { status: 502, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("Bad Gateway"), "{error}");

    let server = Server::start(vec![answer(200, "x".repeat(5 * 1024 * 1024))]).await;
    let error = client(&server, 5)
        .describe_addresses(&AddressFilter::All)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");
}

#[tokio::test]
async fn a_silent_server_times_out_and_a_closed_port_refuses() {
    let server = Server::start(vec![Canned {
        delay: Duration::from_secs(30),
        ..answer(200, DESCRIBE_OK)
    }])
    .await;
    let config = Ec2Config {
        timeout: Duration::from_millis(300),
        ..config(&server, 5)
    };
    let client = Ec2Client::new(config, credentials(None)).unwrap();
    let started = Instant::now();
    let error = client.allocate_address(&BTreeMap::new()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, Error::Timeout { after, .. } if after == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(server.received().len(), 1, "a timeout is not retried");
    assert!(error.outcome_unknown());
    assert!(
        error
            .to_string()
            .contains("may or may not have taken effect"),
        "{error}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config =
        Ec2Config::new(REGION).with_endpoint(format!("http://127.0.0.1:{port}/").parse().unwrap());
    let error = Ec2Client::new(config, credentials(None))
        .unwrap()
        .describe_addresses(&AddressFilter::All)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Transport { sent: false, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("nothing was sent"), "{error}");
}

/// The fields of `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
fn authorization_fields(value: &str) -> BTreeMap<String, String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .unwrap_or_else(|| panic!("not SigV4: {value}"));
    rest.split(", ")
        .map(|field| {
            let (name, value) = field.split_once('=').expect("name=value");
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[tokio::test]
async fn requests_carry_a_well_formed_signature_over_what_was_sent() {
    for token in [None, Some(TOKEN)] {
        let server = Server::start(vec![answer(200, DESCRIBE_OK)]).await;
        let client = Ec2Client::new(config(&server, 5), credentials(token)).unwrap();
        client
            .describe_addresses(&AddressFilter::All)
            .await
            .unwrap();
        let received = server.received();
        let request = &received[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/")
        );
        assert_eq!(
            request.header("host"),
            Some(format!("127.0.0.1:{}", server.port).as_str())
        );
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded; charset=utf-8")
        );
        let date = request.header("x-amz-date").expect("X-Amz-Date");
        let time: AmzDate = date.parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let close_to_now = [now.saturating_sub(300), now, now + 300]
            .map(|t| AmzDate::from_unix_seconds(t).as_str().to_string());
        assert!(
            close_to_now[0].as_str() <= date && date <= close_to_now[2].as_str(),
            "{date} is not within 5 minutes of {}",
            close_to_now[1]
        );

        let authorization = request.header("authorization").expect("Authorization");
        let fields = authorization_fields(authorization);
        assert_eq!(
            fields["Credential"],
            format!("{ACCESS_KEY_ID}/{}/{REGION}/ec2/aws4_request", time.date())
        );
        let signed_headers: Vec<&str> = fields["SignedHeaders"].split(';').collect();
        let mut expected_signed = vec!["content-type", "host", "x-amz-date"];
        if token.is_some() {
            expected_signed.push("x-amz-security-token");
        }
        assert_eq!(signed_headers, expected_signed);
        assert_eq!(request.header("x-amz-security-token"), token);
        let signature = &fields["Signature"];
        assert!(
            signature.len() == 64
                && signature
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{signature}"
        );

        // The signature covers the signed headers with the values the server received, and
        // the body as received: recomputed here from those, it is the same.
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| {
                signed_headers.contains(&name.as_str())
                    && !matches!(name.as_str(), "x-amz-date" | "x-amz-security-token")
            })
            .cloned()
            .collect();
        let recomputed = sigv4::sign(
            &SignableRequest {
                method: &request.method,
                path: &request.path,
                query: &[],
                headers: &headers,
                body: request.body.as_bytes(),
            },
            &SigningParams {
                credentials: &credentials(token),
                region: REGION,
                service: "ec2",
                time: &time,
                path_normalization: PathNormalization::Normalize,
                payload_hash_header: PayloadHashHeader::Omit,
                session_token_signing: SessionTokenSigning::Signed,
            },
        );
        assert_eq!(recomputed.authorization(), authorization);
        assert!(
            !format!("{client:?}").contains(SECRET),
            "the client's Debug has no secret"
        );
    }
}

#[tokio::test]
async fn each_call_sends_its_documented_parameters() {
    let server = Server::start(vec![
        answer(200, DESCRIBE_OK),
        answer(200, DESCRIBE_OK),
        answer(200, DESCRIBE_OK),
        answer(
            200,
            "<AllocateAddressResponse><requestId>r</requestId><publicIp>198.51.100.1</publicIp><domain>vpc</domain><allocationId>eipalloc-5723d13e</allocationId></AllocateAddressResponse>",
        ),
        answer(
            200,
            "<AssociateAddressResponse><requestId>r</requestId><return>true</return><associationId>eipassoc-fc5ca095</associationId></AssociateAddressResponse>",
        ),
        answer(
            200,
            "<AssociateAddressResponse><requestId>r</requestId><return>true</return><associationId>eipassoc-2</associationId></AssociateAddressResponse>",
        ),
        answer(
            200,
            "<DisassociateAddressResponse><requestId>r</requestId><return>true</return></DisassociateAddressResponse>",
        ),
        answer(
            200,
            "<ReleaseAddressResponse><requestId>r</requestId><return>true</return></ReleaseAddressResponse>",
        ),
    ])
    .await;
    let client = client(&server, 1);
    client
        .describe_addresses(&AddressFilter::All)
        .await
        .unwrap();
    client
        .describe_addresses(&AddressFilter::AllocationIds(vec![
            "eipalloc-1".to_string(),
            "eipalloc-2".to_string(),
        ]))
        .await
        .unwrap();
    client
        .describe_addresses(&AddressFilter::Tag {
            key: "palisade:bastion".to_string(),
            value: "bastion 1".to_string(),
        })
        .await
        .unwrap();
    let tags: BTreeMap<String, String> = [
        ("palisade:bastion".to_string(), "bastion-1".to_string()),
        ("Name".to_string(), "sentry & co".to_string()),
    ]
    .into_iter()
    .collect();
    let allocated = client.allocate_address(&tags).await.unwrap();
    assert_eq!(allocated.allocation_id, "eipalloc-5723d13e");
    assert_eq!(
        client
            .associate_address(
                "eipalloc-5723d13e",
                &AssociationTarget::Instance("i-1".to_string())
            )
            .await
            .unwrap(),
        "eipassoc-fc5ca095"
    );
    assert_eq!(
        client
            .associate_address(
                "eipalloc-5723d13e",
                &AssociationTarget::NetworkInterface("eni-1".to_string())
            )
            .await
            .unwrap(),
        "eipassoc-2"
    );
    client.disassociate_address("eipassoc-2").await.unwrap();
    client.release_address("eipalloc-5723d13e").await.unwrap();

    let bodies: Vec<String> = server.received().into_iter().map(|r| r.body).collect();
    let v = "Version=2016-11-15";
    assert_eq!(
        bodies,
        [
            format!("Action=DescribeAddresses&{v}"),
            format!(
                "Action=DescribeAddresses&{v}&AllocationId.1=eipalloc-1&AllocationId.2=eipalloc-2"
            ),
            format!(
                "Action=DescribeAddresses&{v}&Filter.1.Name=tag%3Apalisade%3Abastion&Filter.1.Value.1=bastion%201"
            ),
            format!(
                "Action=AllocateAddress&{v}&Domain=vpc&TagSpecification.1.ResourceType=elastic-ip&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=sentry%20%26%20co&TagSpecification.1.Tag.2.Key=palisade%3Abastion&TagSpecification.1.Tag.2.Value=bastion-1"
            ),
            format!(
                "Action=AssociateAddress&{v}&AllocationId=eipalloc-5723d13e&InstanceId=i-1&AllowReassociation=true"
            ),
            format!(
                "Action=AssociateAddress&{v}&AllocationId=eipalloc-5723d13e&NetworkInterfaceId=eni-1&AllowReassociation=true"
            ),
            format!("Action=DisassociateAddress&{v}&AssociationId=eipassoc-2"),
            format!("Action=ReleaseAddress&{v}&AllocationId=eipalloc-5723d13e"),
        ]
    );
}

#[tokio::test]
async fn empty_ids_are_refused_before_anything_is_sent() {
    let server = Server::start(vec![answer(200, DESCRIBE_OK)]).await;
    let client = client(&server, 1);
    for error in [
        client.release_address("").await.unwrap_err(),
        client.disassociate_address("").await.unwrap_err(),
        client
            .associate_address(
                "eipalloc-1",
                &AssociationTarget::Instance(" i-1".to_string()),
            )
            .await
            .unwrap_err(),
        client
            .describe_addresses(&AddressFilter::AllocationIds(vec![]))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(error, Error::InvalidArgument { .. }), "{error:?}");
        assert!(error.to_string().ends_with("nothing was sent"), "{error}");
    }
    assert!(server.received().is_empty());
}

//! Where the client sends requests and how patiently: the endpoint and region, the request
//! timeout, and the throttling retry policy (exponential backoff with full jitter).

use std::time::Duration;

use reqwest::Url;

use crate::error::Error;

/// The client's settings; [`Ec2Config::new`] fills in the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ec2Config {
    /// Where requests go. Default (`None`): `https://ec2.{region}.amazonaws.com/`
    /// (`.amazonaws.com.cn` for the `cn-` regions). Must be `https://`, or `http://` on a
    /// loopback host (moto in tests); no path, query or user info.
    pub endpoint: Option<Url>,
    /// The region, e.g. `eu-west-1`: the endpoint's and the signature's.
    pub region: String,
    /// The bound on each attempt: connecting, sending, and reading the whole answer.
    /// Default 10 s.
    pub timeout: Duration,
    /// Attempts per call while AWS throttles (the first included); at least 1. Default 5.
    pub max_attempts: u32,
    /// The first retry's delay bound; each later one doubles it. Default 200 ms.
    pub retry_base_delay: Duration,
    /// The largest delay bound. Default 5 s.
    pub retry_max_delay: Duration,
}

/// Default of [`Ec2Config::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Ec2Config::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default of [`Ec2Config::retry_base_delay`].
pub const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_millis(200);
/// Default of [`Ec2Config::retry_max_delay`].
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(5);
/// The most attempts allowed (with the default delays, about a minute of retries).
const MAX_ATTEMPTS_LIMIT: u32 = 20;

impl Ec2Config {
    /// AWS's endpoint for `region`, with the default timeout and retry policy.
    pub fn new(region: impl Into<String>) -> Ec2Config {
        Ec2Config {
            endpoint: None,
            region: region.into(),
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_base_delay: DEFAULT_RETRY_BASE_DELAY,
            retry_max_delay: DEFAULT_RETRY_MAX_DELAY,
        }
    }

    /// The same with requests going to `endpoint` (moto, a VPC endpoint).
    pub fn with_endpoint(mut self, endpoint: Url) -> Ec2Config {
        self.endpoint = Some(endpoint);
        self
    }

    /// Checks every setting; the endpoint requests go to.
    pub(crate) fn validate(&self) -> Result<Url, Error> {
        let bad = |reason: String| Err(Error::Config(reason));
        let region = &self.region;
        if region.is_empty()
            || region.len() > 32
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || region.starts_with('-')
            || region.ends_with('-')
        {
            return bad(format!(
                "region {region:?} is not an AWS region name (like eu-west-1)"
            ));
        }
        if self.timeout.is_zero() {
            return bad("the request timeout is zero".to_string());
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return bad(format!(
                "max attempts is {}, not 1 to {MAX_ATTEMPTS_LIMIT}",
                self.max_attempts
            ));
        }
        if self.retry_base_delay > self.retry_max_delay {
            return bad(format!(
                "the retry base delay ({:?}) exceeds the maximum delay ({:?})",
                self.retry_base_delay, self.retry_max_delay
            ));
        }
        let endpoint = match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => {
                let domain = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                let url = format!("https://ec2.{region}.{domain}/");
                Url::parse(&url)
                    .map_err(|e| Error::Config(format!("the default endpoint {url}: {e}")))?
            }
        };
        check_endpoint(&endpoint)?;
        Ok(endpoint)
    }

    /// The delay before retry number `retry` (1 for the first retry): "full jitter", uniform
    /// in [0, min(max delay, base delay × 2^(retry − 1))), with `jitter` uniform in [0, 1).
    pub fn retry_delay(&self, retry: u32, jitter: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let bound = self
            .retry_base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max_delay);
        bound.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// `https://host[:port]/`, or `http://` on loopback: the signature covers the request, but a
/// session token travels in a header and the answers are trusted, so only TLS leaves the host.
fn check_endpoint(endpoint: &Url) -> Result<(), Error> {
    let bad = |reason: &str| Err(Error::Config(format!("endpoint {endpoint}: {reason}")));
    let Some(host) = endpoint.host_str() else {
        return bad("has no host");
    };
    // `host_str` is a domain, a dotted IPv4 address or a bracketed IPv6 one.
    let loopback = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host == "localhost",
        },
    };
    match endpoint.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return bad("plain http is only for loopback hosts (moto); use https"),
        _ => return bad("is not an http(s) URL"),
    }
    if !endpoint.username().is_empty() || endpoint.password().is_some() {
        return bad("has user info");
    }
    if endpoint.path() != "/" || endpoint.query().is_some() || endpoint.fragment().is_some() {
        return bad("has a path, query or fragment (EC2's endpoint is the host's root)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_of(config: &Ec2Config) -> Result<String, String> {
        config
            .validate()
            .map(|url| url.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn default_endpoints_follow_the_region() {
        assert_eq!(
            endpoint_of(&Ec2Config::new("eu-west-1")).unwrap(),
            "https://ec2.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            endpoint_of(&Ec2Config::new("cn-north-1")).unwrap(),
            "https://ec2.cn-north-1.amazonaws.com.cn/"
        );
        let moto =
            Ec2Config::new("us-east-1").with_endpoint("http://127.0.0.1:5000".parse().unwrap());
        assert_eq!(endpoint_of(&moto).unwrap(), "http://127.0.0.1:5000/");
        for loopback in [
            "http://localhost:1/",
            "http://[::1]:1/",
            "http://127.1.2.3/",
        ] {
            let config = Ec2Config::new("us-east-1").with_endpoint(loopback.parse().unwrap());
            assert!(endpoint_of(&config).is_ok(), "{loopback}");
        }
        let vpc_endpoint = Ec2Config::new("us-east-1").with_endpoint(
            "https://vpce-1.ec2.us-east-1.vpce.amazonaws.com"
                .parse()
                .unwrap(),
        );
        assert!(endpoint_of(&vpc_endpoint).is_ok());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_reason() {
        let with = |change: &dyn Fn(&mut Ec2Config)| {
            let mut config = Ec2Config::new("eu-west-1");
            change(&mut config);
            endpoint_of(&config).unwrap_err()
        };
        for (error, says) in [
            (with(&|c| c.region = String::new()), "not an AWS region"),
            (
                with(&|c| c.region = "EU-WEST-1".into()),
                "not an AWS region",
            ),
            (
                with(&|c| c.region = "eu-west-1.evil.example/".into()),
                "not an AWS region",
            ),
            (with(&|c| c.timeout = Duration::ZERO), "timeout is zero"),
            (with(&|c| c.max_attempts = 0), "not 1 to 20"),
            (with(&|c| c.max_attempts = 21), "not 1 to 20"),
            (
                with(&|c| c.retry_base_delay = Duration::from_secs(10)),
                "exceeds the maximum delay",
            ),
            (
                with(&|c| c.endpoint = Some("http://ec2.example.com/".parse().unwrap())),
                "only for loopback",
            ),
            (
                with(&|c| c.endpoint = Some("http://10.0.0.1/".parse().unwrap())),
                "only for loopback",
            ),
            (
                with(&|c| c.endpoint = Some("ftp://127.0.0.1/".parse().unwrap())),
                "not an http(s) URL",
            ),
            (
                with(&|c| c.endpoint = Some("https://127.0.0.1/ec2".parse().unwrap())),
                "has a path",
            ),
            (
                with(&|c| c.endpoint = Some("https://127.0.0.1/?a=b".parse().unwrap())),
                "has a path",
            ),
            (
                with(&|c| c.endpoint = Some("https://u:p@127.0.0.1/".parse().unwrap())),
                "user info",
            ),
        ] {
            assert!(error.contains(says), "{says:?} missing from {error}");
        }
    }

    #[test]
    fn retry_delays_double_up_to_the_cap_with_full_jitter() {
        let config = Ec2Config::new("eu-west-1");
        let bounds: Vec<Duration> = (1..=7)
            .map(|retry| config.retry_delay(retry, 1.0))
            .collect();
        assert_eq!(
            bounds,
            [200, 400, 800, 1600, 3200, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!(config.retry_delay(3, 0.0), Duration::ZERO);
        assert_eq!(config.retry_delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(config.retry_delay(u32::MAX, 1.0), Duration::from_secs(5));
        assert_eq!(
            config.retry_delay(1, 7.0),
            Duration::from_millis(200),
            "jitter is clamped"
        );
    }
}

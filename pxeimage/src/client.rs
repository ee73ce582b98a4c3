//! The real [`Transport`]: blocking HTTP/1.1 with `ureq`, a bearer token on every call and a
//! timeout on every phase.

use std::time::Duration;

use crate::agent::{Method, Request, Response, Transport, TransportError, TransportErrorKind};
use crate::cmdline::{BaseUrl, Token};

/// Largest API reply body read. Agent replies are small JSON documents; anything larger is a
/// misbehaving server, not a reason to exhaust the initramfs' memory.
pub const MAX_REPLY_BYTES: u64 = 1 << 20;

/// Timeouts of one call.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// The whole call, connect to last body byte.
    pub total: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 30 s in all.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            total: Duration::from_secs(30),
        }
    }
}

/// `ureq` over the appliance's base URL.
#[derive(Debug)]
pub struct HttpTransport {
    agent: ureq::Agent,
    base: BaseUrl,
    auth: String,
}

impl HttpTransport {
    /// A client for `base` that sends `token` on every call.
    pub fn new(base: BaseUrl, token: &Token, timeouts: Timeouts) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(timeouts.connect))
            .timeout_global(Some(timeouts.total))
            // statuses are the agent's business (token_revoked etc.), not errors
            .http_status_as_error(false)
            // the appliance is addressed directly; never honour *_PROXY variables
            .proxy(None)
            .max_redirects(0)
            .user_agent(concat!("rackhand-pxeimage/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpTransport {
            agent,
            base,
            auth: format!("Bearer {}", token.expose()),
        }
    }
}

fn classify(e: ureq::Error) -> TransportError {
    let kind = match &e {
        ureq::Error::Timeout(_) => TransportErrorKind::Timeout,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TransportErrorKind::Connect,
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                TransportErrorKind::Timeout
            }
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable
            | std::io::ErrorKind::NetworkDown
            | std::io::ErrorKind::AddrNotAvailable => TransportErrorKind::Connect,
            _ => TransportErrorKind::Other,
        },
        _ => TransportErrorKind::Other,
    };
    TransportError {
        kind,
        detail: e.to_string(),
    }
}

impl Transport for HttpTransport {
    fn send(&mut self, req: &Request) -> Result<Response, TransportError> {
        let url = self.base.join(req.path);
        let result = match req.method {
            Method::Get => self
                .agent
                .get(&url)
                .header("Authorization", &self.auth)
                .header("Accept", "application/json")
                .call(),
            Method::Post => self
                .agent
                .post(&url)
                .header("Authorization", &self.auth)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .send(req.body.as_deref().unwrap_or_default()),
        };
        let mut resp = result.map_err(classify)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_vec()
            .map_err(classify)?;
        Ok(Response { status, body })
    }
}

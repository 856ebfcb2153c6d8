//! Authentication of API requests: AWS Signature Version 4 ([`sigv4`]) against the configured
//! credentials. The result, a [`Caller`], scopes everything a request can see: resources live in
//! the caller's account and in the region of the request's credential scope, as in AWS.

pub mod sigv4;

use std::collections::HashMap;

use openivs_model::IvsError;

use crate::settings::Credential;

/// Who sent a request, and for which region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub region: String,
}

/// The credentials the server accepts, by access key id.
pub struct Authenticator {
    credentials: HashMap<String, Credential>,
}

impl Authenticator {
    pub fn new(credentials: &[Credential]) -> Self {
        Authenticator { credentials: credentials.iter().map(|c| (c.access_key_id.clone(), c.clone())).collect() }
    }

    /// Checks what the headers alone can prove (see [`sigv4::precheck`]), before the body is read.
    pub fn precheck(&self, request: &sigv4::RequestParts<'_>, now: time::OffsetDateTime) -> Result<(), IvsError> {
        sigv4::precheck(request, now, |access_key_id| {
            self.credentials.get(access_key_id).map(|c| c.secret_access_key.as_str())
        })
    }

    /// Verifies a request's signature; see [`sigv4::verify`].
    pub fn authenticate(
        &self,
        request: &sigv4::RequestParts<'_>,
        now: time::OffsetDateTime,
    ) -> Result<Caller, IvsError> {
        let verified = sigv4::verify(request, now, |access_key_id| {
            self.credentials.get(access_key_id).map(|c| c.secret_access_key.as_str())
        })?;
        let credential = &self.credentials[&verified.access_key_id];
        Ok(Caller { account: credential.account_id.clone(), region: verified.region })
    }

    /// Verifies a signed request that has no body (the `GET`s openivs serves beside the API:
    /// the event stream, the console's live figures) from its head alone.
    pub fn authenticate_head(&self, head: &axum::http::request::Parts) -> Result<Caller, IvsError> {
        let signed = sigv4::RequestParts {
            method: head.method.as_str(),
            raw_path: head.uri.path(),
            raw_query: head.uri.query(),
            headers: signed_headers(head),
            body: &[],
        };
        self.authenticate(&signed, time::OffsetDateTime::now_utc())
    }

    /// Whether the public local-development pair (`test`/`test`) is what the server accepts: the
    /// console then offers it on its sign-in form, as the start-up banner prints it.
    pub fn accepts_dev_credentials(&self) -> bool {
        self.credentials
            .get(crate::settings::DEV_ACCESS_KEY_ID)
            .is_some_and(|credential| credential.secret_access_key == crate::settings::DEV_SECRET_ACCESS_KEY)
    }
}

/// The headers a signature may cover, as the request carries them. Over HTTP/2 the host is the
/// `:authority` pseudo-header and there is no `host` header (curl, and browsers running the AWS
/// SDK for JavaScript, send none), yet signers sign it as `host`: the authority stands in.
pub fn signed_headers(head: &axum::http::request::Parts) -> Vec<(&str, &[u8])> {
    let mut headers: Vec<_> = head.headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())).collect();
    if !head.headers.contains_key(axum::http::header::HOST)
        && let Some(authority) = head.uri.authority()
    {
        headers.push(("host", authority.as_str().as_bytes()));
    }
    headers
}

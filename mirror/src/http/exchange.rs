//! One client request's exchange with its registry: sent with the registry's login, its
//! answer made the client's. The pull and the manifest cache both go upstream through it.

use super::answer::{Answers, SentUpstream};
use crate::auth::logins::Logins;
use crate::serve::body::{MirrorBody, UpstreamBody};
use crate::upstream::registry::Registry;
use crate::upstream::request::RequestMarks;
use http::request::Parts;
use http::{Method, Response, Uri};
use std::sync::Arc;
use std::time::Instant;
use tower_signed_redirect::BoxError;

/// A client's request on its way to `registry` and back.
pub struct Exchange<'a> {
    /// The registry the request goes to.
    pub registry: &'a Arc<Registry>,
    /// The client's request.
    pub parts: &'a Parts,
    /// How requests go upstream with each registry's login.
    pub logins: &'a Arc<Logins>,
    /// How answers are made the client's.
    pub answers: &'a Answers,
    /// When the client's request came in.
    pub started: Instant,
}

impl Exchange<'_> {
    /// Sends `method` for the client's request to `uri`, with the registry's login and
    /// `marks`.
    pub async fn send_upstream(
        &self,
        uri: &Uri,
        method: &Method,
        marks: RequestMarks,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        self.logins
            .send_as_login(self.registry, self.parts, uri, method, marks)
            .await
    }

    /// The upstream's answer (or failure) to what was `sent`, made the client's.
    pub fn answer_client(
        &self,
        sent: SentUpstream,
        answer: Result<Response<UpstreamBody>, BoxError>,
    ) -> Response<MirrorBody> {
        let login = self.logins.login(self.registry);
        self.answers
            .client_answer(self.registry, login, self.parts, sent, answer)
    }
}

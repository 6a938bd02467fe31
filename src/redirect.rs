//! Which redirects are followed, and where to: the redirect statuses, the `Location`, the
//! storage matcher, the `https` → `http` refusal, the hop limit and loop detection.

use crate::error::{Error, ErrorKind};
use crate::location;
use crate::matcher::StorageMatcher;
use crate::signed_url::Redacted;
use http::header::LOCATION;
use http::{Response, StatusCode, Uri};
use std::fmt;
use std::sync::Arc;

/// The default number of redirects followed in one chain (registry → storage counts one).
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// The settings that decide which redirects are followed, each named as its builder method.
#[derive(Clone, Debug)]
pub(crate) struct RedirectRules {
    pub(crate) matcher: Arc<dyn StorageMatcher + Send + Sync>,
    pub(crate) redirect_statuses: RedirectStatuses,
    pub(crate) max_redirects: usize,
    pub(crate) allow_https_downgrade: bool,
}

impl RedirectRules {
    pub(crate) fn new(matcher: Arc<dyn StorageMatcher + Send + Sync>) -> Self {
        RedirectRules {
            matcher,
            redirect_statuses: RedirectStatuses::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            allow_https_downgrade: false,
        }
    }
}

/// A set of 3xx statuses: bit `n` is status `300 + n`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct RedirectStatuses(u128);

impl RedirectStatuses {
    #[inline]
    pub(crate) fn contains(self, status: StatusCode) -> bool {
        let s = status.as_u16();
        (300..400).contains(&s) && self.0 & (1 << (s - 300)) != 0
    }
}

impl Default for RedirectStatuses {
    /// 301, 302, 303, 307 and 308.
    fn default() -> Self {
        [301, 302, 303, 307, 308]
            .into_iter()
            .map(|s| StatusCode::from_u16(s).expect("a valid status code"))
            .collect()
    }
}

impl FromIterator<StatusCode> for RedirectStatuses {
    /// Statuses outside 300–399 are left out.
    fn from_iter<I: IntoIterator<Item = StatusCode>>(statuses: I) -> Self {
        RedirectStatuses(
            statuses
                .into_iter()
                .map(|s| s.as_u16())
                .filter(|s| (300..400).contains(s))
                .fold(0, |bits, s| bits | 1 << (s - 300)),
        )
    }
}

impl fmt::Debug for RedirectStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries((300..400u16).filter(|s| self.0 & (1 << (s - 300)) != 0))
            .finish()
    }
}

/// The redirects one request has followed.
#[derive(Debug)]
pub(crate) struct Hops {
    /// The status of the registry's redirect, the first one followed.
    redirect_status: StatusCode,
    /// Every URI requested: the caller's first, the current storage hop's last.
    visited: Vec<Uri>,
    /// The hops of the chain that led to a cached URL, when the chain started from one.
    cached_hops: usize,
}

impl Hops {
    /// The registry's redirect from `from` to `target` is followed.
    pub(crate) fn start(from: Uri, redirect_status: StatusCode, target: Uri) -> Self {
        Hops {
            redirect_status,
            visited: vec![from, target],
            cached_hops: 0,
        }
    }

    /// This chain starts at a cached URL that `hops` redirects led to.
    pub(crate) fn set_recorded(&mut self, hops: usize) {
        self.cached_hops = hops.saturating_sub(1);
    }

    /// How many redirects led here, counting those that led to a cached URL.
    pub(crate) fn recorded(&self) -> usize {
        self.count() + self.cached_hops
    }

    /// One more redirect, to `target`, is followed.
    pub(crate) fn push(&mut self, target: Uri) {
        self.visited.push(target);
    }

    /// The earliest signature expiry of the storage hops followed: a chain is only as good
    /// as its first URL (the registry's), and a later hop must not extend it.
    pub(crate) fn earliest_expiry(&self) -> Option<std::time::SystemTime> {
        self.visited[1..]
            .iter()
            .filter_map(|uri| crate::SignedUrl::new(uri).expires_at())
            .min()
    }

    /// How many redirects were followed.
    pub(crate) fn count(&self) -> usize {
        self.visited.len() - 1
    }

    /// The URI of the current storage hop.
    pub(crate) fn current(&self) -> &Uri {
        &self.visited[self.visited.len() - 1]
    }

    pub(crate) fn redirect_status(&self) -> StatusCode {
        self.redirect_status
    }
}

impl RedirectRules {
    /// Where a response to `from` should be followed: `Ok(None)` to pass it on as it is.
    ///
    /// `hops` is `None` for the registry's answer to the caller's request, and the chain so far
    /// for a storage hop's answer. A redirect the layer will not follow from the registry passes
    /// through; on a storage hop, what cannot be followed safely is an error.
    pub(crate) fn next_hop<R>(
        &self,
        res: &Response<R>,
        from: &Uri,
        hops: Option<&Hops>,
    ) -> Result<Option<Uri>, Error> {
        let status = res.status();
        if !self.redirect_statuses.contains(status) {
            return Ok(None);
        }
        let (hop, status) = (hops.map_or(0, Hops::count), status.as_u16());
        if self.max_redirects == 0 {
            tracing::debug!(
                status,
                "passing redirect through: following is off (max_redirects 0)"
            );
            return Ok(None);
        }
        let mut locations = res.headers().get_all(LOCATION).iter();
        let target = match (locations.next(), locations.next()) {
            (Some(location), None) => location::resolve(from, location),
            _ => None,
        };
        let Some(target) = target.filter(|t| matches!(t.scheme_str(), Some("http" | "https")))
        else {
            if hops.is_none() {
                tracing::debug!(
                    status,
                    "passing redirect through: no usable http(s) Location"
                );
                return Ok(None);
            }
            return Err(Error::new(ErrorKind::InvalidLocation, from));
        };
        if !self.matcher.matches(&target) {
            tracing::debug!(status, hop, location = %Redacted(&target), "passing redirect through: not a storage host");
            return Ok(None);
        }
        if from.scheme_str() == Some("https")
            && target.scheme_str() == Some("http")
            && !self.allow_https_downgrade
        {
            return Err(Error::new(ErrorKind::Downgrade, &target));
        }
        if hop >= self.max_redirects {
            return Err(Error::new(ErrorKind::TooManyRedirects, &target)
                .with_detail(format!("limit {}", self.max_redirects)));
        }
        let seen = match hops {
            Some(hops) => hops.visited.contains(&target),
            None => target == *from,
        };
        if seen {
            return Err(Error::new(ErrorKind::RedirectLoop, &target));
        }
        Ok(Some(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_a_set_of_3xx() {
        let set: RedirectStatuses = [307, 200, 399, 300]
            .into_iter()
            .map(|s| StatusCode::from_u16(s).unwrap())
            .collect();
        assert!(set.contains(StatusCode::TEMPORARY_REDIRECT));
        assert!(!set.contains(StatusCode::OK));
        assert!(!set.contains(StatusCode::FOUND));
        assert_eq!(format!("{set:?}"), "[300, 307, 399]");
        assert_eq!(
            format!("{:?}", RedirectStatuses::default()),
            "[301, 302, 303, 307, 308]"
        );
    }
}

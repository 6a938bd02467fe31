//! Which request headers reach storage: the allowlist, what can never be on it, how the
//! allowlisted values are captured when a request is sent, and how they are written onto a
//! storage request.
//!
//! A storage request is built from scratch, so this file is the only way a header of the
//! caller's request can reach storage.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// How many headers the allowlist can hold: each request's headers are scanned against it
/// when the request is sent, so it stays short.
pub const MAX_FORWARDED_HEADERS: usize = 8;

/// How many allowlisted headers have their first value captured inline (without
/// allocating): as many as the default allowlist has. Every request carries these slots
/// (they are part of the response future), so there are no more than needed.
const INLINE: usize = 4;

/// The allowlist a new layer starts with.
const DEFAULT_FORWARDED: [HeaderName; INLINE] = [
    header::USER_AGENT,
    header::RANGE,
    header::IF_RANGE,
    header::ACCEPT,
];

/// Header names that can never be forwarded, with the reason a refusal names.
pub(crate) const NEVER_FORWARDED: &[(&str, &str)] = &[
    ("authorization", "a credential"),
    ("proxy-authorization", "a credential"),
    ("cookie", "a credential"),
    ("host", "set from the storage URL"),
    ("connection", "hop-by-hop"),
    ("keep-alive", "hop-by-hop"),
    ("proxy-connection", "hop-by-hop"),
    ("proxy-authenticate", "hop-by-hop"),
    ("te", "hop-by-hop"),
    ("trailer", "hop-by-hop"),
    ("trailers", "hop-by-hop"),
    ("transfer-encoding", "hop-by-hop"),
    ("upgrade", "hop-by-hop"),
    ("expect", "a storage request has no body"),
];

/// Name prefixes that can never be forwarded, with the reason a refusal names.
pub(crate) const NEVER_FORWARDED_PREFIXES: &[(&str, &str)] = &[
    (
        "x-amz-",
        "a cloud-provider header that storage expects to be signed",
    ),
    (
        "x-goog-",
        "a cloud-provider header that storage expects to be signed",
    ),
    (
        "x-ms-",
        "a cloud-provider header that storage expects to be signed",
    ),
    ("content-", "a storage request has no body"),
];

/// Why `name` can never be forwarded to storage, or `None` if it may be.
fn refusal(name: &HeaderName) -> Option<&'static str> {
    let n = name.as_str();
    NEVER_FORWARDED
        .iter()
        .find(|(never, _)| *never == n)
        .or_else(|| {
            NEVER_FORWARDED_PREFIXES
                .iter()
                .find(|(p, _)| n.starts_with(p))
        })
        .map(|(_, why)| *why)
}

/// The allowlist of request headers copied to storage requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ForwardHeaders(Vec<HeaderName>);

impl Default for ForwardHeaders {
    fn default() -> Self {
        ForwardHeaders(DEFAULT_FORWARDED.to_vec())
    }
}

impl ForwardHeaders {
    /// Replaces the list.
    ///
    /// # Panics
    ///
    /// As [`add`](Self::add) does, for each name.
    pub(crate) fn set(&mut self, names: impl IntoIterator<Item = HeaderName>) {
        self.0.clear();
        for name in names {
            self.add(name);
        }
    }

    /// Adds one name (once: a name already on the list is not added again).
    ///
    /// # Panics
    ///
    /// When `name` can never be forwarded, or the list is full: both are mistakes in the
    /// program, as an invalid header name would be, so the builder refuses them at once.
    pub(crate) fn add(&mut self, name: HeaderName) {
        if let Some(why) = refusal(&name) {
            panic!("tower-signed-redirect: `{name}` can never be forwarded to storage ({why})");
        }
        if self.0.contains(&name) {
            return;
        }
        assert!(
            self.0.len() < MAX_FORWARDED_HEADERS,
            "tower-signed-redirect: cannot forward `{name}`: the allowlist holds at most \
             {MAX_FORWARDED_HEADERS} headers"
        );
        self.0.push(name);
    }

    /// Copies the allowlisted values of a request's headers: every value, in the request's
    /// order. Cheap: header values are reference-counted, and the first value of each of
    /// the first [`INLINE`] names is kept inline; only repeated values (and names past
    /// those) allocate.
    #[inline]
    pub(crate) fn capture(&self, headers: &HeaderMap) -> Forwarded {
        let mut captured = Forwarded::default();
        // One pass over the request's headers, comparing names (an enum comparison for
        // standard headers) instead of hashing each allowlisted name.
        for (name, value) in headers {
            if let Some(i) = self.0.iter().position(|n| n == name) {
                match captured.first.get_mut(i) {
                    Some(slot @ None) => *slot = Some(value.clone()),
                    _ => captured.more.push((i, value.clone())),
                }
            }
        }
        captured
    }
}

/// What a storage request carries besides the allowlisted values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Extra<'a> {
    /// Sent as `User-Agent` instead of the caller's.
    pub(crate) user_agent: Option<&'a HeaderValue>,
    /// A `HEAD` answered by a range probe: `Range: bytes=0-0`, and no caller `Range` or
    /// `If-Range`.
    pub(crate) range_probe: bool,
}

/// The allowlisted header values of one request, by their position in the allowlist.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    first: [Option<HeaderValue>; INLINE],
    /// Further values of a repeated header (several `Accept`s, say), and every value of a
    /// name past the inline ones, in order.
    more: Vec<(usize, HeaderValue)>,
}

impl Forwarded {
    /// Writes the captured headers, and `extra`, onto a fresh storage request's headers.
    pub(crate) fn write_to(
        &self,
        allowlist: &ForwardHeaders,
        extra: Extra<'_>,
        out: &mut HeaderMap,
    ) {
        for (i, name) in allowlist.0.iter().enumerate() {
            let replaced = (extra.user_agent.is_some() && name == header::USER_AGENT)
                || (extra.range_probe && (name == header::RANGE || name == header::IF_RANGE));
            // The first value: inline, or (past the inline slots) the first of `more`'s.
            let (first, skip) = match self.first.get(i) {
                Some(Some(first)) => (first, 0),
                Some(None) => continue,
                None => match self.more.iter().find(|(j, _)| *j == i) {
                    Some((_, first)) => (first, 1),
                    None => continue,
                },
            };
            if replaced {
                continue;
            }
            out.insert(name.clone(), first.clone());
            for (_, value) in self.more.iter().filter(|(j, _)| *j == i).skip(skip) {
                out.append(name.clone(), value.clone());
            }
        }
        if let Some(user_agent) = extra.user_agent {
            out.insert(header::USER_AGENT, user_agent.clone());
        }
        if extra.range_probe {
            out.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_cover_credentials_hop_by_hop_and_signed_prefixes() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "proxy-authenticate",
            "trailers",
            "x-amz-date",
            "x-goog-user-project",
            "x-ms-version",
            "content-md5",
        ] {
            assert!(refusal(&HeaderName::from_static(name)).is_some(), "{name}");
        }
        for name in [
            "user-agent",
            "range",
            "accept",
            "x-request-id",
            "traceparent",
        ] {
            assert!(refusal(&HeaderName::from_static(name)).is_none(), "{name}");
        }
    }

    #[test]
    fn repeated_values_are_kept_in_order() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT, HeaderValue::from_static("a"));
        headers.append(header::USER_AGENT, HeaderValue::from_static("ua"));
        headers.append(header::ACCEPT, HeaderValue::from_static("b"));
        let captured = ForwardHeaders::default().capture(&headers);
        let mut out = HeaderMap::new();
        let extra = Extra {
            user_agent: None,
            range_probe: false,
        };
        captured.write_to(&ForwardHeaders::default(), extra, &mut out);
        let accepts: Vec<_> = out.get_all(header::ACCEPT).iter().collect();
        assert_eq!(accepts, ["a", "b"]);
        assert_eq!(out[header::USER_AGENT], "ua");
    }

    #[test]
    fn names_past_the_inline_slots_are_forwarded_in_order() {
        let mut allowlist = ForwardHeaders::default();
        let extra_names = ["x-request-id", "traceparent", "x-a", "x-b"];
        for name in extra_names {
            allowlist.add(HeaderName::from_static(name));
        }
        assert_eq!(allowlist.0.len(), MAX_FORWARDED_HEADERS);
        let mut headers = HeaderMap::new();
        headers.append("traceparent", HeaderValue::from_static("t1"));
        headers.append(header::RANGE, HeaderValue::from_static("bytes=0-"));
        headers.append("x-b", HeaderValue::from_static("b"));
        headers.append("traceparent", HeaderValue::from_static("t2"));
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("secret"));
        let captured = allowlist.capture(&headers);
        let mut out = HeaderMap::new();
        let extra = Extra {
            user_agent: None,
            range_probe: false,
        };
        captured.write_to(&allowlist, extra, &mut out);
        let traceparents: Vec<_> = out.get_all("traceparent").iter().collect();
        assert_eq!(traceparents, ["t1", "t2"]);
        assert_eq!(out["x-b"], "b");
        assert_eq!(out[header::RANGE], "bytes=0-");
        assert_eq!(out.len(), 4, "{out:?}");
    }

    #[test]
    fn replaced_names_past_the_inline_slots_are_dropped_whole() {
        let mut allowlist = ForwardHeaders::default();
        allowlist.set(
            ["x-a", "x-b", "x-c", "x-d"]
                .map(HeaderName::from_static)
                .into_iter()
                .chain([header::USER_AGENT, header::RANGE, header::IF_RANGE]),
        );
        let mut headers = HeaderMap::new();
        for value in ["ua-1", "ua-2"] {
            headers.append(header::USER_AGENT, HeaderValue::from_static(value));
        }
        for value in ["bytes=0-", "bytes=5-"] {
            headers.append(header::RANGE, HeaderValue::from_static(value));
        }
        headers.append(header::IF_RANGE, HeaderValue::from_static("\"etag\""));
        headers.append("x-d", HeaderValue::from_static("d"));
        let captured = allowlist.capture(&headers);
        let own = HeaderValue::from_static("layer/1");
        let mut out = HeaderMap::new();
        let extra = Extra {
            user_agent: Some(&own),
            range_probe: true,
        };
        captured.write_to(&allowlist, extra, &mut out);
        let all = |name| out.get_all(name).iter().cloned().collect::<Vec<_>>();
        assert_eq!(all(header::USER_AGENT), ["layer/1"]);
        assert_eq!(all(header::RANGE), ["bytes=0-0"]);
        assert!(all(header::IF_RANGE).is_empty());
        assert_eq!(out["x-d"], "d");
        assert_eq!(out.len(), 3, "{out:?}");

        // Not replaced, every value of a name past the inline slots goes, in order.
        let mut out = HeaderMap::new();
        let extra = Extra {
            user_agent: None,
            range_probe: false,
        };
        captured.write_to(&allowlist, extra, &mut out);
        let all = |name| out.get_all(name).iter().cloned().collect::<Vec<_>>();
        assert_eq!(all(header::USER_AGENT), ["ua-1", "ua-2"]);
        assert_eq!(all(header::RANGE), ["bytes=0-", "bytes=5-"]);
        assert_eq!(all(header::IF_RANGE), ["\"etag\""]);
    }
}

use super::StorageMatcher;
use http::Uri;
use std::fmt;

/// A matcher from a closure. Created by [`predicate`].
#[derive(Clone, Copy)]
pub struct Predicate<F> {
    f: F,
}

/// Builds a matcher from a closure over the resolved redirect target.
///
/// Its `Debug` prints the closure's type name.
///
/// ```
/// use http::Uri;
/// use tower_signed_redirect::matcher::{predicate, StorageMatcher};
///
/// let only_tls = predicate(|uri: &Uri| uri.scheme_str() == Some("https"));
/// assert!(only_tls.matches(&"https://blob.example/".parse().unwrap()));
/// assert!(!only_tls.matches(&"http://blob.example/".parse().unwrap()));
/// ```
pub fn predicate<F>(f: F) -> Predicate<F>
where
    F: Fn(&Uri) -> bool,
{
    Predicate { f }
}

impl<F> StorageMatcher for Predicate<F>
where
    F: Fn(&Uri) -> bool,
{
    fn matches(&self, uri: &Uri) -> bool {
        (self.f)(uri)
    }
}

impl<F> fmt::Debug for Predicate<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Predicate")
            .field("f", &std::any::type_name::<F>())
            .finish()
    }
}

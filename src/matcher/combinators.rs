use super::StorageMatcher;
use http::Uri;

/// Accepts what either matcher accepts. Created by [`StorageMatcher::or`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Or<A, B> {
    a: A,
    b: B,
}

impl<A, B> Or<A, B> {
    pub(super) fn new(a: A, b: B) -> Self {
        Or { a, b }
    }
}

impl<A: StorageMatcher, B: StorageMatcher> StorageMatcher for Or<A, B> {
    fn matches(&self, uri: &Uri) -> bool {
        self.a.matches(uri) || self.b.matches(uri)
    }
}

/// Accepts what both matchers accept. Created by [`StorageMatcher::and`].
#[derive(Clone, Copy, Debug, Default)]
pub struct And<A, B> {
    a: A,
    b: B,
}

impl<A, B> And<A, B> {
    pub(super) fn new(a: A, b: B) -> Self {
        And { a, b }
    }
}

impl<A: StorageMatcher, B: StorageMatcher> StorageMatcher for And<A, B> {
    fn matches(&self, uri: &Uri) -> bool {
        self.a.matches(uri) && self.b.matches(uri)
    }
}

/// Accepts what the inner matcher rejects. Created by [`StorageMatcher::not`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Not<A> {
    a: A,
}

impl<A> Not<A> {
    pub(super) fn new(a: A) -> Self {
        Not { a }
    }
}

impl<A: StorageMatcher> StorageMatcher for Not<A> {
    fn matches(&self, uri: &Uri) -> bool {
        !self.a.matches(uri)
    }
}

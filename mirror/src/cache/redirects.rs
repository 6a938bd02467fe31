//! The redirect cache: where blob redirects to storage led, reused while the signed URL is
//! valid, keyed on the identity the mirror sent upstream. The cache is the layer's
//! ([`RedirectCache`]); this is how the mirror configures it.

use crate::options::Options;
use tower_signed_redirect::{CacheIdentity, RedirectCache};

/// The redirect cache `options` ask for; `None` with `--redirect-cache 0`.
pub fn redirect_cache(options: &Options) -> Option<RedirectCache> {
    (options.redirect_cache > 0).then(|| {
        // The identity the mirror puts on each upstream request (`http/pull.rs`): its own
        // login for all, the anonymous identity, or a client's login bounded by its token's
        // lifetime (`auth/issued.rs`). Requests without one are not cached.
        RedirectCache::new(options.redirect_cache)
            .expiry_margin(options.redirect_cache_margin)
            .max_age(options.redirect_cache_max_age)
            // Concurrent pulls of one blob by one identity: one registry round trip.
            .single_flight(true)
            .identity(|_, extensions| extensions.get::<CacheIdentity>().cloned())
    })
}

//! Who is asking, and with which login the mirror goes upstream: the clients' logins to the
//! mirror ([`htpasswd`], with failed logins throttled per address in [`throttle`]); the identity the caches key by ([`identity`]); the mirror's own
//! credentials ([`credentials`]) and how each request goes upstream with its registry's
//! login ([`logins`], [`tokens`]); the `/token/` endpoint of clients' own logins
//! ([`token_endpoint`]) and the tokens it handed out ([`issued`]); what challenges and token
//! services say ([`challenge`], [`token_service`]).

pub mod challenge;
pub mod credentials;
pub mod htpasswd;
pub mod identity;
pub mod issued;
pub mod logins;
pub mod throttle;
pub mod token_endpoint;
pub mod token_service;
pub mod tokens;

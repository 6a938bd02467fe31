//! Failed logins to the mirror, counted per address: an address with [`FREE_FAILURES`]
//! failed (or still unanswered) logins in a row is throttled: its next attempts, right or
//! wrong, are refused without any bcrypt for 1 s, doubling with each further failure up to
//! [`MAX_LOCKOUT`]; a success clears it. An IPv6 client is counted by its /64 (one host's
//! usual allocation); no address is locked out for good, and a check whose client went
//! away is not counted.

use lru::LruCache;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many addresses' failures are tracked at most (the least recently failing go first).
const MAX_TRACKED: usize = 16_384;
/// Failed logins in a row an address may make before it is throttled.
pub const FREE_FAILURES: u32 = 5;
/// The longest an address is made to wait.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(60);
/// How long after its last failure an address's failures are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(2 * 60);

/// One address's failed logins in a row, those still being checked, until when it must
/// wait, and when it last failed.
#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    checking: u32,
    until: Option<Instant>,
    last: Instant,
}

/// The failed logins of every address, bounded.
pub struct FailedLogins {
    by_address: Mutex<LruCache<IpAddr, Failures>>,
}

impl Default for FailedLogins {
    fn default() -> Self {
        let cap = NonZeroUsize::new(MAX_TRACKED).expect("a non-zero bound");
        FailedLogins {
            by_address: Mutex::new(LruCache::new(cap)),
        }
    }
}

impl FailedLogins {
    /// How long `client` must still wait, if it is throttled.
    pub fn lockout(&self, client: IpAddr) -> Option<Duration> {
        let client = throttle_key(client);
        let failures = self.lock();
        let until = failures.peek(&client)?.until?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a check that is starting for `client`; `None` when the failures so far and
    /// the checks under way already reach [`FREE_FAILURES`]. The check is counted until the
    /// returned guard ends it, or is dropped (the client went away mid-check: uncounted).
    pub fn start_check(&self, client: IpAddr) -> Option<Checking<'_>> {
        let client = throttle_key(client);
        let now = Instant::now();
        let mut failures = self.lock();
        let entry = failures.get_or_insert_mut(client, || Failures {
            count: 0,
            checking: 0,
            until: None,
            last: now,
        });
        // Failures long past are forgotten.
        if entry.checking == 0 && now.duration_since(entry.last) > FORGET_AFTER {
            *entry = Failures {
                count: 0,
                checking: 0,
                until: None,
                last: now,
            };
        }
        let allowed = match entry.until {
            Some(until) if until > now => false,
            // Past a lockout: one try at a time; failing it doubles the wait.
            _ if entry.count >= FREE_FAILURES => entry.checking == 0,
            _ => entry.count + entry.checking < FREE_FAILURES,
        };
        if !allowed {
            return None;
        }
        entry.checking += 1;
        Some(Checking {
            failed: self,
            client,
            ended: false,
        })
    }

    /// A check for `client` ended: accepted (`Some(true)`: its failures are cleared), refused
    /// (`Some(false)`: counted, and throttled past [`FREE_FAILURES`]), or never run.
    fn end_check(&self, client: IpAddr, verified: Option<bool>) {
        let mut failures = self.lock();
        let Some(entry) = failures.get_mut(&client) else {
            return;
        };
        entry.checking = entry.checking.saturating_sub(1);
        match verified {
            Some(true) => {
                // Checks still under way stay counted as such.
                entry.count = 0;
                entry.until = None;
            }
            Some(false) => {
                entry.count += 1;
                entry.last = Instant::now();
                if entry.count >= FREE_FAILURES {
                    let doublings = (entry.count - FREE_FAILURES).min(6);
                    let wait = (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_LOCKOUT);
                    entry.until = Some(Instant::now() + wait);
                }
            }
            None => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<IpAddr, Failures>> {
        self.by_address.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A login check under way for one address; ends it when told the outcome, or uncounted
/// when dropped first.
pub struct Checking<'a> {
    failed: &'a FailedLogins,
    client: IpAddr,
    ended: bool,
}

impl Checking<'_> {
    /// Ends the check: the login was `verified`, or refused.
    pub fn end(mut self, verified: bool) {
        self.ended = true;
        self.failed.end_check(self.client, Some(verified));
    }
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.failed.end_check(self.client, None);
        }
    }
}

/// Who failed logins are counted for: an IPv4 address, or an IPv6 address's /64.
fn throttle_key(client: IpAddr) -> IpAddr {
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`: each is its own address.
    match client.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_are_each_their_own_address() {
        let mapped = |n: u8| IpAddr::from(std::net::Ipv4Addr::new(10, 9, 8, n).to_ipv6_mapped());
        assert_ne!(throttle_key(mapped(1)), throttle_key(mapped(2)));
    }
}

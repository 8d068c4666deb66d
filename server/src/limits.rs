//! Rates and caps per client: questions per minute per user and per IP
//! (governor's keyed rate limiters), open WebSocket connections per IP, per
//! user and in all. One instance per server, in [`crate::AppState`].
//!
//! A question over its rate is refused with `RATE_LIMITED` and how long to
//! wait (`retry_after_ms`); the connection stays usable. A connection over a
//! cap gets an error and is closed with 1013 (try again later).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::Error;

/// The configured rates and caps (0 turns one off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Questions per minute per user (or guest), in bursts of up to as many.
    pub messages_per_minute_per_user: u32,
    /// Questions per minute per client IP address.
    pub messages_per_minute_per_ip: u32,
    /// Open WebSocket connections in all.
    pub max_connections: usize,
    /// Open WebSocket connections per client IP address.
    pub max_connections_per_ip: usize,
    /// Open WebSocket connections per user (or guest).
    pub max_connections_per_user: usize,
}

/// The server's rates and caps.
pub struct Limits {
    settings: LimitSettings,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    open: Mutex<Open>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Open connections, counted.
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
    by_user: HashMap<String, usize>,
}

fn limiter<K: Clone + Eq + std::hash::Hash>(per_minute: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(per_minute).map(|n| governor::RateLimiter::keyed(Quota::per_minute(n)))
}

impl Limits {
    /// Rates and caps as configured.
    pub fn new(settings: LimitSettings) -> Self {
        Limits {
            settings,
            per_user: limiter(settings.messages_per_minute_per_user),
            per_ip: limiter(settings.messages_per_minute_per_ip),
            open: Mutex::new(Open::default()),
        }
    }

    /// Counts one question of `owner` (a user or guest; `None` without a token)
    /// from `ip`, or says how long to wait.
    pub fn check_message(&self, owner: Option<String>, ip: Option<IpAddr>) -> Result<(), Error> {
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            return Err(too_fast(
                "from this address",
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        if let (Some(limiter), Some(owner)) = (&self.per_user, owner)
            && let Err(not_until) = limiter.check_key(&owner)
        {
            return Err(too_fast(
                "from this user",
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        Ok(())
    }

    /// Forgets rate state that has fully recovered (keeps memory bounded by the
    /// clients of the last minute). Called periodically.
    pub fn forget_idle(&self) {
        for limiter in self.per_user.iter() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in self.per_ip.iter() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Admits one more connection from `ip` for `user`, or says which cap it
    /// would pass. The slot counts it until dropped.
    pub fn connect(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        user: Option<String>,
    ) -> Result<Slot, Error> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let s = &self.settings;
        if s.max_connections > 0 && open.total >= s.max_connections {
            return Err(Error::Overloaded);
        }
        if let Some(ip) = ip
            && s.max_connections_per_ip > 0
            && open.by_ip.get(&ip).copied().unwrap_or(0) >= s.max_connections_per_ip
        {
            return Err(too_many("from this address", s.max_connections_per_ip));
        }
        if let Some(user) = &user
            && s.max_connections_per_user > 0
            && open.by_user.get(user).copied().unwrap_or(0) >= s.max_connections_per_user
        {
            return Err(too_many("for this user", s.max_connections_per_user));
        }
        open.total += 1;
        if let Some(ip) = ip {
            *open.by_ip.entry(ip).or_default() += 1;
        }
        if let Some(user) = &user {
            *open.by_user.entry(user.clone()).or_default() += 1;
        }
        Ok(Slot {
            limits: self.clone(),
            ip,
            user,
        })
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

fn too_fast(whom: &'static str, wait: Duration) -> Error {
    let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Error::TooFast {
        whom,
        retry_after_ms,
    }
}

fn too_many(whom: &'static str, cap: usize) -> Error {
    Error::RateLimited(format!(
        "Too many open connections {whom} (at most {cap}): close one and try again"
    ))
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
    user: Option<String>,
}

impl Slot {
    /// The connection authenticated as someone else: count it for them (if
    /// their cap allows) instead.
    pub fn change_user(&mut self, user: Option<String>) -> Result<(), Error> {
        if user == self.user {
            return Ok(());
        }
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        let cap = self.limits.settings.max_connections_per_user;
        if let Some(new) = &user {
            if cap > 0 && open.by_user.get(new).copied().unwrap_or(0) >= cap {
                return Err(too_many("for this user", cap));
            }
            *open.by_user.entry(new.clone()).or_default() += 1;
        }
        if let Some(old) = self.user.take() {
            release(&mut open.by_user, &old);
        }
        self.user = user;
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            release(&mut open.by_ip, &ip);
        }
        if let Some(user) = &self.user {
            release(&mut open.by_user, user);
        }
    }
}

/// One fewer under `key`; the entry goes when it reaches zero (memory stays
/// bounded by the connections open now).
fn release<K: Eq + std::hash::Hash>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Refuses JSON nested deeper than `max` arrays and objects (INVALID_MESSAGE),
/// before any parser sees it: one pass over the bytes, strings skipped.
pub fn check_depth(json: &[u8], max: usize) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Error::InvalidMessage(format!(
                        "JSON nested deeper than {max} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert!(check_depth(br#"{"a":[1,{"b":2}]}"#, 3).is_ok());
        assert!(check_depth(br#"{"a":[1,{"b":2}]}"#, 2).is_err());
        // Brackets inside strings, escaped quotes included, do not count.
        assert!(check_depth(br#"{"a":"[[[[\"[[[["}"#, 1).is_ok());
        let deep = "[".repeat(10_000);
        assert!(check_depth(deep.as_bytes(), 32).is_err());
    }

    fn settings() -> LimitSettings {
        LimitSettings {
            messages_per_minute_per_user: 3,
            messages_per_minute_per_ip: 5,
            max_connections: 4,
            max_connections_per_ip: 2,
            max_connections_per_user: 2,
        }
    }

    #[test]
    fn questions_past_the_rate_wait_and_others_are_not_affected() {
        let limits = Limits::new(settings());
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            limits
                .check_message(Some("user:a".into()), Some(ip))
                .unwrap();
        }
        let Err(Error::TooFast { retry_after_ms, .. }) =
            limits.check_message(Some("user:a".into()), Some(ip))
        else {
            panic!("a fourth question in a minute must wait");
        };
        // One cell of a 3-per-minute quota comes back every 20 s.
        assert!((1..=20_000).contains(&retry_after_ms), "{retry_after_ms}");
        // Another user on the same address is still served, up to the address's rate.
        limits
            .check_message(Some("user:b".into()), Some(ip))
            .unwrap();
        assert!(matches!(
            limits.check_message(Some("user:b".into()), Some(ip)),
            Err(Error::TooFast {
                whom: "from this address",
                ..
            })
        ));
        limits
            .check_message(None, Some([10, 0, 0, 2].into()))
            .unwrap();
    }

    #[test]
    fn connection_caps_count_and_release() {
        let limits = Arc::new(Limits::new(settings()));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = limits.connect(Some(a), Some("user:x".into())).unwrap();
        let _second = limits.connect(Some(a), None).unwrap();
        assert!(matches!(
            limits.connect(Some(a), None),
            Err(Error::RateLimited(_))
        ));
        let mut third = limits.connect(Some(b), Some("user:x".into())).unwrap();
        assert!(matches!(
            limits.connect(Some(b), Some("user:x".into())),
            Err(Error::RateLimited(_))
        ));
        let _fourth = limits.connect(Some(b), None).unwrap();
        assert!(matches!(limits.connect(None, None), Err(Error::Overloaded)));
        drop(first);
        assert_eq!(limits.open_connections(), 3);
        // Re-authenticating moves the count from one user to the other.
        third.change_user(Some("user:y".into())).unwrap();
        let _x = limits.connect(None, Some("user:x".into())).unwrap();
        drop(third);
        let open = limits.open.lock().unwrap();
        assert_eq!(open.by_user.get("user:y"), None);
        assert_eq!(open.by_ip.get(&a), Some(&1));
    }
}

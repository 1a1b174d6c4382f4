//! Command-line flags: `--name value` pairs, read into typed settings with their defaults, and
//! the loopback rule every run obeys (the load generator only ever targets this machine).

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Flags not yet read; whatever is left at the end is an unknown flag.
pub(crate) struct Flags {
    values: HashMap<String, String>,
}

impl Flags {
    pub(crate) fn parse(args: impl Iterator<Item = String>) -> Result<Flags> {
        let mut values = HashMap::new();
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("expected a --flag, got {flag:?}");
            };
            let value = args
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            if values.insert(name.to_owned(), value).is_some() {
                bail!("--{name} given twice");
            }
        }
        Ok(Flags { values })
    }

    pub(crate) fn get<T: FromStr>(&mut self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.remove(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
        }
    }

    pub(crate) fn opt(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    pub(crate) fn secs(&mut self, name: &str, default: f64) -> Result<Duration> {
        let s: f64 = self.get(name, default)?;
        if !(0.0..=3600.0).contains(&s) {
            bail!("--{name} must be between 0 and 3600 seconds");
        }
        Ok(Duration::from_secs_f64(s))
    }

    /// A comma-separated list.
    pub(crate) fn list(&mut self, name: &str, default: &str) -> Vec<String> {
        self.values
            .remove(name)
            .unwrap_or_else(|| default.to_owned())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Fails on any flag the scenario did not read.
    pub(crate) fn finish(self) -> Result<()> {
        if let Some(name) = self.values.keys().next() {
            bail!("unknown flag --{name} (see `switchyard-loadgen help`)");
        }
        Ok(())
    }
}

/// Refuses any URL whose host is not on this machine.
pub(crate) fn check_loopback(url: &str) -> Result<()> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .with_context(|| format!("{url}: not a URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("{url}: the load generator only targets this machine (127.0.0.0/8, ::1, localhost)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        for ok in [
            "ws://127.0.0.1:8080/ws",
            "ws://127.3.2.1/ws",
            "ws://[::1]:9/ws",
            "ws://localhost:1/socket.io/",
        ] {
            check_loopback(ok).unwrap();
        }
        for bad in [
            "ws://10.0.0.1:8080/ws",
            "ws://example.com/ws",
            "ws://127.0.0.1.evil.com/ws",
            "nonsense",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_are_typed_and_unknown_ones_refused() {
        let mut f =
            Flags::parse(["--rooms", "3", "--x", "y"].map(String::from).into_iter()).unwrap();
        assert_eq!(f.get("rooms", 1usize).unwrap(), 3);
        assert_eq!(f.get("subscribers", 7usize).unwrap(), 7);
        assert!(f.finish().is_err(), "--x was never read");
        assert!(Flags::parse(["--rooms"].map(String::from).into_iter()).is_err());
    }
}

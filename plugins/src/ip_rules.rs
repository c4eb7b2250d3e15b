//! `ip_restriction`: allow and deny lists of client addresses (CIDR), checked before
//! anything else on the route, on the client address as `trusted_proxies` decides it.
//!
//! ```yaml
//! plugins:
//!   - ip_restriction: { allow: [10.0.0.0/8, 192.168.1.7], deny: [10.9.0.0/16] }
//! ```

use crate::api::{Flow, Phases, Plugin, PluginError, Rejection, RequestContext};
use crate::error_code::ErrorCode;
use ipnet::IpNet;
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub const NAME: &str = "ip_restriction";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// Only these addresses or networks may pass (empty: every address not denied).
    #[serde(default)]
    pub allow: Vec<String>,
    /// These never pass, even when allowed.
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug)]
pub struct IpRestrictionPlugin {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

fn parse(key: &str, list: &[String]) -> Result<Vec<IpNet>, PluginError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    PluginError::config_at(
                        NAME,
                        format!("{key}.{i}"),
                        format!("`{s}` is not an address or a CIDR network"),
                    )
                })
        })
        .collect()
}

impl IpRestrictionPlugin {
    pub fn new(config: &IpRestrictionConfig) -> Result<Self, PluginError> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err(PluginError::config(NAME, "give `allow`, `deny` or both"));
        }
        Ok(IpRestrictionPlugin {
            allow: parse("allow", &config.allow)?,
            deny: parse("deny", &config.deny)?,
        })
    }

    /// Whether `ip` may pass; an unknown address passes only when nothing is allow-listed.
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(|ip| ip.to_canonical()) else {
            return self.allow.is_empty();
        };
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

impl Plugin for IpRestrictionPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        // First of all: a refused address gets nothing else, not even a CORS preflight.
        3000
    }

    fn phases(&self) -> Phases {
        Phases::EARLY
    }

    fn early_request_filter(
        &self,
        _session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        if self.admits(ctx.client_ip) {
            return Ok(Flow::Continue);
        }
        let mut r = Rejection::new(
            ErrorCode::Forbidden,
            "Requests from this address are not allowed",
        );
        r.label = Some("ip_restricted".into());
        Ok(Flow::Reject(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRestrictionPlugin {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        IpRestrictionPlugin::new(&IpRestrictionConfig {
            allow: v(allow),
            deny: v(deny),
        })
        .unwrap()
    }

    #[test]
    fn deny_wins_over_allow_and_allow_lists_close_the_rest() {
        let r = rules(&["10.0.0.0/8", "192.168.1.7"], &["10.9.0.0/16"]);
        let ip = |s: &str| Some(s.parse().unwrap());
        assert!(r.admits(ip("10.1.2.3")));
        assert!(r.admits(ip("192.168.1.7")));
        assert!(
            r.admits(ip("::ffff:10.1.2.3")),
            "IPv4-mapped IPv6 is the IPv4 address"
        );
        assert!(!r.admits(ip("10.9.0.1")));
        assert!(!r.admits(ip("192.168.1.8")));
        assert!(!r.admits(None));
        let deny_only = rules(&[], &["203.0.113.0/24"]);
        assert!(deny_only.admits(ip("198.51.100.1")));
        assert!(!deny_only.admits(ip("203.0.113.9")));
        assert!(deny_only.admits(None));
    }

    #[test]
    fn bad_entries_are_refused() {
        let c = IpRestrictionConfig {
            allow: vec!["10.0.0.0/33".into()],
            deny: vec![],
        };
        assert!(IpRestrictionPlugin::new(&c).is_err());
    }
}

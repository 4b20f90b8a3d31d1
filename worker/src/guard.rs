//! The target guard: which addresses a check may connect to. Whoever may add a monitor can
//! point the probe at any address the probe reaches (a cloud metadata endpoint, the database
//! host, an admin port on loopback) and read the answer back through `page_content`, so the
//! probe checks every address it is about to connect to: after DNS resolution, for the first
//! request and for every redirect.
//!
//! The rule, in one place: the most specific network that contains the address decides (the
//! longest prefix); between networks of the same length, one given on the command line beats
//! a built-in one, and a deny beats an allow. An address that no network contains is allowed,
//! unless an allow list was given: then only what it allows is reached.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// Denied unless allowed explicitly: link-local, where cloud metadata endpoints live
/// (169.254.169.254), and AWS's IPv6 one; the unspecified addresses, which the kernel connects
/// to this host (they would get around a deny of loopback).
pub const DENIED_BY_DEFAULT: [&str; 5] = [
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "0.0.0.0/32",
    "::/128",
];

/// The network policy of one probe.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    rules: Vec<Rule>,
    allow_list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    network: IpNet,
    allow: bool,
    built_in: bool,
}

/// The address a URL's host names literally (it is connected to without DNS, so the policy
/// must judge it before); None for a host name, which is judged after resolution.
pub fn literal_address(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(address) => Some(IpAddr::V4(address)),
        url::Host::Ipv6(address) => Some(IpAddr::V6(address)),
        url::Host::Domain(_) => None,
    }
}

/// Why an address may not be reached: the network that decided, or the allow list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Blocked {
    pub address: IpAddr,
    pub denied_by: Option<IpNet>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.denied_by {
            Some(network) => write!(
                f,
                "blocked by the network policy: {} is in the denied network {network}",
                self.address
            ),
            None => write!(
                f,
                "blocked by the network policy: {} is not in the allowed networks",
                self.address
            ),
        }
    }
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy::new(&[], &[])
    }
}

impl NetworkPolicy {
    /// The built-in denials plus `deny` and `allow` as given on the command line.
    pub fn new(deny: &[IpNet], allow: &[IpNet]) -> Self {
        let built_in = DENIED_BY_DEFAULT.iter().filter_map(|n| n.parse().ok());
        let rules = built_in
            .map(|network| Rule {
                network,
                allow: false,
                built_in: true,
            })
            .chain(deny.iter().map(|&network| Rule {
                network: network.trunc(),
                allow: false,
                built_in: false,
            }))
            .chain(allow.iter().map(|&network| Rule {
                network: network.trunc(),
                allow: true,
                built_in: false,
            }))
            .collect();
        NetworkPolicy {
            rules,
            allow_list: !allow.is_empty(),
        }
    }

    /// May a check connect to `address`? An IPv4 address written as IPv6 is judged as the
    /// IPv4 address it reaches (see `reaches`); a NAT64 address must pass as itself as well.
    pub fn check(&self, address: IpAddr) -> Result<(), Blocked> {
        let canonical = address.to_canonical();
        let reached = reaches(canonical);
        if reached != canonical {
            self.decide(canonical)?;
        }
        self.decide(reached)
    }

    fn decide(&self, address: IpAddr) -> Result<(), Blocked> {
        let deciding = self
            .rules
            .iter()
            .filter(|rule| rule.network.contains(&address))
            .max_by_key(|rule| (rule.network.prefix_len(), !rule.built_in, !rule.allow));
        match deciding {
            Some(rule) if rule.allow => Ok(()),
            Some(rule) => Err(Blocked {
                address,
                denied_by: Some(rule.network),
            }),
            None if self.allow_list => Err(Blocked {
                address,
                denied_by: None,
            }),
            None => Ok(()),
        }
    }

    /// The networks as the log shows them at start.
    pub fn describe(&self) -> String {
        let list = |allow: bool| {
            let names: Vec<String> = self
                .rules
                .iter()
                .filter(|rule| rule.allow == allow)
                .map(|rule| rule.network.to_string())
                .collect();
            names.join(",")
        };
        if self.allow_list {
            format!("deny {}; allow only {}", list(false), list(true))
        } else {
            format!("deny {}; allow the rest", list(false))
        }
    }
}

/// The address a connection to `address` reaches: an IPv4-mapped IPv6 address
/// (`::ffff:169.254.169.254`) is that IPv4 address, and so is one in the well-known NAT64
/// prefix `64:ff9b::/96` (RFC 6052), which a NAT64 gateway — or DNS64 answering a name with
/// only an IPv4 address — turns into the IPv4 address in its last 32 bits.
pub fn reaches(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::from([a, b, c, d])
        }
        other => other,
    }
}

/// One network for `--deny-networks`/`--allow-networks`: CIDR (`10.0.0.0/8`, `fd00::/8`) or a
/// single address (`127.0.0.2`, meaning /32 or /128).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|network| network.trunc())
        .map_err(|_| format!("{text:?} is not a network (CIDR such as 10.0.0.0/8) or an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| parse_network(n).unwrap()).collect()
    }

    fn allowed(policy: &NetworkPolicy, address: &str) -> bool {
        policy.check(address.parse().unwrap()).is_ok()
    }

    #[test]
    fn by_default_link_local_and_unspecified_are_denied_and_the_rest_allowed() {
        let policy = NetworkPolicy::default();
        // Decided here, never connected to: the tests send traffic to loopback only.
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "0.0.0.0",
            "::",
            "fd00:ec2::254",
        ] {
            assert!(!allowed(&policy, denied), "{denied}");
        }
        for fine in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.1.1",
            "8.8.8.8",
            "fd00::1",
            "169.253.255.255",
            "169.255.0.0",
        ] {
            assert!(allowed(&policy, fine), "{fine}");
        }
        let why = policy
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            why.to_string(),
            "blocked by the network policy: 169.254.169.254 is in the denied network 169.254.0.0/16"
        );
    }

    #[test]
    fn a_deny_list_adds_to_the_built_in_one() {
        let policy = NetworkPolicy::new(&nets(&["127.0.0.2/32", "10.0.0.0/8"]), &[]);
        assert!(!allowed(&policy, "127.0.0.2"));
        assert!(!allowed(&policy, "::ffff:127.0.0.2"));
        assert!(!allowed(&policy, "64:ff9b::7f00:2"));
        assert!(!allowed(&policy, "64:ff9b::a00:5"), "NAT64 to 10.0.0.5");
        assert!(allowed(&policy, "64:ff9b::808:808"));
        assert!(!allowed(&policy, "10.200.0.1"));
        assert!(!allowed(&policy, "169.254.169.254"));
        assert!(allowed(&policy, "127.0.0.1"));
        assert!(allowed(&policy, "11.0.0.1"));
        // Denying the NAT64 prefix itself works too.
        let policy = NetworkPolicy::new(&nets(&["64:ff9b::/96"]), &[]);
        assert!(!allowed(&policy, "64:ff9b::808:808"));
        assert!(allowed(&policy, "8.8.8.8"));
    }

    #[test]
    fn an_allow_list_allows_only_itself_and_the_most_specific_network_decides() {
        let policy = NetworkPolicy::new(&nets(&["10.9.0.0/16"]), &nets(&["10.0.0.0/8"]));
        assert!(allowed(&policy, "10.1.0.1"));
        assert!(!allowed(&policy, "10.9.0.1"), "the longer deny wins");
        assert!(!allowed(&policy, "192.168.0.1"), "outside the allow list");
        assert_eq!(
            policy.check("192.168.0.1".parse().unwrap()).unwrap_err(),
            Blocked {
                address: "192.168.0.1".parse().unwrap(),
                denied_by: None
            }
        );
        // An exception inside a denied network.
        let policy =
            NetworkPolicy::new(&nets(&["10.0.0.0/8"]), &nets(&["0.0.0.0/0", "10.0.5.0/24"]));
        assert!(allowed(&policy, "10.0.5.9"));
        assert!(!allowed(&policy, "10.0.6.9"));
        assert!(allowed(&policy, "192.168.0.1"));
        assert!(
            !allowed(&policy, "169.254.169.254"),
            "the built-in /16 beats the /0"
        );
    }

    #[test]
    fn link_local_can_be_allowed_explicitly_and_ties_go_to_the_deny() {
        let policy = NetworkPolicy::new(&[], &nets(&["0.0.0.0/0", "::/0", "169.254.0.0/16"]));
        assert!(allowed(&policy, "169.254.169.254"));
        let policy = NetworkPolicy::new(&nets(&["10.0.0.0/8"]), &nets(&["10.0.0.0/8"]));
        assert!(!allowed(&policy, "10.0.0.1"));
    }

    #[test]
    fn networks_parse_as_cidr_or_address_and_junk_is_refused() {
        assert_eq!(
            parse_network(" 127.0.0.2 ").unwrap().to_string(),
            "127.0.0.2/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for junk in ["", "10.0.0.0/33", "example.com", "10.0.0"] {
            assert!(parse_network(junk).is_err(), "{junk:?}");
        }
    }
}

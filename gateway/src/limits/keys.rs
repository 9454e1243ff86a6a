//! What each limit counts by, derived from a send attempt. Pure: the digests that hide these values are
//! made in `mod.rs`.

use crate::address::Destination;
use std::net::IpAddr;

/// The destination as limits count it: email addresses lowercased (mail systems treat `Jane@Example.com`
/// and `jane@example.com` as one mailbox, and case must not buy an attacker more sends), E.164 numbers as
/// they are.
pub(crate) fn destination(destination: &Destination) -> String {
    destination.as_str().to_ascii_lowercase()
}

/// The client address as limits count it: IPv4 addresses whole, IPv6 addresses by their /64 network (one
/// subscriber usually holds a whole /64), IPv4-mapped IPv6 addresses as the IPv4 address they carry.
pub(crate) fn client_ip(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The first `digits` digits of an E.164 number (`+447700900123`, 7 → `+4477009`); the whole number when it
/// is shorter.
pub(crate) fn number_prefix(e164: &str, digits: u32) -> String {
    let national = e164.strip_prefix('+').unwrap_or(e164);
    let take = usize::try_from(digits)
        .unwrap_or(usize::MAX)
        .min(national.len());
    format!("+{}", &national[..take])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;

    #[test]
    fn prefixes_are_the_leading_digits_of_the_e164_number() {
        assert_eq!(number_prefix("+447700900123", 7), "+4477009");
        assert_eq!(number_prefix("+447700900123", 1), "+4");
        assert_eq!(number_prefix("+14155550100", 15), "+14155550100");
        assert_eq!(number_prefix("+14155550100", 11), "+14155550100");
    }

    #[test]
    fn ipv6_counts_by_its_64_network_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_ip(a), "2001:db8:1:2::/64");
        assert_eq!(client_ip(a), client_ip(b));
        assert_ne!(client_ip(a), client_ip(c));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().expect("ip");
        let plain: IpAddr = "203.0.113.7".parse().expect("ip");
        assert_eq!(client_ip(mapped), client_ip(plain));
        assert_eq!(client_ip(plain), "203.0.113.7");
    }

    #[test]
    fn email_destinations_count_without_case() {
        let upper = Destination::parse(Channel::Email, "Jane@Example.COM").expect("email");
        let lower = Destination::parse(Channel::Email, "jane@example.com").expect("email");
        assert_eq!(destination(&upper), destination(&lower));
    }
}

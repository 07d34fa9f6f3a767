//! Ring-buffer bytes → [`Event`]: the one place that interprets the raw record.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use sockmem_common::{
    event::{
        FLAG_HAS_SKB, FLAG_OWNER_FROM_SEND, FLAG_OWNER_UNKNOWN, FLAG_SEND_START, FLAG_SOCK_FREED,
        FLAG_TSQ_REFERENCE,
    },
    Hook, SockEvent,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record is {0} bytes, expected {size}", size = std::mem::size_of::<SockEvent>())]
    Size(usize),
    #[error("unknown hook id {0}")]
    Hook(u8),
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("unknown protocol {0}")]
    Protocol(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The skb part of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkbInfo {
    pub skb: u64,
    pub len: u32,
    /// 0 where the hook could not read it (the skb may be gone).
    pub truesize: u32,
    /// 0 and "" where the skb is not on a device.
    pub ifindex: u32,
    pub iface: Name,
}

/// Who an event's pid/tgid/comm describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The socket's last `sendmsg` caller (events in softirq keep naming the sender).
    Sendmsg,
    /// The task running when the hook fired (process context, no `sendmsg` seen yet).
    Current,
    /// In softirq before any `sendmsg` on the socket was seen: nobody to name.
    Unknown,
}

impl Owner {
    pub fn name(self) -> &'static str {
        match self {
            Owner::Sendmsg => "sendmsg",
            Owner::Current => "current",
            Owner::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub cpu: u32,
    pub pid: u32,
    pub tgid: u32,
    pub comm: Name,
    /// Whose pid/comm these are.
    pub owner: Owner,
    /// The sender's cgroup v2 id (with pid/comm; 0 when the sender is unknown).
    pub cgroup_id: u64,
    /// The socket's network namespace inode (0: not read).
    pub netns_ino: u32,
    /// The cgroup's path (`kernel::cgroups`), once `Names::fill` named it.
    pub cgroup: Option<Arc<str>>,
    /// The namespace's `ip netns` name, once `Names::fill` found one.
    pub netns: Option<Arc<str>>,
    pub hook: Hook,
    /// Kernel address of `struct sock` (output only on request).
    pub sk: u64,
    /// The socket's identity, unique while sockmem runs (also across address reuse).
    pub sock_id: u64,
    /// The socket's inode number (`ss -e` `ino:`); 0 when it had no file when first seen.
    pub ino: u64,
    /// The socket was being freed: the counters are 0, not read.
    pub freed: bool,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub wmem_queued: i32,
    pub wmem_alloc: i32,
    pub sndbuf: i32,
    pub skb: Option<SkbInfo>,
    pub value: i64,
    /// The kernel enumerator `value` is, where the hook's value is an enum (`names`).
    pub value_name: Option<String>,
    /// Hook-specific second value (see `SockEvent::aux`).
    pub aux: u64,
    /// Where in the kernel (`symbol+offset`) `aux` points, for hooks where it is a code address.
    pub location: Option<String>,
    pub duration_ns: u64,
    pub send_start: bool,
    /// A `wmem_release` of TCP Small Queues' 1-byte reference, not of skb bytes.
    pub tsq_reference: bool,
}

/// A kernel name of at most 16 bytes (comm, interface) as text, kept inline: decoding one
/// costs no allocation, at 100,000 events a second.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    /// Room for 16 bytes that are not UTF-8, each replaced by U+FFFD (3 bytes).
    bytes: [u8; 48],
    len: u8,
}

impl Name {
    /// From NUL-padded bytes (up to the first NUL).
    pub fn new(raw: &[u8]) -> Name {
        let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        let raw = &raw[..raw.len().min(16)];
        let mut n = Name {
            bytes: [0; 48],
            len: 0,
        };
        let text = String::from_utf8_lossy(raw);
        n.bytes[..text.len()].copy_from_slice(text.as_bytes());
        n.len = text.len() as u8;
        n
    }

    pub fn as_str(&self) -> &str {
        // Only ever filled from a `str` (see `new`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A NUL-padded kernel name (comm, interface) as text.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub fn address(family: u16, bytes: [u8; 16]) -> Result<IpAddr, DecodeError> {
    match family as i32 {
        libc::AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        libc::AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => Err(DecodeError::Family(family)),
    }
}

impl Event {
    /// The sender's cgroup as shown: its path, `id:N` when not found, `None` for an unknown
    /// sender (not the root cgroup).
    pub fn cgroup_name(&self) -> Option<std::borrow::Cow<'_, str>> {
        if self.cgroup_id == 0 {
            return None;
        }
        Some(match &self.cgroup {
            Some(p) if !p.starts_with("id:") => std::borrow::Cow::Borrowed(p),
            _ => std::borrow::Cow::Owned(format!("id:{}", self.cgroup_id)),
        })
    }

    /// The socket's namespace as shown: its `ip netns` name, else `ino:N`; `None` when it
    /// could not be read.
    pub fn netns_name(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(match &self.netns {
            Some(n) => std::borrow::Cow::Borrowed(n),
            None if self.netns_ino == 0 => return None,
            None => std::borrow::Cow::Owned(format!("ino:{}", self.netns_ino)),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() != std::mem::size_of::<SockEvent>() {
            return Err(DecodeError::Size(bytes.len()));
        }
        // SAFETY: the length matches and SockEvent is plain old data; the ring buffer gives
        // no alignment guarantee we rely on, hence read_unaligned.
        let raw: SockEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Event::from_raw(&raw)
    }

    pub fn from_raw(raw: &SockEvent) -> Result<Event, DecodeError> {
        let hook = Hook::from_u8(raw.hook).ok_or(DecodeError::Hook(raw.hook))?;
        let protocol = match raw.protocol as i32 {
            libc::IPPROTO_TCP => Protocol::Tcp,
            libc::IPPROTO_UDP => Protocol::Udp,
            _ => return Err(DecodeError::Protocol(raw.protocol)),
        };
        let local = SocketAddr::new(address(raw.family, raw.laddr)?, raw.lport);
        let remote = SocketAddr::new(address(raw.family, raw.raddr)?, raw.rport);
        let skb = (raw.flags & FLAG_HAS_SKB != 0).then(|| SkbInfo {
            skb: raw.skb,
            len: raw.skb_len,
            truesize: raw.skb_truesize,
            ifindex: raw.ifindex,
            iface: Name::new(&raw.ifname),
        });
        Ok(Event {
            ts_ns: raw.ts_ns,
            cpu: raw.cpu,
            pid: raw.pid,
            tgid: raw.tgid,
            comm: Name::new(&raw.comm),
            owner: if raw.flags & FLAG_OWNER_FROM_SEND != 0 {
                Owner::Sendmsg
            } else if raw.flags & FLAG_OWNER_UNKNOWN != 0 {
                Owner::Unknown
            } else {
                Owner::Current
            },
            cgroup_id: raw.cgroup_id,
            netns_ino: raw.netns_ino,
            cgroup: None,
            netns: None,
            hook,
            sk: raw.sk,
            sock_id: raw.sock_id,
            ino: raw.ino,
            freed: raw.flags & FLAG_SOCK_FREED != 0,
            protocol,
            local,
            remote,
            wmem_queued: raw.wmem_queued,
            wmem_alloc: raw.wmem_alloc,
            sndbuf: raw.sndbuf,
            skb,
            value: raw.value,
            value_name: None,
            aux: raw.aux,
            location: None,
            duration_ns: raw.duration_ns,
            send_start: raw.flags & FLAG_SEND_START != 0,
            tsq_reference: raw.flags & FLAG_TSQ_REFERENCE != 0,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A raw record as the kernel side would write it, for tests of later stages.
    pub fn raw_event(hook: Hook) -> SockEvent {
        let mut raw: SockEvent = unsafe { std::mem::zeroed() };
        raw.ts_ns = 1_000_000_000;
        raw.sk = 0xffff_8880_1234_5678;
        raw.sock_id = 0x301;
        raw.ino = 123_456;
        raw.hook = hook as u8;
        raw.family = libc::AF_INET as u16;
        raw.protocol = libc::IPPROTO_TCP as u8;
        raw.laddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        raw.raddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        raw.lport = 40000;
        raw.rport = 5201;
        raw.tgid = 100;
        raw.pid = 101;
        raw.comm[..6].copy_from_slice(b"sender");
        raw.wmem_queued = 65536;
        raw.wmem_alloc = 4608;
        raw.sndbuf = 87040;
        raw
    }

    fn bytes_of(raw: &SockEvent) -> Vec<u8> {
        let p = (raw as *const SockEvent).cast::<u8>();
        unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<SockEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_an_ipv4_skb_event() {
        let mut raw = raw_event(Hook::QdiscEnqueue);
        raw.flags = FLAG_HAS_SKB | FLAG_OWNER_FROM_SEND;
        raw.skb = 0xffff_8880_0000_1000;
        raw.skb_len = 1500;
        raw.skb_truesize = 2304;
        raw.ifindex = 7;
        raw.ifname[..5].copy_from_slice(b"veth0");
        let e = Event::decode(&bytes_of(&raw)).expect("a well-formed record decodes");
        assert_eq!(e.hook, Hook::QdiscEnqueue);
        assert_eq!(e.local.to_string(), "198.18.0.1:40000");
        assert_eq!(e.remote.to_string(), "198.18.0.2:5201");
        assert_eq!(e.comm, "sender");
        assert_eq!(e.owner, Owner::Sendmsg);
        let skb = e.skb.expect("FLAG_HAS_SKB gives skb info");
        assert_eq!((skb.len, skb.truesize, skb.ifindex), (1500, 2304, 7));
        assert_eq!(skb.iface, "veth0");
    }

    #[test]
    fn decodes_ipv6_and_socket_events_without_skb() {
        let mut raw = raw_event(Hook::TcpAck);
        raw.family = libc::AF_INET6 as u16;
        raw.laddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        raw.raddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let e = Event::decode(&bytes_of(&raw)).expect("ipv6 decodes");
        assert_eq!(e.local.to_string(), "[fd00::1]:40000");
        assert!(e.skb.is_none());
    }

    #[test]
    fn rejects_malformed_records() {
        let raw = raw_event(Hook::TcpAck);
        let bytes = bytes_of(&raw);
        assert_eq!(Event::decode(&bytes[..10]), Err(DecodeError::Size(10)));
        let mut bad = raw;
        bad.hook = 200;
        assert_eq!(Event::decode(&bytes_of(&bad)), Err(DecodeError::Hook(200)));
        let mut bad = raw;
        bad.family = 1;
        assert_eq!(Event::decode(&bytes_of(&bad)), Err(DecodeError::Family(1)));
        let mut bad = raw;
        bad.protocol = 1;
        assert_eq!(
            Event::decode(&bytes_of(&bad)),
            Err(DecodeError::Protocol(1))
        );
    }
}

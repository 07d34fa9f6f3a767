//! TCP Small Queues' limit on `sk_wmem_alloc`, computed as `tcp_small_queue_check()` does
//! (net/ipv4/tcp_output.c): the socket may have `max(2 × skb truesize, pacing rate >> pacing
//! shift)` bytes below TCP, capped by `net.ipv4.tcp_limit_output_bytes`. Before 6.16 the cap
//! did not apply to paced sockets (`sk_pacing_status` set: BBR, or the fq qdisc); commit "tcp:
//! always use tcp_limit_output_bytes limitation" (6.16) applies it to all. Past the limit TCP
//! stops sending until skbs are freed.

/// The limit and what it is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsqLimit {
    pub limit: u64,
    /// `net.ipv4.tcp_limit_output_bytes` in the socket's network namespace.
    pub limit_output_bytes: u64,
    /// `sk_pacing_rate` as tcp_info reports it, bytes/s (`u64::MAX`: unlimited).
    pub pacing_rate: u64,
    /// `sk_pacing_shift`: 10 unless a driver (some Wi-Fi) lowers it; not read by sockmem.
    pub pacing_shift: u32,
    /// The largest truesize of the socket's skbs seen so far.
    pub truesize: u64,
    /// The cap applied: the kernel caps every socket (6.16+), or this one is not paced.
    pub capped: bool,
}

/// The first kernel that caps paced sockets too.
const CAPS_PACED: (u32, u32) = (6, 16);

/// Whether kernel `release` (`uname -r`) caps paced sockets' TSQ limit too.
pub fn caps_paced(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= CAPS_PACED
}

/// `sk_pacing_shift`'s default (`sk_pacing_shift_update` is only called by some Wi-Fi drivers).
pub const DEFAULT_PACING_SHIFT: u32 = 10;

impl TsqLimit {
    /// `capped`: see [`caps_paced`] and whether the socket is paced.
    pub fn new(limit_output_bytes: u64, pacing_rate: u64, truesize: u64, capped: bool) -> TsqLimit {
        let pacing_shift = DEFAULT_PACING_SHIFT;
        let mut limit = (2 * truesize).max(pacing_rate >> pacing_shift);
        if capped {
            limit = limit.min(limit_output_bytes);
        }
        TsqLimit {
            limit,
            limit_output_bytes,
            pacing_rate,
            pacing_shift,
            truesize,
            capped,
        }
    }

    /// Whether TCP would hold back the next skb: `sk_wmem_alloc` with one more skb of this
    /// truesize passes the limit (the kernel checks after charging it).
    pub fn binds(&self, wmem_alloc: u64) -> bool {
        wmem_alloc > 0 && wmem_alloc + self.truesize > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_formula() {
        // A fast pacing rate: capped by tcp_limit_output_bytes.
        assert_eq!(
            TsqLimit::new(1 << 20, 1_250_000_000, 65_000, true).limit,
            1 << 20
        );
        // Paced, before 6.16: not capped.
        assert_eq!(
            TsqLimit::new(1 << 20, 1_250_000_000, 65_000, false).limit,
            1_250_000_000 >> 10
        );
        // A slow one: two skbs' truesize.
        assert_eq!(
            TsqLimit::new(1 << 20, 2_500_000, 65_000, true).limit,
            130_000
        );
        // In between: the pacing rate's share of a millisecond.
        assert_eq!(
            TsqLimit::new(1 << 20, 400_000_000, 65_000, true).limit,
            400_000_000 >> 10
        );
        assert_eq!(TsqLimit::new(1 << 20, u64::MAX, 1, true).limit, 1 << 20);
    }

    #[test]
    fn kernels_that_cap_paced_sockets() {
        assert!(caps_paced("6.18.44-fc-v657"));
        assert!(caps_paced("6.16.0"));
        assert!(caps_paced("7.0.1"));
        assert!(!caps_paced("6.12.117+deb13-amd64"));
        assert!(!caps_paced("6.1.0-57-amd64"));
        assert!(!caps_paced("5.15.0"));
    }

    #[test]
    fn binds_near_the_limit_only() {
        let t = TsqLimit::new(1 << 20, 2_500_000, 65_000, true);
        assert!(!t.binds(0));
        assert!(!t.binds(60_000));
        assert!(t.binds(70_000));
    }
}

//! TCP Small Queues' limit on `sk_wmem_alloc`, computed as `tcp_small_queue_check()` does
//! (net/ipv4/tcp_output.c): the socket may have `max(2 × skb truesize, pacing rate >> pacing
//! shift)` bytes below TCP, capped by `net.ipv4.tcp_limit_output_bytes` unless a pacing qdisc
//! (fq) or BBR paces it. Past the limit TCP stops sending until skbs are freed.

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
}

/// `sk_pacing_shift`'s default (`sk_pacing_shift_update` is only called by some Wi-Fi drivers).
pub const DEFAULT_PACING_SHIFT: u32 = 10;

impl TsqLimit {
    pub fn new(limit_output_bytes: u64, pacing_rate: u64, truesize: u64) -> TsqLimit {
        let pacing_shift = DEFAULT_PACING_SHIFT;
        let limit = (2 * truesize)
            .max(pacing_rate >> pacing_shift)
            .min(limit_output_bytes);
        TsqLimit {
            limit,
            limit_output_bytes,
            pacing_rate,
            pacing_shift,
            truesize,
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
        assert_eq!(TsqLimit::new(1 << 20, 1_250_000_000, 65_000).limit, 1 << 20);
        // A slow one: two skbs' truesize.
        assert_eq!(TsqLimit::new(1 << 20, 2_500_000, 65_000).limit, 130_000);
        // In between: the pacing rate's share of a millisecond.
        assert_eq!(
            TsqLimit::new(1 << 20, 400_000_000, 65_000).limit,
            400_000_000 >> 10
        );
        assert_eq!(TsqLimit::new(1 << 20, u64::MAX, 1).limit, 1 << 20);
    }

    #[test]
    fn binds_near_the_limit_only() {
        let t = TsqLimit::new(1 << 20, 2_500_000, 65_000);
        assert!(!t.binds(0));
        assert!(!t.binds(60_000));
        assert!(t.binds(70_000));
    }
}

//! Empty: the library target only lets sockmem list this crate as a build dependency, so that
//! cargo rebuilds the eBPF object when its sources change. The programs are the binary.
#![no_std]

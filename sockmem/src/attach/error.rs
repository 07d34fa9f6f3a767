//! Why a hook could not be attached through a backend: one variant per cause, each with a stable
//! reason code (`probe --json` shows it; tests match codes, not text).

use std::sync::Arc;

use aya::programs::ProgramError;

/// Why an attach point (or a backend) cannot be used. Cheap to clone: kernel checks are cached
/// and their verdict handed to every hook that asks.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttachError {
    #[error("kernel built without CONFIG_KPROBES (no `{pmu}`)")]
    KprobesUnsupported { pmu: &'static str },
    #[error("reading `{path}`")]
    KallsymsUnreadable {
        path: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("function `{func}` is not in `{path}` (inlined in this kernel?)")]
    SymbolMissing { func: String, path: &'static str },
    #[error("function `{func}` has no BTF entry (inlined or not traceable in this kernel)")]
    NoBtfFunction { func: String },
    #[error("loading BTF for fentry")]
    BtfUnavailable {
        #[source]
        source: Arc<aya::BtfError>,
    },
    #[error("tracepoint `{tracepoint}` does not exist in this kernel")]
    TracepointMissing { tracepoint: String },
    #[error("tracepoint `{tracepoint}` argument {index} is `{have}`, sockmem expects `{want}`")]
    TracepointSignature {
        tracepoint: String,
        index: usize,
        have: String,
        want: &'static str,
    },
    #[error("program `{program}` is missing from the eBPF object")]
    ProgramMissing { program: &'static str },
    #[error("program `{program}` is not of the kind `{attach}` needs")]
    ProgramKind {
        program: &'static str,
        attach: String,
    },
    /// The kernel refused the load without a verifier log: typically EPERM where a program type
    /// is not allowed (fentry on some hardened or virtualised kernels).
    #[error("load refused")]
    LoadRefused {
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the verifier rejected the program; end of its log:\n    {log_tail}")]
    VerifierRejected {
        log_tail: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("load failed")]
    Load {
        #[source]
        source: Arc<ProgramError>,
    },
    #[error("attaching to `{attach}`")]
    Attach {
        attach: String,
        #[source]
        source: Arc<ProgramError>,
    },
}

impl AttachError {
    /// A stable name for the cause, for scripts and tests.
    pub fn code(&self) -> &'static str {
        match self {
            AttachError::KprobesUnsupported { .. } => "kprobes_unsupported",
            AttachError::KallsymsUnreadable { .. } => "kallsyms_unreadable",
            AttachError::SymbolMissing { .. } => "symbol_missing",
            AttachError::NoBtfFunction { .. } => "no_btf_function",
            AttachError::BtfUnavailable { .. } => "btf_unavailable",
            AttachError::TracepointMissing { .. } => "tracepoint_missing",
            AttachError::TracepointSignature { .. } => "tracepoint_signature",
            AttachError::ProgramMissing { .. } => "program_missing",
            AttachError::ProgramKind { .. } => "program_kind",
            AttachError::LoadRefused { .. } => "load_refused",
            AttachError::VerifierRejected { .. } => "verifier_rejected",
            AttachError::Load { .. } => "load_failed",
            AttachError::Attach { .. } => "attach_failed",
        }
    }

    /// The kernel has the attach point but sockmem's program did not load or attach there: a
    /// defect to report loudly, not a fact of the kernel (missing hook, policy refusing a program
    /// type).
    pub fn is_defect(&self) -> bool {
        matches!(
            self,
            AttachError::TracepointSignature { .. }
                | AttachError::ProgramMissing { .. }
                | AttachError::ProgramKind { .. }
                | AttachError::VerifierRejected { .. }
                | AttachError::Load { .. }
                | AttachError::Attach { .. }
        )
    }

    /// The message with its causes, `a: b: c`, as users read it.
    pub fn explain(&self) -> String {
        format!("{:#}", anyhow::Error::new(self.clone()))
    }

    /// A program load failure: the verifier's verdict when it left a log.
    pub fn from_load(err: ProgramError) -> AttachError {
        match err {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
                if lines.is_empty() {
                    AttachError::LoadRefused {
                        source: Arc::new(io_error),
                    }
                } else {
                    AttachError::VerifierRejected {
                        log_tail: lines[lines.len().saturating_sub(12)..].join("\n    "),
                        source: Arc::new(io_error),
                    }
                }
            }
            other => AttachError::Load {
                source: Arc::new(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanations_keep_the_cause_and_codes_are_stable() {
        let refused = AttachError::LoadRefused {
            source: Arc::new(std::io::Error::from_raw_os_error(libc::EPERM)),
        };
        assert_eq!(refused.code(), "load_refused");
        assert!(
            refused
                .explain()
                .starts_with("load refused: Operation not permitted"),
            "{}",
            refused.explain()
        );
        let missing = AttachError::SymbolMissing {
            func: "tcp_wfree".into(),
            path: "/proc/kallsyms",
        };
        assert_eq!(
            missing.explain(),
            "function `tcp_wfree` is not in `/proc/kallsyms` (inlined in this kernel?)"
        );
        assert_eq!(missing.code(), "symbol_missing");
    }
}

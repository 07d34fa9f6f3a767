use std::path::PathBuf;

use super::types::{Kind, TypeId};

/// Everything that can go wrong reading or querying BTF; malformed input ends here, never in a
/// panic.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("`{}` not found (kernels built without CONFIG_DEBUG_INFO_BTF have no /sys/kernel/btf/vmlinux)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read `{}`", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("btf header: input of {len} bytes is shorter than the header")]
    ShortHeader { len: usize },
    #[error("btf header: bad magic {0:#06x}")]
    BadMagic(u16),
    #[error("btf header: byte-swapped magic 0x9feb (non-native endian BTF is unsupported)")]
    SwappedMagic,
    #[error("btf header: unsupported version {0}")]
    BadVersion(u8),
    #[error("btf header: hdr_len {0} out of range")]
    BadHeaderLen(u32),
    #[error("btf header: {0} section runs past the end of the data")]
    SectionOutOfRange(&'static str),
    #[error("string section is empty or not NUL-delimited")]
    BadStringSection,
    #[error("type section truncated at type id {0}")]
    TypeTruncated(TypeId),
    #[error("type section holds more than 2^32 types")]
    TooManyTypes,
    #[error("type id {id} has unknown kind {kind}")]
    UnknownKind { id: TypeId, kind: u8 },
    #[error("string offset {0} out of range")]
    StringOutOfRange(u32),
    #[error("string at offset {0} is not valid UTF-8")]
    BadUtf8(u32),
    #[error("type id {0} out of range")]
    TypeIdOutOfRange(TypeId),
    #[error("type chain too deep or cyclic at type id {0}")]
    TooDeep(TypeId),
    #[error("size or offset overflow at type id {0}")]
    Overflow(TypeId),
    #[error("type id {id} ({kind}) has no size")]
    Unsized { id: TypeId, kind: Kind },
    #[error("type `{0}` not found in BTF")]
    TypeNotFound(String),
    #[error("{kind} `{container}` has no field `{field}`")]
    NoField {
        kind: Kind,
        container: String,
        field: String,
    },
    #[error("field `{0}` is a bitfield")]
    Bitfield(String),
    #[error("field `{field}` is not a struct or union ({kind}), so it has no field `{next}`")]
    NotComposite {
        field: String,
        kind: Kind,
        next: String,
    },
    #[error("invalid field path `{0}`")]
    BadPath(String),
    #[error("tracepoint `{0}` not found in BTF (no typedef `btf_trace_{0}`)")]
    TracepointNotFound(String),
    #[error("tracepoint `{name}`: {reason}")]
    BadTracepoint { name: String, reason: &'static str },
}

pub type Result<T> = std::result::Result<T, BtfError>;

//! Minimal parser of raw kernel BTF (`/sys/kernel/btf/vmlinux`, format per the kernel's
//! Documentation/bpf/btf.rst). Rust eBPF has no CO-RE, so struct field offsets are
//! resolved here at load time and handed to the programs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub const VMLINUX_PATH: &str = "/sys/kernel/btf/vmlinux";
const HDR_LEN: usize = 24;
/// Bounds type chasing so malformed (cyclic) data cannot loop forever.
const MAX_DEPTH: u32 = 32;
/// Bounds the anonymous-member search so a crafted DAG cannot blow up exponentially.
const VISIT_BUDGET: u32 = 1 << 20;

const INT: u8 = 1;
const PTR: u8 = 2;
const ARRAY: u8 = 3;
const STRUCT: u8 = 4;
const UNION: u8 = 5;
const ENUM: u8 = 6;
const FWD: u8 = 7;
const TYPEDEF: u8 = 8;
const VOLATILE: u8 = 9;
const CONST: u8 = 10;
const RESTRICT: u8 = 11;
const FUNC: u8 = 12;
const FUNC_PROTO: u8 = 13;
const VAR: u8 = 14;
const DATASEC: u8 = 15;
const FLOAT: u8 = 16;
const DECL_TAG: u8 = 17;
const TYPE_TAG: u8 = 18;
const ENUM64: u8 = 19;

fn kind_name(kind: u8) -> &'static str {
    const NAMES: &str = "void int pointer array struct union enum fwd typedef volatile const \
                         restrict func func_proto var datasec float decl_tag type_tag enum64";
    NAMES
        .split(' ')
        .nth(usize::from(kind))
        .unwrap_or("unknown kind")
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("`{}` not found (kernels built without CONFIG_DEBUG_INFO_BTF have no /sys/kernel/btf/vmlinux)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read `{}`: {source}", path.display())]
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
    TypeTruncated(u32),
    #[error("type id {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u8 },
    #[error("string offset {0} out of range")]
    StringOutOfRange(u32),
    #[error("string at offset {0} is not valid UTF-8")]
    BadUtf8(u32),
    #[error("type data out of range at byte {0}")]
    DataOutOfRange(usize),
    #[error("type id {0} out of range")]
    TypeIdOutOfRange(u32),
    #[error("type chain too deep or cyclic at type id {0}")]
    TooDeep(u32),
    #[error("size or offset overflow at type id {0}")]
    Overflow(u32),
    #[error("type id {id} ({kind}) has no size")]
    Unsized { id: u32, kind: &'static str },
    #[error("type `{0}` not found in BTF")]
    TypeNotFound(String),
    #[error("{kind} `{container}` has no field `{field}`")]
    NoField {
        kind: &'static str,
        container: String,
        field: String,
    },
    #[error("field `{0}` is a bitfield")]
    Bitfield(String),
    #[error("field `{field}` is not a struct or union ({kind}), so it has no field `{next}`")]
    NotComposite {
        field: String,
        kind: &'static str,
        next: String,
    },
    #[error("invalid field path `{0}`")]
    BadPath(String),
    #[error("tracepoint `{0}` not found in BTF (no typedef `btf_trace_{0}`)")]
    TracepointNotFound(String),
    #[error("tracepoint `{name}`: {reason}")]
    BadTracepoint { name: String, reason: &'static str },
}

type Result<T> = std::result::Result<T, BtfError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLocation {
    pub offset: u32,
    pub size: u32,
}

/// One `struct btf_type`; `extra` is the absolute offset of its kind-specific data.
#[derive(Debug, Clone, Copy, Default)]
struct Ty {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    extra: usize,
}

impl Ty {
    fn kind(&self) -> u8 {
        ((self.info >> 24) & 0x1f) as u8
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kflag(&self) -> bool {
        self.info >> 31 == 1
    }
}

pub struct Btf {
    data: Vec<u8>,
    strs: Range<usize>,
    /// Indexed by type id; entry 0 is the implicit `void`.
    types: Vec<Ty>,
    names: HashMap<String, Vec<u32>>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Btf({} types, {} bytes)",
            self.types.len(),
            self.data.len()
        )
    }
}

fn rd32(d: &[u8], off: usize) -> Option<u32> {
    let b = d.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        Self::from_path(Path::new(VMLINUX_PATH))
    }

    pub fn from_path(path: &Path) -> Result<Btf> {
        let data = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BtfError::Missing { path: path.into() },
            _ => BtfError::Io {
                path: path.into(),
                source,
            },
        })?;
        Self::parse(data)
    }

    pub fn from_bytes(data: &[u8]) -> Result<Btf> {
        Self::parse(data.to_vec())
    }

    fn parse(data: Vec<u8>) -> Result<Btf> {
        let len = data.len();
        let magic = data
            .get(..2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes);
        match magic {
            Some(0xeb9f) => {}
            Some(0x9feb) => return Err(BtfError::SwappedMagic),
            Some(m) => return Err(BtfError::BadMagic(m)),
            None => return Err(BtfError::ShortHeader { len }),
        }
        let hdr = |i: usize| rd32(&data, 4 + 4 * i).ok_or(BtfError::ShortHeader { len });
        let (hdr_len, type_off, type_len) = (hdr(0)?, hdr(1)?, hdr(2)?);
        let (str_off, str_len) = (hdr(3)?, hdr(4)?);
        if let Some(&v) = data.get(2).filter(|&&v| v != 1) {
            return Err(BtfError::BadVersion(v));
        }
        if (hdr_len as usize) < HDR_LEN || hdr_len as usize > len {
            return Err(BtfError::BadHeaderLen(hdr_len));
        }
        // Sections are relative to the end of the header.
        let section = |name, off: u32, slen: u32| {
            let start = (hdr_len as usize).checked_add(off as usize);
            match start.and_then(|s| Some(s..s.checked_add(slen as usize)?)) {
                Some(r) if r.end <= len => Ok(r),
                _ => Err(BtfError::SectionOutOfRange(name)),
            }
        };
        let tsec = section("type", type_off, type_len)?;
        let strs = section("string", str_off, str_len)?;
        // Leading and trailing NULs make every in-range offset a terminated string.
        let nul = |i: usize| data.get(i) == Some(&0);
        if strs.is_empty() || !nul(strs.start) || !nul(strs.end - 1) {
            return Err(BtfError::BadStringSection);
        }

        let tdata = data.get(..tsec.end).unwrap_or_default();
        let mut types = vec![Ty::default()];
        let mut pos = tsec.start;
        while pos < tsec.end {
            let id = u32::try_from(types.len()).map_err(|_| BtfError::TypeTruncated(u32::MAX))?;
            let word = |i: usize| rd32(tdata, pos.checked_add(4 * i)?);
            let (Some(name_off), Some(info), Some(size_or_type)) = (word(0), word(1), word(2))
            else {
                return Err(BtfError::TypeTruncated(id));
            };
            // pos + 12 <= tsec.end since word(2) was read from below tsec.end.
            let ty = Ty {
                name_off,
                info,
                size_or_type,
                extra: pos + 12,
            };
            let extra_len = match ty.kind() {
                INT | VAR | DECL_TAG => 4,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * ty.vlen(),
                ENUM | FUNC_PROTO => 8 * ty.vlen(),
                kind => return Err(BtfError::UnknownKind { id, kind }),
            };
            let next = ty.extra.checked_add(extra_len).filter(|&p| p <= tsec.end);
            pos = next.ok_or(BtfError::TypeTruncated(id))?;
            types.push(ty);
        }

        let mut btf = Btf {
            data,
            strs,
            types,
            names: HashMap::new(),
        };
        let mut names: HashMap<String, Vec<u32>> = HashMap::with_capacity(btf.types.len());
        for (id, ty) in btf
            .types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.name_off != 0)
        {
            let name = btf.str_at(ty.name_off)?;
            let id = id as u32; // fits: checked while parsing
            match names.get_mut(name) {
                Some(ids) => ids.push(id),
                None => drop(names.insert(name.to_owned(), vec![id])),
            }
        }
        btf.names = names;
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> Result<&str> {
        let start = self.strs.start.saturating_add(off as usize);
        let bytes = self.data.get(start..self.strs.end).unwrap_or_default();
        let s = bytes
            .split(|&b| b == 0)
            .next()
            .filter(|s| s.len() < bytes.len());
        let s = s.ok_or(BtfError::StringOutOfRange(off))?;
        std::str::from_utf8(s).map_err(|_| BtfError::BadUtf8(off))
    }

    fn ty(&self, id: u32) -> Result<Ty> {
        self.types
            .get(id as usize)
            .copied()
            .ok_or(BtfError::TypeIdOutOfRange(id))
    }

    /// Word `i` of a type's kind-specific data (bounds were checked at parse time).
    fn extra(&self, ty: &Ty, i: usize) -> Result<u32> {
        let off = i.checked_mul(4).and_then(|o| o.checked_add(ty.extra));
        off.and_then(|o| rd32(&self.data, o))
            .ok_or(BtfError::DataOutOfRange(ty.extra))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type id.
    fn strip(&self, mut id: u32) -> Result<u32> {
        for _ in 0..=MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind() {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = t.size_or_type,
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooDeep(id))
    }

    fn type_size(&self, id: u32, depth: u32) -> Result<u32> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let id = self.strip(id)?;
        let t = self.ty(id)?;
        match t.kind() {
            INT | STRUCT | UNION | ENUM | ENUM64 | FLOAT => Ok(t.size_or_type),
            PTR => Ok(8),
            ARRAY => {
                let elem = self.type_size(self.extra(&t, 0)?, depth + 1)?;
                elem.checked_mul(self.extra(&t, 2)?)
                    .ok_or(BtfError::Overflow(id))
            }
            k => Err(BtfError::Unsized {
                id,
                kind: kind_name(k),
            }),
        }
    }

    /// Ids of types called `name`.
    fn ids(&self, name: &str) -> impl Iterator<Item = (u32, Ty)> + '_ {
        let ids = self.names.get(name).map(Vec::as_slice).unwrap_or_default();
        ids.iter()
            .filter_map(|&id| Some((id, *self.types.get(id as usize)?)))
    }

    /// Prefers a complete struct, then a complete union, over forward decls and empty duplicates.
    fn find_composite(&self, name: &str) -> Result<u32> {
        let rank = |t: &Ty| match (t.kind(), t.vlen() > 0 || t.size_or_type > 0) {
            (STRUCT, true) => Some(0),
            (UNION, true) => Some(1),
            (STRUCT, false) => Some(2),
            (UNION, false) => Some(3),
            _ => None,
        };
        let best = self
            .ids(name)
            .filter_map(|(id, t)| Some((rank(&t)?, id)))
            .min();
        best.map(|(_, id)| id)
            .ok_or_else(|| BtfError::TypeNotFound(format!("struct {name}")))
    }

    /// Finds member `name` of composite `id`, looking through anonymous struct/union
    /// members. Returns (bit offset, member type, is_bitfield).
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: u32,
        budget: &mut u32,
    ) -> Result<Option<(u64, u32, bool)>> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let t = self.ty(id)?;
        for i in 0..t.vlen() {
            *budget = budget.checked_sub(1).ok_or(BtfError::TooDeep(id))?;
            let (name_off, mty) = (self.extra(&t, 3 * i)?, self.extra(&t, 3 * i + 1)?);
            let raw = self.extra(&t, 3 * i + 2)?;
            // With kind_flag the offset word is bitfield_size << 24 | bit_offset.
            let (bits, bf_size) = if t.kflag() {
                (raw & 0xff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            let mname = self.str_at(name_off)?;
            if mname == name {
                let old_bf = !t.kflag() && self.is_int_bitfield(mty)?;
                let bitfield = bf_size != 0 || bits % 8 != 0 || old_bf;
                return Ok(Some((u64::from(bits), mty, bitfield)));
            }
            if !mname.is_empty() {
                continue;
            }
            let inner = self.strip(mty)?;
            if matches!(self.ty(inner)?.kind(), STRUCT | UNION) {
                if let Some((b, ty, bf)) = self.find_member(inner, name, depth + 1, budget)? {
                    return Ok(Some((b + u64::from(bits), ty, bf))); // <= 33 * 2^32: no overflow
                }
            }
        }
        Ok(None)
    }

    /// Without kind_flag, bitfields are INT types of partial width or with a bit offset.
    fn is_int_bitfield(&self, id: u32) -> Result<bool> {
        let t = self.ty(id)?;
        if t.kind() != INT {
            return Ok(false);
        }
        let enc = self.extra(&t, 0)?;
        Ok((enc >> 16) & 0xff != 0 || u64::from(enc & 0xff) != u64::from(t.size_or_type) * 8)
    }

    /// Byte offset and byte size of a possibly nested field, e.g.
    /// `member_offset("sock", "__sk_common.skc_family")`. Members of anonymous structs and
    /// unions are found as if direct members; typedefs and qualifiers are followed.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<FieldLocation> {
        let mut cur = self.find_composite(struct_name)?;
        if path.split('.').any(str::is_empty) {
            return Err(BtfError::BadPath(path.to_owned()));
        }
        let (mut bits, mut walked) = (0u64, struct_name.to_owned());
        for comp in path.split('.') {
            let id = self.strip(cur)?;
            let kind = kind_name(self.ty(id)?.kind());
            if kind != "struct" && kind != "union" {
                let next = comp.to_owned();
                return Err(BtfError::NotComposite {
                    field: walked,
                    kind,
                    next,
                });
            }
            let mut budget = VISIT_BUDGET;
            let found = self.find_member(id, comp, 0, &mut budget)?;
            let (off, ty, bitfield) = found.ok_or_else(|| BtfError::NoField {
                kind,
                container: walked.clone(),
                field: comp.to_owned(),
            })?;
            walked = format!("{walked}.{comp}");
            if bitfield {
                return Err(BtfError::Bitfield(walked));
            }
            bits = bits.checked_add(off).ok_or(BtfError::Overflow(id))?;
            cur = ty;
        }
        let offset = u32::try_from(bits / 8).map_err(|_| BtfError::Overflow(cur))?;
        Ok(FieldLocation {
            offset,
            size: self.type_size(cur, 0)?,
        })
    }

    fn tracepoint_typedef(&self, name: &str) -> Option<u32> {
        let mut ids = self
            .ids(&format!("btf_trace_{name}"))
            .filter(|(_, t)| t.kind() == TYPEDEF);
        ids.next().map(|(id, _)| id)
    }

    /// Whether the raw tracepoint typedef `btf_trace_<name>` exists.
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.tracepoint_typedef(name).is_some()
    }

    /// (name, C type) of each tracepoint parameter after the leading `void *` ctx;
    /// `btf_trace_<name>` is TYPEDEF -> PTR -> FUNC_PROTO.
    pub fn tracepoint_params(&self, name: &str) -> Result<Vec<(String, String)>> {
        let id = self.tracepoint_typedef(name);
        let id = id.ok_or_else(|| BtfError::TracepointNotFound(name.to_owned()))?;
        let bad = |reason| BtfError::BadTracepoint {
            name: name.to_owned(),
            reason,
        };
        let ptr = self.ty(self.strip(self.ty(id)?.size_or_type)?)?;
        let proto = self.ty(self.strip(ptr.size_or_type)?)?;
        if ptr.kind() != PTR || proto.kind() != FUNC_PROTO || proto.vlen() == 0 {
            return Err(bad(
                "typedef is not a pointer to a function prototype with parameters",
            ));
        }
        let first = self.ty(self.strip(self.extra(&proto, 1)?)?)?;
        if first.kind() != PTR || self.strip(first.size_or_type)? != 0 {
            return Err(bad("first parameter is not `void *`"));
        }
        (1..proto.vlen())
            .map(|i| {
                let pname = self.str_at(self.extra(&proto, 2 * i)?)?.to_owned();
                Ok((pname, self.type_name(self.extra(&proto, 2 * i + 1)?, 0)?))
            })
            .collect()
    }

    /// Whether a kernel function (BTF FUNC) with this exact name exists.
    pub fn has_function(&self, name: &str) -> bool {
        self.ids(name).any(|(_, t)| t.kind() == FUNC)
    }

    /// C-like spelling of a type, e.g. `struct sk_buff *` or `const char *`.
    fn type_name(&self, id: u32, depth: u32) -> Result<String> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        if id == 0 {
            return Ok("void".to_owned());
        }
        let t = self.ty(id)?;
        let name = self.str_at(t.name_off)?;
        let named = |prefix: &str| match name {
            "" => format!("{prefix} (anonymous)"),
            n => format!("{prefix} {n}"),
        };
        let inner = || self.type_name(t.size_or_type, depth + 1);
        Ok(match t.kind() {
            STRUCT => named("struct"),
            UNION => named("union"),
            ENUM | ENUM64 => named("enum"),
            FWD if t.kflag() => named("union"),
            FWD => named("struct"),
            PTR => {
                let s = inner()?;
                let sep = if s.ends_with('*') { "" } else { " " };
                format!("{s}{sep}*")
            }
            CONST => format!("const {}", inner()?),
            VOLATILE => format!("volatile {}", inner()?),
            RESTRICT => format!("{} restrict", inner()?),
            TYPE_TAG => inner()?,
            ARRAY => {
                let elem = self.type_name(self.extra(&t, 0)?, depth + 1)?;
                format!("{elem}[{}]", self.extra(&t, 2)?)
            }
            FUNC_PROTO => "function".to_owned(),
            _ => name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn live() -> &'static Btf {
        static LIVE: OnceLock<Btf> = OnceLock::new();
        LIVE.get_or_init(|| Btf::from_sys_fs().expect("live vmlinux BTF"))
    }

    fn loc(btf: &Btf, s: &str, p: &str) -> FieldLocation {
        btf.member_offset(s, p)
            .unwrap_or_else(|e| panic!("{s}/{p}: {e}"))
    }

    /// Asserts that each (struct, path) lookup fails with a message containing the text.
    fn expect_errs(btf: &Btf, cases: &[(&str, &str, &str)]) {
        for &(s, p, want) in cases {
            let got = btf.member_offset(s, p).map_err(|e| e.to_string());
            assert!(
                got.as_ref().is_err_and(|m| m.contains(want)),
                "{s}/{p}: {got:?}"
            );
        }
    }

    fn parse_err(v: &[u8]) -> String {
        Btf::from_bytes(v)
            .expect_err("malformed BTF parsed")
            .to_string()
    }

    #[test]
    fn live_parse_timing() {
        let t = std::time::Instant::now();
        let btf = Btf::from_sys_fs().unwrap();
        eprintln!("parsed live {btf:?} in {:?}", t.elapsed());
        assert!(btf.types.len() > 10_000);
    }

    #[test]
    fn live_sock_fields() {
        let b = live();
        let sizes = [
            ("sk_wmem_queued", 4),
            ("sk_wmem_alloc", 4),
            ("sk_wmem_alloc.refs.counter", 4),
            ("sk_sndbuf", 4),
            ("sk_protocol", 2),
            ("__sk_common.skc_family", 2),
            ("__sk_common.skc_num", 2),
            ("__sk_common.skc_dport", 2),
            ("__sk_common.skc_rcv_saddr", 4),
            ("__sk_common.skc_daddr", 4),
            ("__sk_common.skc_v6_daddr", 16),
            ("__sk_common.skc_v6_rcv_saddr", 16),
        ];
        for (p, size) in sizes {
            assert_eq!(loc(b, "sock", p).size, size, "{p}");
        }
        // include/net/sock.h: union {skc_daddr, skc_rcv_saddr}, union skc_hash,
        // union {skc_dport, skc_num}, then skc_family; unchanged for many years.
        let sc = |f| loc(b, "sock", &format!("__sk_common.{f}")).offset;
        let common = [
            "skc_daddr",
            "skc_rcv_saddr",
            "skc_dport",
            "skc_num",
            "skc_family",
        ];
        assert_eq!(common.map(sc), [0, 4, 12, 14, 16]);
        assert_eq!(sc("skc_v6_rcv_saddr"), sc("skc_v6_daddr") + 16);
        for f in common.iter().chain(&["skc_v6_daddr"]) {
            assert_eq!(sc(f), loc(b, "sock_common", f).offset, "{f}");
        }
        let common = loc(b, "sock", "__sk_common");
        assert_eq!(common.offset, 0);
        assert!(loc(b, "sock", "sk_wmem_queued").offset >= common.size);
        let alloc = loc(b, "sock", "sk_wmem_alloc");
        assert_eq!(alloc, loc(b, "sock", "sk_wmem_alloc.refs"));
    }

    #[test]
    fn live_skb_and_netdev_fields() {
        let b = live();
        let fields = [
            ("sk_buff", "sk", 8),
            ("sk_buff", "len", 4),
            ("sk_buff", "truesize", 4),
            ("sk_buff", "dev", 8),
            ("net_device", "ifindex", 4),
            ("net_device", "name", 16),
        ];
        for (s, p, size) in fields {
            assert_eq!(loc(b, s, p).size, size, "{s}.{p}");
        }
        assert_ne!(loc(b, "sk_buff", "sk"), loc(b, "sk_buff", "dev"));
    }

    #[test]
    fn live_tracepoints_and_functions() {
        let b = live();
        assert!(b.has_tracepoint("net_dev_start_xmit"));
        assert!(!b.has_tracepoint("no_such_tp"));
        let p = b.tracepoint_params("net_dev_start_xmit").unwrap();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.contains("sk_buff"), "{p:?}");
        assert!(p[1].1.ends_with("struct net_device *"), "{p:?}"); // const in newer kernels
        let q = b.tracepoint_params("qdisc_enqueue").unwrap();
        assert_eq!(q.len(), 3, "{q:?}");
        assert_eq!(q[2].1, "struct sk_buff *");
        let e = b.tracepoint_params("no_such_tp").unwrap_err().to_string();
        assert_eq!(
            e,
            "tracepoint `no_such_tp` not found in BTF (no typedef `btf_trace_no_such_tp`)"
        );
        assert!(b.has_function("tcp_sendmsg"));
        assert!(!b.has_function("no_such_function_xyz") && !b.has_function("sock"));
    }

    #[test]
    fn live_errors() {
        expect_errs(
            live(),
            &[
                ("sockx", "a", "type `struct sockx` not found in BTF"),
                (
                    "sock",
                    "sk_wmem_queuedx",
                    "struct `sock` has no field `sk_wmem_queuedx`",
                ),
                (
                    "sock",
                    "__sk_common.x",
                    "struct `sock.__sk_common` has no field `x`",
                ),
                (
                    "sock",
                    "sk_wmem_queued.x",
                    "`sock.sk_wmem_queued` is not a struct or union (int)",
                ),
                (
                    "sk_buff",
                    "sk.x",
                    "`sk_buff.sk` is not a struct or union (pointer)",
                ),
                ("sk_buff", "cloned", "field `sk_buff.cloned` is a bitfield"),
                ("sock", "", "invalid field path ``"),
                ("sock", "a..b", "invalid field path `a..b`"),
            ],
        );
        let m = Btf::from_path(Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("CONFIG_DEBUG_INFO_BTF"), "{m}");
    }

    /// Synthetic BTF builder: strings first, then types, so cutting the blob cuts types.
    struct B {
        types: Vec<u8>,
        strs: Vec<u8>,
        ends: Vec<usize>, // ends[id] = end of type `id` in `types`
    }

    fn info(kind: u8, vlen: u32, kflag: bool) -> u32 {
        (u32::from(kflag) << 31) | (u32::from(kind) << 24) | vlen
    }

    fn set32(v: &mut [u8], at: usize, x: u32) {
        v[at..at + 4].copy_from_slice(&x.to_le_bytes());
    }

    impl B {
        fn new() -> Self {
            B {
                types: vec![],
                strs: vec![0],
                ends: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            let off = self.strs.len() as u32;
            self.strs.extend(name.bytes().chain([0]));
            off * u32::from(!name.is_empty())
        }
        fn raw(&mut self, name_off: u32, info: u32, sot: u32, extra: &[u32]) -> u32 {
            for w in [name_off, info, sot].iter().chain(extra) {
                self.types.extend(w.to_le_bytes());
            }
            self.ends.push(self.types.len());
            self.ends.len() as u32 - 1
        }
        fn ty(&mut self, name: &str, kind: u8, sot: u32, extra: &[u32]) -> u32 {
            let n = self.s(name);
            self.raw(n, info(kind, 0, false), sot, extra)
        }
        /// Struct or union; `ms` holds (name, type, offset word).
        fn comp(&mut self, kind: u8, name: &str, kf: bool, ms: &[(&str, u32, u32)]) -> u32 {
            let n = self.s(name);
            let words: Vec<u32> = ms.iter().flat_map(|&(m, t, o)| [self.s(m), t, o]).collect();
            self.raw(
                n,
                info(kind, ms.len() as u32, kf),
                4 * ms.len() as u32,
                &words,
            )
        }
        fn build(&self) -> Vec<u8> {
            let (sl, tl) = (self.strs.len() as u32, self.types.len() as u32);
            let mut v = vec![0x9f, 0xeb, 1, 0];
            for w in [24, sl, tl, 0, sl] {
                v.extend(w.to_le_bytes());
            }
            v.extend(self.strs.iter().chain(&self.types));
            v
        }
        fn parse(f: impl FnOnce(&mut B)) -> Result<Btf> {
            let mut b = B::new();
            f(&mut b);
            Btf::from_bytes(&b.build())
        }
    }

    fn sample() -> B {
        let mut b = B::new();
        let int = b.ty("int", INT, 4, &[32]); // 1
        let u16_ = b.ty("u16", INT, 2, &[16]); // 2
        let td = b.ty("myint", TYPEDEF, int, &[]); // 3
        let cst = b.ty("", CONST, td, &[]); // 4
        let arr = b.ty("", ARRAY, 0, &[u16_, int, 8]); // 5
        let lohi = b.comp(STRUCT, "", false, &[("lo", u16_, 0), ("hi", u16_, 16)]);
        let un = b.comp(UNION, "", false, &[("word", int, 0), ("", lohi, 0)]);
        let inner = b.comp(STRUCT, "inner", false, &[("x", int, 0), ("y", int, 32)]);
        let ptr = b.ty("", PTR, inner, &[]);
        b.ty("outer", FWD, 0, &[]);
        b.comp(STRUCT, "outer", false, &[]); // empty duplicate must not win
        let members = [
            ("a", cst, 0),
            ("", un, 32),
            ("flags", int, (3 << 24) | 64), // kind_flag bitfield of 3 bits
            ("odd", u16_, 76),              // not byte aligned
            ("arr", arr, 96),
            ("p", ptr, 256),
            ("in", inner, 320),
        ];
        b.comp(STRUCT, "outer", true, &members);
        let bits3 = b.ty("u3", INT, 1, &[3]); // old-style bitfield: 3-bit INT
        b.comp(STRUCT, "old", false, &[("b", bits3, 0), ("c", int, 0)]);
        let void_ptr = b.ty("", PTR, 0, &[]);
        let skb = b.s("skb");
        let proto = b.raw(0, info(FUNC_PROTO, 2, false), 0, &[0, void_ptr, skb, ptr]);
        let pp = b.ty("", PTR, proto, &[]);
        b.ty("btf_trace_foo", TYPEDEF, pp, &[]);
        b.ty("btf_trace_bad", TYPEDEF, int, &[]);
        b.ty("do_foo", FUNC, proto, &[]);
        b
    }

    #[test]
    fn synthetic_members() {
        let btf = Btf::from_bytes(&sample().build()).unwrap();
        let ok = [
            ("a", 0, 4),
            ("word", 4, 4),
            ("lo", 4, 2),
            ("hi", 6, 2),
            ("arr", 12, 16),
            ("p", 32, 8),
            ("in.y", 44, 4),
        ];
        for (p, offset, size) in ok {
            assert_eq!(loc(&btf, "outer", p), FieldLocation { offset, size }, "{p}");
        }
        assert_eq!(loc(&btf, "old", "c"), FieldLocation { offset: 0, size: 4 });
        expect_errs(
            &btf,
            &[
                ("outer", "flags", "field `outer.flags` is a bitfield"),
                ("outer", "odd", "field `outer.odd` is a bitfield"),
                ("old", "b", "field `old.b` is a bitfield"),
                (
                    "outer",
                    "p.x",
                    "`outer.p` is not a struct or union (pointer)",
                ),
                ("outer", "a.x", "`outer.a` is not a struct or union (int)"),
                ("outer", "nope", "struct `outer` has no field `nope`"),
                ("inner", "x.y", "`inner.x` is not a struct or union"),
            ],
        );
        let params = btf.tracepoint_params("foo").unwrap();
        assert_eq!(params, [("skb".to_owned(), "struct inner *".to_owned())]);
        assert!(matches!(
            btf.tracepoint_params("bad"),
            Err(BtfError::BadTracepoint { .. })
        ));
        assert!(btf.has_tracepoint("foo") && !btf.has_tracepoint("do_foo"));
        assert!(btf.has_function("do_foo") && !btf.has_function("btf_trace_foo"));
        assert_eq!(
            [4, 5].map(|id| btf.type_name(id, 0).unwrap()),
            ["const myint", "u16[8]"]
        );
    }

    #[test]
    fn malformed_headers() {
        let good = sample().build();
        for n in 0..HDR_LEN {
            assert!(parse_err(&good[..n]).contains("shorter than the header"));
        }
        let patch = |at: usize, bytes: &[u8]| {
            let mut v = good.clone();
            v[at..at + bytes.len()].copy_from_slice(bytes);
            v
        };
        let u = |x: u32| x.to_le_bytes();
        let last_str = 24 + sample().strs.len() - 1;
        let cases: &[(usize, &[u8], &str)] = &[
            (0, &[0x34, 0x12], "btf header: bad magic 0x1234"),
            (0, &[0xeb, 0x9f], "byte-swapped magic 0x9feb"),
            (2, &[2], "unsupported version 2"),
            (4, &u(8), "hdr_len 8 out of range"),
            (4, &u(10_000), "hdr_len 10000 out of range"),
            (4, &u(u32::MAX), "out of range"),
            (8, &u(100_000), "type section runs past the end"),
            (8, &u(u32::MAX), "type section runs past the end"),
            (12, &u(100_000), "type section runs past the end"),
            (12, &u(u32::MAX), "type section runs past the end"),
            (16, &u(100_000), "string section runs past the end"),
            (20, &u(u32::MAX), "string section runs past the end"),
            (20, &u(0), "string section is empty"),
            (last_str, b"x", "not NUL-delimited"),
        ];
        for &(at, bytes, want) in cases {
            let m = parse_err(&patch(at, bytes));
            assert!(m.contains(want), "{at} {bytes:?}: {m}");
        }
    }

    #[test]
    fn malformed_types() {
        let b = sample();
        let (full, tstart) = (b.build(), 24 + b.strs.len());
        for cut in 0..b.types.len() {
            let mut v = full[..tstart + cut].to_vec();
            set32(&mut v, 12, cut as u32);
            if let Some(i) = b.ends.iter().position(|&e| e == cut) {
                assert_eq!(Btf::from_bytes(&v).unwrap().types.len(), i + 1);
            } else {
                let id = b.ends.iter().position(|&e| e > cut).unwrap();
                assert_eq!(
                    parse_err(&v),
                    format!("type section truncated at type id {id}")
                );
            }
        }
        let vlen_past_end = |b: &mut B| {
            b.raw(0, info(STRUCT, 5, false), 4, &[0, 0, 0]);
        };
        let bad_name = |b: &mut B| {
            b.raw(99_999, info(INT, 0, false), 4, &[32]);
        };
        let kind = |k| {
            move |b: &mut B| {
                b.raw(0, info(k, 0, false), 0, &[]);
            }
        };
        for (f, want) in [
            (
                &vlen_past_end as &dyn Fn(&mut B),
                "type section truncated at type id 1",
            ),
            (&bad_name, "string offset 99999 out of range"),
            (&kind(0), "type id 1 has unknown kind 0"),
            (&kind(20), "type id 1 has unknown kind 20"),
            (&kind(31), "type id 1 has unknown kind 31"),
        ] {
            assert_eq!(B::parse(f).unwrap_err().to_string(), want);
        }
        // Problems only detectable when the types are used.
        let btf = B::parse(|b| {
            let int = b.ty("int", INT, 4, &[32]);
            let lp = b.ty("loop", TYPEDEF, 3, &[]); // 2 -> 3 -> 2
            b.ty("loop2", TYPEDEF, lp, &[]);
            let me = b.ty("self", TYPEDEF, 4, &[]);
            let arr = b.ty("", ARRAY, 0, &[lp, int, 4]);
            let ms = [
                ("bad", 500, 0),
                ("l", lp, 32),
                ("me", me, 64),
                ("a", arr, 96),
            ];
            b.comp(STRUCT, "s", false, &ms);
            let n = b.s("t");
            b.raw(n, info(STRUCT, 1, false), 4, &[123_456, int, 0]);
            let rec = b.ends.len() as u32;
            b.comp(STRUCT, "rec", false, &[("", rec, 0)]);
            let mut prev = int;
            for _ in 0..30 {
                prev = b.comp(STRUCT, "", false, &[("", prev, 0), ("", prev, 0)]);
            }
            b.comp(STRUCT, "dag", false, &[("", prev, 0)]); // 2^30 anonymous paths
        })
        .unwrap();
        expect_errs(
            &btf,
            &[
                ("s", "bad", "type id 500 out of range"),
                ("s", "l", "too deep or cyclic"),
                ("s", "me", "too deep or cyclic"),
                ("s", "a", "too deep or cyclic"),
                ("s", "l.x", "too deep or cyclic"),
                ("t", "x", "string offset 123456 out of range"),
                ("rec", "x", "too deep or cyclic"),
                ("dag", "x", "too deep or cyclic"),
            ],
        );
    }

    /// Header + the first `cut` bytes of the live type section + the live strings.
    fn live_prefix(cut: usize) -> Vec<u8> {
        let b = live();
        let tstart = b.types[1].extra - 12;
        let mut v = b.data[..4].to_vec();
        for w in [24, 0, cut as u32, cut as u32, b.strs.len() as u32] {
            v.extend(w.to_le_bytes());
        }
        v.extend(&b.data[tstart..tstart + cut]);
        v.extend(&b.data[b.strs.clone()]);
        v
    }

    #[test]
    fn live_truncated_type_section() {
        let b = live();
        let tlen = b.types.last().unwrap().extra - b.types[1].extra;
        for i in 1..24 {
            let cut = (tlen * i / 24) | 1; // odd, so never on a (4-byte aligned) type boundary
            assert!(parse_err(&live_prefix(cut)).starts_with("type section truncated"));
        }
        assert!(Btf::from_bytes(&b.data[..b.data.len() / 2]).is_err());
    }

    fn exercise(btf: &Btf) {
        let _ = btf.member_offset("sock", "__sk_common.skc_dport");
        let _ = btf.tracepoint_params("net_dev_start_xmit");
        for id in 0..btf.types.len().min(3000) as u32 {
            let _ = (btf.type_name(id, 0), btf.type_size(id, 0));
            let Ok((t, Ok(name))) = btf.ty(id).map(|t| (t, btf.str_at(t.name_off))) else {
                continue;
            };
            let composite = matches!(t.kind(), STRUCT | UNION);
            for i in 0..t.vlen().min(8) * usize::from(composite) {
                if let Ok(m) = btf.extra(&t, 3 * i).and_then(|o| btf.str_at(o)) {
                    let _ = btf.member_offset(name, m);
                    let _ = btf.member_offset(name, &format!("{m}.x"));
                }
            }
            if let Some(tp) = name.strip_prefix("btf_trace_") {
                let _ = btf.tracepoint_params(tp);
            }
        }
    }

    #[test]
    fn fuzz_flipped_live_prefix() {
        let b = live();
        let mut rel = b.types.iter().skip(1).map(|t| t.extra - b.types[1].extra);
        let cut = rel.find(|&s| s >= 64 << 10).unwrap(); // a type boundary
        let base = live_prefix(cut);
        exercise(&Btf::from_bytes(&base).unwrap());
        let mut state: u64 = 0x5eed;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 33) as usize
        };
        let mut parsed = 0;
        for iter in 0..300 {
            // Mostly the consistent prefix blob; every tenth the raw (inconsistent) first 64 KiB.
            let raw = iter % 10 == 9;
            let mut v = if raw {
                b.data[..64 << 10].to_vec()
            } else {
                base.clone()
            };
            for _ in 0..1 + next() % 4 {
                let at = next() % (24 + cut).min(v.len());
                v[at] ^= (next() % 255 + 1) as u8;
            }
            if let Ok(btf) = Btf::from_bytes(&v) {
                parsed += 1;
                exercise(&btf);
            }
        }
        eprintln!("fuzz: {parsed}/300 mutated blobs parsed");
    }
}

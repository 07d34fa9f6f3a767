//! Raw BTF (the kernel's Documentation/bpf/btf.rst: header, type section, string section) to
//! the typed model. Every length is checked against the data here, once, so lookups never
//! touch raw bytes.

use std::ops::Range;

use super::error::{BtfError, Result};
use super::types::{
    Array, Body, Composite, DatasecVar, Enum, EnumValue, FuncProto, Int, Kind, Member, Name, Param,
    Type, TypeId,
};

pub const HDR_LEN: usize = 24;
pub const MAGIC: u16 = 0xeb9f;

/// The string section and the types indexed by id (entry 0 is `void`).
pub struct Parsed {
    pub strings: Vec<u8>,
    pub types: Vec<Type>,
}

pub fn parse(data: &[u8]) -> Result<Parsed> {
    let (type_range, string_range) = sections(data)?;
    let out_of_range = |name| BtfError::SectionOutOfRange(name);
    let strings = data.get(string_range).ok_or(out_of_range("string"))?;
    // Leading and trailing NULs make every in-range offset a terminated string.
    if strings.first() != Some(&0) || strings.last() != Some(&0) {
        return Err(BtfError::BadStringSection);
    }
    let types = types(data.get(type_range).ok_or(out_of_range("type"))?)?;
    Ok(Parsed {
        strings: strings.to_vec(),
        types,
    })
}

/// Checks the header; returns the type and string sections' byte ranges.
fn sections(data: &[u8]) -> Result<(Range<usize>, Range<usize>)> {
    let len = data.len();
    let magic = data
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes);
    match magic {
        Some(MAGIC) => {}
        Some(m) if m == MAGIC.swap_bytes() => return Err(BtfError::SwappedMagic),
        Some(m) => return Err(BtfError::BadMagic(m)),
        None => return Err(BtfError::ShortHeader { len }),
    }
    let mut header = Words::new(data.get(4..).unwrap_or_default());
    let mut field = || header.next().ok_or(BtfError::ShortHeader { len });
    let (hdr_len, type_off, type_len) = (field()?, field()?, field()?);
    let (str_off, str_len) = (field()?, field()?);
    if let Some(&v) = data.get(2).filter(|&&v| v != 1) {
        return Err(BtfError::BadVersion(v));
    }
    let hdr_end = usize::try_from(hdr_len)
        .ok()
        .filter(|&h| (HDR_LEN..=len).contains(&h))
        .ok_or(BtfError::BadHeaderLen(hdr_len))?;
    // Section offsets count from the end of the header.
    let section = |name, off: u32, slen: u32| {
        let start = hdr_end.checked_add(off as usize);
        match start.and_then(|s| Some(s..s.checked_add(slen as usize)?)) {
            Some(r) if r.end <= len => Ok(r),
            _ => Err(BtfError::SectionOutOfRange(name)),
        }
    };
    Ok((
        section("type", type_off, type_len)?,
        section("string", str_off, str_len)?,
    ))
}

/// Little-endian u32 words, read front to back.
struct Words<'a> {
    data: &'a [u8],
}

impl<'a> Words<'a> {
    fn new(data: &'a [u8]) -> Self {
        Words { data }
    }

    fn next(&mut self) -> Option<u32> {
        let (word, rest) = self.data.split_first_chunk::<4>()?;
        self.data = rest;
        Some(u32::from_le_bytes(*word))
    }
}

/// Reads the words of type `id`: every shortfall is that type's truncation.
struct TypeReader<'w, 'a> {
    words: &'w mut Words<'a>,
    id: TypeId,
}

impl TypeReader<'_, '_> {
    fn word(&mut self) -> Result<u32> {
        self.words.next().ok_or(BtfError::TypeTruncated(self.id))
    }

    fn id(&mut self) -> Result<TypeId> {
        self.word().map(TypeId)
    }

    fn name(&mut self) -> Result<Name> {
        self.word().map(Name)
    }

    /// `count` entries of `each` words each, checked before allocating so a bogus count costs
    /// nothing.
    fn entries<T>(
        &mut self,
        count: usize,
        each: usize,
        mut read: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        if self.words.data.len() / 4 < count * each {
            return Err(BtfError::TypeTruncated(self.id));
        }
        (0..count).map(|_| read(self)).collect()
    }
}

fn types(section: &[u8]) -> Result<Vec<Type>> {
    let mut types = vec![Type {
        name: Name(0),
        body: Body::Void,
    }];
    let mut words = Words::new(section);
    while !words.data.is_empty() {
        let id = u32::try_from(types.len()).map_err(|_| BtfError::TooManyTypes)?;
        let reader = TypeReader {
            words: &mut words,
            id: TypeId(id),
        };
        types.push(read_type(reader)?);
    }
    Ok(types)
}

/// One `struct btf_type` and the kind-specific data that follows it.
fn read_type(mut r: TypeReader) -> Result<Type> {
    let (name, info, size_or_type) = (r.name()?, r.word()?, r.word()?);
    let raw_kind = ((info >> 24) & 0x1f) as u8;
    let id = r.id;
    let unknown = || BtfError::UnknownKind { id, kind: raw_kind };
    let kind = Kind::from_raw(raw_kind).ok_or_else(unknown)?;
    let vlen = (info & 0xffff) as usize;
    let kind_flag = info >> 31 == 1;
    let target = TypeId(size_or_type);
    let body = match kind {
        // `from_raw` never yields it: void is implicit.
        Kind::Void => return Err(unknown()),
        Kind::Int => {
            let bits = r.word()?;
            Body::Int(Int {
                size: size_or_type,
                encoding: ((bits >> 24) & 0x0f) as u8,
                offset: (bits >> 16) as u8,
                bits: bits as u8,
            })
        }
        Kind::Ptr => Body::Ptr(target),
        Kind::Array => {
            let (elem, index, len) = (r.id()?, r.id()?, r.word()?);
            Body::Array(Array { elem, index, len })
        }
        Kind::Struct | Kind::Union => {
            let members = r.entries(vlen, 3, |r| {
                let (name, ty, offset) = (r.name()?, r.id()?, r.word()?);
                let (bit_offset, bitfield_size) = match kind_flag {
                    true => (offset & 0xff_ffff, (offset >> 24) as u8),
                    false => (offset, 0),
                };
                Ok(Member {
                    name,
                    ty,
                    bit_offset,
                    bitfield_size,
                })
            })?;
            let composite = Composite {
                size: size_or_type,
                sized_bitfields: kind_flag,
                members,
            };
            match kind {
                Kind::Struct => Body::Struct(composite),
                _ => Body::Union(composite),
            }
        }
        Kind::Enum => Body::Enum(Enum {
            size: size_or_type,
            signed: kind_flag,
            values: r.entries(vlen, 2, |r| {
                let (name, value) = (r.name()?, r.word()?);
                let value = u64::from(value);
                Ok(EnumValue { name, value })
            })?,
        }),
        Kind::Enum64 => Body::Enum64(Enum {
            size: size_or_type,
            signed: kind_flag,
            values: r.entries(vlen, 3, |r| {
                let (name, lo, hi) = (r.name()?, r.word()?, r.word()?);
                let value = u64::from(hi) << 32 | u64::from(lo);
                Ok(EnumValue { name, value })
            })?,
        }),
        Kind::Fwd => Body::Fwd { union: kind_flag },
        Kind::Typedef => Body::Typedef(target),
        Kind::Volatile => Body::Volatile(target),
        Kind::Const => Body::Const(target),
        Kind::Restrict => Body::Restrict(target),
        Kind::Func => Body::Func {
            proto: target,
            linkage: vlen as u16, // vlen is 16 bits
        },
        Kind::FuncProto => Body::FuncProto(FuncProto {
            ret: target,
            params: r.entries(vlen, 2, |r| {
                let (name, ty) = (r.name()?, r.id()?);
                Ok(Param { name, ty })
            })?,
        }),
        Kind::Var => Body::Var {
            ty: target,
            linkage: r.word()?,
        },
        Kind::Datasec => Body::Datasec {
            size: size_or_type,
            vars: r.entries(vlen, 3, |r| {
                let (ty, offset, size) = (r.id()?, r.word()?, r.word()?);
                Ok(DatasecVar { ty, offset, size })
            })?,
        },
        Kind::Float => Body::Float { size: size_or_type },
        Kind::DeclTag => Body::DeclTag {
            target,
            component: r.word()?,
            attribute: kind_flag,
        },
        Kind::TypeTag => Body::TypeTag {
            target,
            attribute: kind_flag,
        },
    };
    Ok(Type { name, body })
}

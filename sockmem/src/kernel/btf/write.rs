//! Writes BTF: the raw builder the malformed-input tests use, and the encoder that turns the
//! typed model back into raw types (for the fixture generator and the round-trip test).

use std::collections::HashMap;

use super::error::Result;
use super::parse::{HDR_LEN, MAGIC};
use super::types::{Body, Kind, Name, Type, TypeId};

pub fn info(kind: Kind, vlen: u32, kind_flag: bool) -> u32 {
    (u32::from(kind_flag) << 31) | ((kind as u32) << 24) | vlen
}

/// Raw BTF under construction: types and strings appended in order.
pub struct Builder {
    pub types: Vec<u8>,
    pub strings: Vec<u8>,
    /// `ends[id]`: where type `id` ends in `types`.
    pub ends: Vec<usize>,
    interned: HashMap<String, u32>,
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            types: vec![],
            strings: vec![0],
            ends: vec![0],
            interned: HashMap::new(),
        }
    }

    /// Offset of `name` in the string section, added on first use; "" is offset 0.
    pub fn string(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        if let Some(&off) = self.interned.get(name) {
            return off;
        }
        let off = self.strings.len() as u32;
        self.strings.extend(name.bytes().chain([0]));
        self.interned.insert(name.to_owned(), off);
        off
    }

    /// Appends one type's words; returns its id.
    pub fn push(&mut self, words: &[u32]) -> u32 {
        for w in words {
            self.types.extend(w.to_le_bytes());
        }
        self.ends.push(self.types.len());
        self.ends.len() as u32 - 1
    }

    pub fn raw(&mut self, name_off: u32, info: u32, size_or_type: u32, extra: &[u32]) -> u32 {
        let words: Vec<u32> = [name_off, info, size_or_type]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        self.push(&words)
    }

    pub fn named(&mut self, name: &str, info: u32, size_or_type: u32, extra: &[u32]) -> u32 {
        let n = self.string(name);
        self.raw(n, info, size_or_type, extra)
    }

    /// A type of a kind without vlen or kind_flag.
    pub fn ty(&mut self, name: &str, kind: Kind, size_or_type: u32, extra: &[u32]) -> u32 {
        self.named(name, info(kind, 0, false), size_or_type, extra)
    }

    /// A struct or union; `members` holds (name, type, offset word).
    pub fn composite(
        &mut self,
        kind: Kind,
        name: &str,
        kind_flag: bool,
        members: &[(&str, u32, u32)],
    ) -> u32 {
        let n = self.string(name);
        let words: Vec<u32> = members
            .iter()
            .flat_map(|&(m, t, o)| [self.string(m), t, o])
            .collect();
        let vlen = members.len() as u32;
        self.raw(n, info(kind, vlen, kind_flag), 4 * vlen, &words)
    }

    fn header(&self, type_off: usize, str_off: usize) -> Vec<u8> {
        let mut v = MAGIC.to_le_bytes().to_vec();
        v.extend([1, 0]); // version, flags
        let (tl, sl) = (self.types.len(), self.strings.len());
        for w in [HDR_LEN, type_off, tl, str_off, sl] {
            v.extend((w as u32).to_le_bytes());
        }
        v
    }

    /// Header, strings, then types: cutting the blob's tail cuts types.
    pub fn build(&self) -> Vec<u8> {
        let mut v = self.header(self.strings.len(), 0);
        v.extend(self.strings.iter().chain(&self.types));
        v
    }

    /// Header, types, then strings, as the kernel and pahole lay BTF out.
    pub fn build_standard(&self) -> Vec<u8> {
        let mut v = self.header(0, self.types.len());
        v.extend(self.types.iter().chain(&self.strings));
        v
    }
}

/// The raw words of `ty`: `name` gives each name's string offset, `id` each referenced type's
/// id. `void` has no words: it is never in the type section.
pub fn encode(
    ty: &Type,
    name: &mut dyn FnMut(Name) -> Result<u32>,
    id: &dyn Fn(TypeId) -> u32,
) -> Result<Vec<u32>> {
    let mut data = vec![];
    // (vlen, kind_flag, size_or_type), then the kind-specific words in `data`.
    let (vlen, kind_flag, size_or_type) = match &ty.body {
        Body::Void => return Ok(vec![]),
        Body::Int(int) => {
            let bits =
                u32::from(int.encoding) << 24 | u32::from(int.offset) << 16 | u32::from(int.bits);
            data.push(bits);
            (0, false, int.size)
        }
        Body::Ptr(t)
        | Body::Typedef(t)
        | Body::Volatile(t)
        | Body::Const(t)
        | Body::Restrict(t) => (0, false, id(*t)),
        Body::Array(a) => {
            data.extend([id(a.elem), id(a.index), a.len]);
            (0, false, 0)
        }
        Body::Struct(c) | Body::Union(c) => {
            for m in &c.members {
                let offset = match c.sized_bitfields {
                    true => u32::from(m.bitfield_size) << 24 | m.bit_offset,
                    false => m.bit_offset,
                };
                data.extend([name(m.name)?, id(m.ty), offset]);
            }
            (c.members.len(), c.sized_bitfields, c.size)
        }
        Body::Enum(e) => {
            for v in &e.values {
                data.extend([name(v.name)?, v.value as u32]);
            }
            (e.values.len(), e.signed, e.size)
        }
        Body::Enum64(e) => {
            for v in &e.values {
                data.extend([name(v.name)?, v.value as u32, (v.value >> 32) as u32]);
            }
            (e.values.len(), e.signed, e.size)
        }
        Body::Fwd { union } => (0, *union, 0),
        Body::Func { proto, linkage } => (usize::from(*linkage), false, id(*proto)),
        Body::FuncProto(proto) => {
            for p in &proto.params {
                data.extend([name(p.name)?, id(p.ty)]);
            }
            (proto.params.len(), false, id(proto.ret))
        }
        Body::Var { ty, linkage } => {
            data.push(*linkage);
            (0, false, id(*ty))
        }
        Body::Datasec { size, vars } => {
            for v in vars {
                data.extend([id(v.ty), v.offset, v.size]);
            }
            (vars.len(), false, *size)
        }
        Body::Float { size } => (0, false, *size),
        Body::DeclTag {
            target,
            component,
            attribute,
        } => {
            data.push(*component);
            (0, *attribute, id(*target))
        }
        Body::TypeTag { target, attribute } => (0, *attribute, id(*target)),
    };
    let info = info(ty.body.kind(), vlen as u32, kind_flag);
    let mut words = vec![name(ty.name)?, info, size_or_type];
    words.extend(data);
    Ok(words)
}

//! Our own reader of raw kernel BTF (`/sys/kernel/btf/vmlinux`, format per the kernel's
//! Documentation/bpf/btf.rst). Rust eBPF has no CO-RE, so the struct field offsets the programs
//! read are resolved here at load time and handed to them; tracepoint signatures and function
//! presence are checked here too.
//!
//! Why not a crate: aya-obj parses BTF but keeps its member lookup private, and btf-rs is
//! LGPL-licensed, which does not fit this MIT/Apache-2.0 tool.
//!
//! `parse` turns the raw format into the typed model of `types` once; the lookups here walk
//! that model. Malformed input is a [`BtfError`], never a panic, and every walk over type
//! references is bounded, so cyclic types cannot loop.

mod error;
#[cfg(test)]
pub(crate) mod fixture;
mod parse;
#[cfg(test)]
mod tests;
mod types;
#[cfg(test)]
mod write;

use std::collections::HashMap;
use std::path::Path;

pub use error::BtfError;
use error::Result;
use types::{Body, Composite, Member, Name, Type, TypeId};

pub const VMLINUX_PATH: &str = "/sys/kernel/btf/vmlinux";
/// Bounds type chasing so malformed (cyclic) data cannot loop forever.
const MAX_DEPTH: u32 = 32;
/// Bounds the anonymous-member search so a crafted DAG cannot blow up exponentially.
const VISIT_BUDGET: u32 = 1 << 20;

/// Byte offset and byte size of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLocation {
    pub offset: u32,
    pub size: u32,
}

/// Member `index` of composite `container`: one step of the way to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    container: TypeId,
    index: usize,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Indexed by type id; entry 0 is the implicit `void`.
    types: Vec<Type>,
    by_name: HashMap<String, Vec<TypeId>>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (types, strings) = (self.types.len(), self.strings.len());
        write!(f, "Btf({types} types, {strings} bytes of strings)")
    }
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
        Self::from_bytes(&data)
    }

    pub fn from_bytes(data: &[u8]) -> Result<Btf> {
        let parse::Parsed { strings, types } = parse::parse(data)?;
        let mut btf = Btf {
            strings,
            types,
            by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<TypeId>> = HashMap::with_capacity(btf.types.len());
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.name == Name(0) {
                continue;
            }
            let id = TypeId(id as u32); // fits: parse counts ids in u32
            let name = btf.name(ty.name)?;
            match by_name.get_mut(name) {
                Some(ids) => ids.push(id),
                None => drop(by_name.insert(name.to_owned(), vec![id])),
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn name(&self, name: Name) -> Result<&str> {
        // The section ends in NUL (checked by parse), so only a start past the end has none.
        let rest = self.strings.get(name.0 as usize..).unwrap_or_default();
        let s = rest.split(|&b| b == 0).next();
        let s = s.filter(|s| s.len() < rest.len());
        let s = s.ok_or(BtfError::StringOutOfRange(name.0))?;
        std::str::from_utf8(s).map_err(|_| BtfError::BadUtf8(name.0))
    }

    fn get(&self, id: TypeId) -> Result<&Type> {
        self.types
            .get(id.0 as usize)
            .ok_or(BtfError::TypeIdOutOfRange(id))
    }

    /// Follows typedefs and qualifiers to the type that has the layout.
    fn strip(&self, mut id: TypeId) -> Result<TypeId> {
        for _ in 0..=MAX_DEPTH {
            match self.get(id)?.body.alias_of() {
                Some(target) => id = target,
                None => return Ok(id),
            }
        }
        Err(BtfError::TooDeep(id))
    }

    fn size_of(&self, id: TypeId, depth: u32) -> Result<u32> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let id = self.strip(id)?;
        match &self.get(id)?.body {
            Body::Int(int) => Ok(int.size),
            Body::Struct(c) | Body::Union(c) => Ok(c.size),
            Body::Enum(e) | Body::Enum64(e) => Ok(e.size),
            Body::Float { size } => Ok(*size),
            Body::Ptr(_) => Ok(8),
            Body::Array(a) => {
                let elem = self.size_of(a.elem, depth + 1)?;
                elem.checked_mul(a.len).ok_or(BtfError::Overflow(id))
            }
            body => Err(BtfError::Unsized {
                id,
                kind: body.kind(),
            }),
        }
    }

    /// Types called `name`.
    fn named(&self, name: &str) -> impl Iterator<Item = (TypeId, &Type)> + '_ {
        let ids = self
            .by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        ids.iter()
            .filter_map(|&id| Some((id, self.types.get(id.0 as usize)?)))
    }

    /// Prefers a complete struct, then a complete union, over forward decls and empty duplicates.
    fn find_composite(&self, name: &str) -> Result<TypeId> {
        let rank = |body: &Body| {
            let complete = |c: &Composite| !c.members.is_empty() || c.size > 0;
            match body {
                Body::Struct(c) if complete(c) => Some(0),
                Body::Union(c) if complete(c) => Some(1),
                Body::Struct(_) => Some(2),
                Body::Union(_) => Some(3),
                _ => None,
            }
        };
        let best = self
            .named(name)
            .filter_map(|(id, t)| Some((rank(&t.body)?, id)))
            .min();
        best.map(|(_, id)| id)
            .ok_or_else(|| BtfError::TypeNotFound(format!("struct {name}")))
    }

    fn composite(&self, id: TypeId) -> Option<&Composite> {
        self.types.get(id.0 as usize)?.body.composite()
    }

    /// The member a step points at, and the composite holding it.
    fn step(&self, step: Step) -> Result<(&Composite, &Member)> {
        let composite = self.composite(step.container);
        let member = composite.and_then(|c| Some((c, c.members.get(step.index)?)));
        member.ok_or(BtfError::TypeIdOutOfRange(step.container))
    }

    /// Finds member `name` of composite `id`, looking through anonymous struct/union members.
    /// Returns the steps from `id` to it: the anonymous members passed through, then the member.
    fn find_member(
        &self,
        id: TypeId,
        name: &str,
        depth: u32,
        budget: &mut u32,
    ) -> Result<Option<Vec<Step>>> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let Some(composite) = self.composite(id) else {
            return Ok(None);
        };
        for (index, member) in composite.members.iter().enumerate() {
            *budget = budget.checked_sub(1).ok_or(BtfError::TooDeep(id))?;
            let here = Step {
                container: id,
                index,
            };
            let member_name = self.name(member.name)?;
            if member_name == name {
                return Ok(Some(vec![here]));
            }
            if !member_name.is_empty() {
                continue;
            }
            let inner = self.strip(member.ty)?;
            if let Some(mut steps) = self.find_member(inner, name, depth + 1, budget)? {
                steps.insert(0, here);
                return Ok(Some(steps));
            }
        }
        Ok(None)
    }

    fn is_bitfield(&self, composite: &Composite, member: &Member) -> Result<bool> {
        if member.bitfield_size != 0 || !member.bit_offset.is_multiple_of(8) {
            return Ok(true);
        }
        // Without kind_flag, bitfields are ints of partial width.
        let ty = &self.get(member.ty)?.body;
        Ok(!composite.sized_bitfields && matches!(ty, Body::Int(int) if int.is_partial()))
    }

    /// The steps from struct `struct_name` to the field at `path`; every member passed must
    /// be a whole-byte field of a struct or union.
    fn field_steps(&self, struct_name: &str, path: &str) -> Result<Vec<Step>> {
        let mut cur = self.find_composite(struct_name)?;
        if path.split('.').any(str::is_empty) {
            return Err(BtfError::BadPath(path.to_owned()));
        }
        let (mut steps, mut walked) = (Vec::new(), struct_name.to_owned());
        for part in path.split('.') {
            let id = self.strip(cur)?;
            let kind = self.get(id)?.body.kind();
            if self.composite(id).is_none() {
                let next = part.to_owned();
                return Err(BtfError::NotComposite {
                    field: walked,
                    kind,
                    next,
                });
            }
            let mut budget = VISIT_BUDGET;
            let found = self.find_member(id, part, 0, &mut budget)?;
            let found = found.ok_or_else(|| BtfError::NoField {
                kind,
                container: walked.clone(),
                field: part.to_owned(),
            })?;
            walked = format!("{walked}.{part}");
            if let Some(&last) = found.last() {
                let (composite, member) = self.step(last)?;
                if self.is_bitfield(composite, member)? {
                    return Err(BtfError::Bitfield(walked));
                }
                cur = member.ty;
            }
            steps.extend(found);
        }
        Ok(steps)
    }

    /// Byte offset and byte size of a possibly nested field, e.g.
    /// `member_offset("sock", "__sk_common.skc_family")`. Members of anonymous structs and
    /// unions are found as if direct members; typedefs and qualifiers are followed.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<FieldLocation> {
        let steps = self.field_steps(struct_name, path)?;
        let (mut bits, mut ty) = (0u64, TypeId::VOID);
        for &step in &steps {
            let member = self.step(step)?.1;
            bits = bits
                .checked_add(u64::from(member.bit_offset))
                .ok_or(BtfError::Overflow(step.container))?;
            ty = member.ty;
        }
        let offset = u32::try_from(bits / 8).map_err(|_| BtfError::Overflow(ty))?;
        Ok(FieldLocation {
            offset,
            size: self.size_of(ty, 0)?,
        })
    }

    fn tracepoint_typedef(&self, name: &str) -> Option<TypeId> {
        let mut ids = self
            .named(&format!("btf_trace_{name}"))
            .filter(|(_, t)| matches!(t.body, Body::Typedef(_)));
        ids.next().map(|(id, _)| id)
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
        let no_proto = "typedef is not a pointer to a function prototype with parameters";
        let Body::Ptr(pointee) = self.get(self.strip(id)?)?.body else {
            return Err(bad(no_proto));
        };
        let Body::FuncProto(proto) = &self.get(self.strip(pointee)?)?.body else {
            return Err(bad(no_proto));
        };
        let (ctx, params) = proto.params.split_first().ok_or(bad(no_proto))?;
        let is_void_ptr = match self.get(self.strip(ctx.ty)?)?.body {
            Body::Ptr(target) => self.strip(target)? == TypeId::VOID,
            _ => false,
        };
        if !is_void_ptr {
            return Err(bad("first parameter is not `void *`"));
        }
        params
            .iter()
            .map(|p| Ok((self.name(p.name)?.to_owned(), self.type_name(p.ty, 0)?)))
            .collect()
    }

    /// The enumerators of a named `enum` (or `enum64`): `(name, value)` in declaration order.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let e = self
            .named(name)
            .find_map(|(_, t)| match &t.body {
                Body::Enum(e) | Body::Enum64(e) => Some(e),
                _ => None,
            })
            .ok_or_else(|| BtfError::TypeNotFound(name.to_owned()))?;
        e.values
            .iter()
            .map(|v| Ok((self.name(v.name)?.to_owned(), v.value)))
            .collect()
    }

    /// `sizeof(struct name)`.
    pub fn struct_size(&self, name: &str) -> Result<u32> {
        let id = self.find_composite(name)?;
        self.size_of(id, 0)
    }

    /// Whether a kernel function (BTF FUNC) with this exact name exists.
    pub fn has_function(&self, name: &str) -> bool {
        self.named(name)
            .any(|(_, t)| matches!(t.body, Body::Func { .. }))
    }

    /// C-like spelling of a type, e.g. `struct sk_buff *` or `const char *`.
    fn type_name(&self, id: TypeId, depth: u32) -> Result<String> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let ty = self.get(id)?;
        let name = self.name(ty.name)?;
        let named = |prefix: &str| match name {
            "" => format!("{prefix} (anonymous)"),
            n => format!("{prefix} {n}"),
        };
        let inner = |target| self.type_name(target, depth + 1);
        Ok(match ty.body {
            Body::Void => "void".to_owned(),
            Body::Struct(_) | Body::Fwd { union: false } => named("struct"),
            Body::Union(_) | Body::Fwd { union: true } => named("union"),
            Body::Enum(_) | Body::Enum64(_) => named("enum"),
            Body::Ptr(target) => {
                let s = inner(target)?;
                let sep = if s.ends_with('*') { "" } else { " " };
                format!("{s}{sep}*")
            }
            Body::Const(target) => format!("const {}", inner(target)?),
            Body::Volatile(target) => format!("volatile {}", inner(target)?),
            Body::Restrict(target) => format!("{} restrict", inner(target)?),
            Body::TypeTag { target, .. } => inner(target)?,
            Body::Array(a) => format!("{}[{}]", inner(a.elem)?, a.len),
            Body::FuncProto(_) => "function".to_owned(),
            _ => name.to_owned(),
        })
    }
}

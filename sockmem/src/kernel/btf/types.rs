//! The typed model of BTF: every type's kind and kind-specific data, decoded once by
//! [`parse`](super::parse) so lookups match on variants instead of reading raw words.
//!
//! The model keeps everything the format defines, including what no lookup reads (enum values,
//! linkage, datasec entries), so a parsed BTF can be written back exactly: the fixture generator
//! and the round-trip test do that.

use std::fmt;

/// A type id; 0 is the implicit `void`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeId(pub u32);

impl TypeId {
    pub const VOID: TypeId = TypeId(0);
}

impl fmt::Display for TypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A name: an offset into the string section, resolved by `Btf::name`. Offset 0 is the
/// empty name of anonymous types and members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Name(pub u32);

/// `BTF_KIND_*`, with the kernel's numbering. `Void` is only the implicit type 0: the type
/// section never holds kind 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Void = 0,
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    Datasec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

impl Kind {
    /// The kind of a type-section entry; `None` for 0 and for kinds newer than this parser.
    pub fn from_raw(raw: u8) -> Option<Kind> {
        use Kind::*;
        const IN_SECTION: [Kind; 19] = [
            Int, Ptr, Array, Struct, Union, Enum, Fwd, Typedef, Volatile, Const, Restrict, Func,
            FuncProto, Var, Datasec, Float, DeclTag, TypeTag, Enum64,
        ];
        IN_SECTION.get(usize::from(raw).checked_sub(1)?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Void => "void",
            Kind::Int => "int",
            Kind::Ptr => "pointer",
            Kind::Array => "array",
            Kind::Struct => "struct",
            Kind::Union => "union",
            Kind::Enum => "enum",
            Kind::Fwd => "fwd",
            Kind::Typedef => "typedef",
            Kind::Volatile => "volatile",
            Kind::Const => "const",
            Kind::Restrict => "restrict",
            Kind::Func => "func",
            Kind::FuncProto => "func_proto",
            Kind::Var => "var",
            Kind::Datasec => "datasec",
            Kind::Float => "float",
            Kind::DeclTag => "decl_tag",
            Kind::TypeTag => "type_tag",
            Kind::Enum64 => "enum64",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One type: its name (empty for anonymous and unnamed kinds) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    pub name: Name,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Void,
    Int(Int),
    Ptr(TypeId),
    Array(Array),
    Struct(Composite),
    Union(Composite),
    Enum(Enum),
    Fwd {
        union: bool,
    },
    Typedef(TypeId),
    Volatile(TypeId),
    Const(TypeId),
    Restrict(TypeId),
    Func {
        proto: TypeId,
        linkage: u16,
    },
    FuncProto(FuncProto),
    Var {
        ty: TypeId,
        linkage: u32,
    },
    Datasec {
        size: u32,
        vars: Vec<DatasecVar>,
    },
    Float {
        size: u32,
    },
    /// `component` is a member or parameter index, `u32::MAX` for the target itself;
    /// `attribute` (kind_flag) marks a plain `__attribute__` rather than `btf_decl_tag`.
    DeclTag {
        target: TypeId,
        component: u32,
        attribute: bool,
    },
    TypeTag {
        target: TypeId,
        attribute: bool,
    },
    Enum64(Enum),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Void => Kind::Void,
            Body::Int(_) => Kind::Int,
            Body::Ptr(_) => Kind::Ptr,
            Body::Array(_) => Kind::Array,
            Body::Struct(_) => Kind::Struct,
            Body::Union(_) => Kind::Union,
            Body::Enum(_) => Kind::Enum,
            Body::Fwd { .. } => Kind::Fwd,
            Body::Typedef(_) => Kind::Typedef,
            Body::Volatile(_) => Kind::Volatile,
            Body::Const(_) => Kind::Const,
            Body::Restrict(_) => Kind::Restrict,
            Body::Func { .. } => Kind::Func,
            Body::FuncProto(_) => Kind::FuncProto,
            Body::Var { .. } => Kind::Var,
            Body::Datasec { .. } => Kind::Datasec,
            Body::Float { .. } => Kind::Float,
            Body::DeclTag { .. } => Kind::DeclTag,
            Body::TypeTag { .. } => Kind::TypeTag,
            Body::Enum64(_) => Kind::Enum64,
        }
    }

    /// The type a typedef names or a qualifier qualifies: these have no layout of their own.
    pub fn alias_of(&self) -> Option<TypeId> {
        match *self {
            Body::Typedef(t)
            | Body::Volatile(t)
            | Body::Const(t)
            | Body::Restrict(t)
            | Body::TypeTag { target: t, .. } => Some(t),
            _ => None,
        }
    }

    /// The members of a struct or union.
    pub fn composite(&self) -> Option<&Composite> {
        match self {
            Body::Struct(c) | Body::Union(c) => Some(c),
            _ => None,
        }
    }
}

/// `BTF_KIND_INT`: `bits` wide at `offset` bits into `size` bytes; `encoding` holds the
/// signed/char/bool flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int {
    pub size: u32,
    pub encoding: u8,
    pub offset: u8,
    pub bits: u8,
}

impl Int {
    /// Whether only part of the storage holds the value: how bitfields are typed when the
    /// struct's kind_flag is clear.
    pub fn is_partial(&self) -> bool {
        self.offset != 0 || u64::from(self.bits) != u64::from(self.size) * 8
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Array {
    pub elem: TypeId,
    pub index: TypeId,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composite {
    pub size: u32,
    /// kind_flag: each member's offset word carries its bitfield size. Without it bitfields
    /// are typed as partial-width ints instead.
    pub sized_bitfields: bool,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub name: Name,
    pub ty: TypeId,
    pub bit_offset: u32,
    /// Non-zero only for bitfields of a `sized_bitfields` composite.
    pub bitfield_size: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    pub size: u32,
    pub signed: bool,
    pub values: Vec<EnumValue>,
}

/// An enumerator; `value` holds the raw bits (32 of them for `BTF_KIND_ENUM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnumValue {
    pub name: Name,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncProto {
    pub ret: TypeId,
    /// A trailing parameter of type void with no name marks a variadic function.
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: Name,
    pub ty: TypeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasecVar {
    pub ty: TypeId,
    pub offset: u32,
    pub size: u32,
}

//! Lookups on the fixture (a real kernel's BTF, cut down) and on synthetic BTF; malformed and
//! mutated input must give errors, never panics or endless loops.

use super::fixture;
use super::types::Kind;
use super::write::{encode, info, Builder};
use super::*;

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

/// The type section of a BTF blob, per its header.
fn type_section(blob: &[u8]) -> &[u8] {
    let word = |i: usize| u32::from_le_bytes(blob[4 + 4 * i..8 + 4 * i].try_into().unwrap());
    let start = (word(0) + word(1)) as usize;
    &blob[start..start + word(2) as usize]
}

/// The type section written back from the typed model, names and ids unchanged.
fn reencode(btf: &Btf) -> Vec<u8> {
    let mut out = Vec::new();
    for ty in &btf.types {
        let words = encode(ty, &mut |n| Ok(n.0), &|id| id.0).unwrap();
        out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    }
    out
}

#[test]
fn fixture_sock_fields() {
    let b = fixture::btf();
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
fn fixture_skb_and_netdev_fields() {
    let b = fixture::btf();
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
fn fixture_tracepoints_and_functions() {
    let b = fixture::btf();
    let p = b.tracepoint_params("net_dev_start_xmit").unwrap();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].1.contains("sk_buff"), "{p:?}");
    assert!(p[1].1.ends_with("struct net_device *"), "{p:?}"); // const in newer kernels
    let q = b.tracepoint_params("qdisc_enqueue").unwrap();
    assert_eq!(q.len(), 3, "{q:?}");
    assert_eq!(q[2].1, "struct sk_buff *");
    let k = b.tracepoint_params("kfree_skb").unwrap();
    assert_eq!(k[2].1, "enum skb_drop_reason", "{k:?}");
    let e = b.tracepoint_params("no_such_tp").unwrap_err().to_string();
    assert_eq!(
        e,
        "tracepoint `no_such_tp` not found in BTF (no typedef `btf_trace_no_such_tp`)"
    );
    assert!(b.has_function("tcp_sendmsg"));
    assert!(!b.has_function("no_such_function_xyz") && !b.has_function("sock"));
}

#[test]
fn fixture_errors() {
    expect_errs(
        fixture::btf(),
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

/// Writing the typed model back gives the input, byte for byte: the parse keeps everything.
#[test]
fn typed_model_round_trips() {
    let sample = sample();
    let btf = Btf::from_bytes(&sample.build()).unwrap();
    assert_eq!(reencode(&btf), sample.types);
    assert_eq!(reencode(fixture::btf()), type_section(fixture::BTF));
}

#[test]
fn live_typed_model_round_trips() {
    let Ok(raw) = std::fs::read(VMLINUX_PATH) else {
        return eprintln!("skipped: no `{VMLINUX_PATH}`");
    };
    let t = std::time::Instant::now();
    let btf = Btf::from_bytes(&raw).unwrap();
    eprintln!("parsed live {btf:?} in {:?}", t.elapsed());
    assert!(btf.types.len() > 10_000);
    assert!(
        reencode(&btf) == type_section(&raw),
        "live BTF re-encodes differently"
    );
}

fn sample() -> Builder {
    let mut b = Builder::new();
    let int = b.ty("int", Kind::Int, 4, &[32]); // 1
    let u16_ = b.ty("u16", Kind::Int, 2, &[16]); // 2
    let td = b.ty("myint", Kind::Typedef, int, &[]); // 3
    let cst = b.ty("", Kind::Const, td, &[]); // 4
    let arr = b.ty("", Kind::Array, 0, &[u16_, int, 8]); // 5
    let lohi = [("lo", u16_, 0), ("hi", u16_, 16)];
    let lohi = b.composite(Kind::Struct, "", false, &lohi);
    let un = b.composite(Kind::Union, "", false, &[("word", int, 0), ("", lohi, 0)]);
    let xy = [("x", int, 0), ("y", int, 32)];
    let inner = b.composite(Kind::Struct, "inner", false, &xy);
    let ptr = b.ty("", Kind::Ptr, inner, &[]);
    b.ty("outer", Kind::Fwd, 0, &[]);
    b.composite(Kind::Struct, "outer", false, &[]); // empty duplicate must not win
    let members = [
        ("a", cst, 0),
        ("", un, 32),
        ("flags", int, (3 << 24) | 64), // kind_flag bitfield of 3 bits
        ("odd", u16_, 76),              // not byte aligned
        ("arr", arr, 96),
        ("p", ptr, 256),
        ("in", inner, 320),
    ];
    let outer = b.composite(Kind::Struct, "outer", true, &members);
    let bits3 = b.ty("u3", Kind::Int, 1, &[3]); // old-style bitfield: 3-bit INT
    b.composite(
        Kind::Struct,
        "old",
        false,
        &[("b", bits3, 0), ("c", int, 0)],
    );
    let void_ptr = b.ty("", Kind::Ptr, 0, &[]);
    let skb = b.string("skb");
    let params = [0, void_ptr, skb, ptr];
    let proto = b.raw(0, info(Kind::FuncProto, 2, false), 0, &params);
    let pp = b.ty("", Kind::Ptr, proto, &[]);
    b.ty("btf_trace_foo", Kind::Typedef, pp, &[]);
    b.ty("btf_trace_bad", Kind::Typedef, int, &[]);
    b.named("do_foo", info(Kind::Func, 1, false), proto, &[]);
    // One of every other kind, for the round trip and the fuzzing.
    let values = [b.string("A"), 0, b.string("B"), u32::MAX];
    b.named("e", info(Kind::Enum, 2, true), 4, &values);
    let values = [b.string("C"), 1, 1 << 31];
    b.named("e64", info(Kind::Enum64, 1, false), 8, &values);
    b.ty("double", Kind::Float, 8, &[]);
    b.ty("", Kind::Volatile, int, &[]);
    b.ty("", Kind::Restrict, ptr, &[]);
    b.named("user", info(Kind::TypeTag, 0, true), int, &[]);
    b.named("tag", info(Kind::DeclTag, 0, false), outer, &[1]);
    let var = b.named("v", info(Kind::Var, 0, false), int, &[1]);
    b.named(".data", info(Kind::Datasec, 1, false), 4, &[var, 0, 4]);
    b.named("u", info(Kind::Fwd, 0, true), 0, &[]);
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
    assert!(matches!(
        btf.tracepoint_params("do_foo"),
        Err(BtfError::TracepointNotFound(_))
    ));
    assert!(btf.has_function("do_foo") && !btf.has_function("btf_trace_foo"));
    let names = [4, 5, 21, 24, 25, 30].map(|id| btf.type_name(TypeId(id), 0).unwrap());
    let want = [
        "const myint",
        "u16[8]",
        "enum e",
        "volatile int",
        "struct inner * restrict",
        "union u",
    ];
    assert_eq!(names, want);
    assert_eq!(
        [22, 23].map(|id| btf.size_of(TypeId(id), 0).unwrap()),
        [8, 8]
    );
}

#[test]
fn malformed_headers() {
    let good = sample().build();
    for n in 0..parse::HDR_LEN {
        assert!(parse_err(&good[..n]).contains("shorter than the header"));
    }
    let patch = |at: usize, bytes: &[u8]| {
        let mut v = good.clone();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        v
    };
    let u = |x: u32| x.to_le_bytes();
    let last_str = 24 + sample().strings.len() - 1;
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

fn set32(v: &mut [u8], at: usize, x: u32) {
    v[at..at + 4].copy_from_slice(&x.to_le_bytes());
}

fn parse_with(f: impl FnOnce(&mut Builder)) -> Result<Btf> {
    let mut b = Builder::new();
    f(&mut b);
    Btf::from_bytes(&b.build())
}

#[test]
fn malformed_types() {
    let b = sample();
    let (full, tstart) = (b.build(), 24 + b.strings.len());
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
    let vlen_past_end = |b: &mut Builder| {
        b.raw(0, info(Kind::Struct, 5, false), 4, &[0, 0, 0]);
    };
    let bad_name = |b: &mut Builder| {
        b.raw(99_999, info(Kind::Int, 0, false), 4, &[32]);
    };
    let kind = |k: u32| {
        move |b: &mut Builder| {
            b.raw(0, k << 24, 0, &[]);
        }
    };
    for (f, want) in [
        (
            &vlen_past_end as &dyn Fn(&mut Builder),
            "type section truncated at type id 1",
        ),
        (&bad_name, "string offset 99999 out of range"),
        (&kind(0), "type id 1 has unknown kind 0"),
        (&kind(20), "type id 1 has unknown kind 20"),
        (&kind(31), "type id 1 has unknown kind 31"),
    ] {
        assert_eq!(parse_with(f).unwrap_err().to_string(), want);
    }
    // Problems only detectable when the types are used.
    let btf = parse_with(|b| {
        let int = b.ty("int", Kind::Int, 4, &[32]);
        let lp = b.ty("loop", Kind::Typedef, 3, &[]); // 2 -> 3 -> 2
        b.ty("loop2", Kind::Typedef, lp, &[]);
        let me = b.ty("self", Kind::Typedef, 4, &[]);
        let arr = b.ty("", Kind::Array, 0, &[lp, int, 4]);
        let ms = [
            ("bad", 500, 0),
            ("l", lp, 32),
            ("me", me, 64),
            ("a", arr, 96),
        ];
        b.composite(Kind::Struct, "s", false, &ms);
        let n = b.string("t");
        b.raw(n, info(Kind::Struct, 1, false), 4, &[123_456, int, 0]);
        let rec = b.ends.len() as u32;
        b.composite(Kind::Struct, "rec", false, &[("", rec, 0)]);
        let mut prev = int;
        for _ in 0..30 {
            let pair = [("", prev, 0), ("", prev, 0)];
            prev = b.composite(Kind::Struct, "", false, &pair);
        }
        b.composite(Kind::Struct, "dag", false, &[("", prev, 0)]); // 2^30 anonymous paths
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

#[test]
fn fixture_truncated_type_section() {
    let blob = fixture::BTF;
    let tlen = type_section(blob).len();
    for i in 1..24 {
        let cut = (tlen * i / 24) | 1; // odd, so never on a (4-byte aligned) type boundary
        let mut v = blob.to_vec();
        set32(&mut v, 12, cut as u32); // type_len; the strings stay where they are
        assert!(parse_err(&v).starts_with("type section truncated"), "{cut}");
    }
    assert!(Btf::from_bytes(&blob[..blob.len() / 2]).is_err());
}

/// Every lookup on every type, with results ignored: only panics and hangs matter.
fn exercise(btf: &Btf) {
    let _ = btf.member_offset("sock", "__sk_common.skc_dport");
    let _ = btf.tracepoint_params("net_dev_start_xmit");
    for (id, ty) in btf.types.iter().enumerate() {
        let id = TypeId(id as u32);
        let _ = (btf.type_name(id, 0), btf.size_of(id, 0), btf.strip(id));
        let Ok(name) = btf.name(ty.name) else {
            continue;
        };
        let members = ty.body.composite().map_or(&[][..], |c| &c.members);
        for m in members.iter().take(8) {
            if let Ok(m) = btf.name(m.name) {
                let _ = btf.member_offset(name, m);
                let _ = btf.member_offset(name, &format!("{m}.x"));
            }
        }
        if let Some(tp) = name.strip_prefix("btf_trace_") {
            let _ = btf.tracepoint_params(tp);
        }
        let _ = btf.has_function(name);
    }
}

/// Flips random bytes of the fixture and of the synthetic sample; whatever still parses must
/// survive every lookup.
#[test]
fn fuzz_flipped_bytes() {
    let mut state: u64 = 0x5eed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        (state >> 33) as usize
    };
    for base in [fixture::BTF.to_vec(), sample().build()] {
        exercise(&Btf::from_bytes(&base).unwrap());
        let mut parsed = 0;
        for _ in 0..1000 {
            let mut v = base.clone();
            for _ in 0..1 + next() % 4 {
                let at = next() % v.len();
                v[at] ^= (next() % 255 + 1) as u8;
            }
            if let Ok(btf) = Btf::from_bytes(&v) {
                parsed += 1;
                exercise(&btf);
            }
        }
        eprintln!(
            "fuzz: {parsed}/1000 mutated blobs of {} bytes parsed",
            base.len()
        );
    }
}

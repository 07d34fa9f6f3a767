//! Every hook sockmem knows, declared once.
//!
//! [`hook_registry!`] holds one declaration per hook: its id, user-facing name, stage of the send
//! path, whether it fires in the sender's path or wherever the device queue is serviced, what it
//! puts in the event's `value` and `duration_ns`, what it shows (the README's words), and, per
//! backend, the eBPF programs with their kernel attach points and the hook-independent handler
//! each calls with which arguments. The macro hands the declaration to a callback macro:
//!
//! - this crate expands it into [`Hook`](crate::Hook) (ids, names, stages) and the [`HOOKS`]
//!   table that userspace attaches from and derives `probe`, the text renderer's field names and
//!   the README's hook table from;
//! - `sockmem-ebpf` expands the same declaration into its entry points, one per program line.
//!
//! So a program name, an attach point and the handler it calls cannot drift apart: adding a hook
//! means one declaration here and its handler in `sockmem-ebpf/src/hooks/`.
//!
//! Program lines (inside the `fentry`, `kprobe` and `tracepoint` sections):
//!
//! ```text
//! fentry     PROGRAM("function")                              => handler(ARGS);
//! fexit      PROGRAM("function")                              => handler(ARGS);
//! kprobe     PROGRAM("f1", "f2"; optional "f3")               => handler(ARGS);
//! kretprobe  PROGRAM("f1"; optional "f2")                     => handler(ARGS);
//! tracepoint PROGRAM("category":"name" [INDEX: "C type", ..]) => handler(ARGS);
//! ```
//!
//! ARGS are argument positions of the attach point (the function's, or the tracepoint's
//! `TP_PROTO`) and `ret` for the return value; every one reaches the handler as `u64`. A kprobe
//! program may attach to several functions; an optional attach point may be missing without the
//! hook failing. Tracepoint argument types are checked against the kernel's BTF before loading.

mod declaration;

/// How a program reaches the kernel, best (cheapest) first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(clap::ValueEnum))]
pub enum Backend {
    /// fentry/fexit: BTF trampolines, the lowest overhead.
    Fentry,
    /// kprobe/kretprobe: works on any function not inlined, needs CONFIG_KPROBES.
    Kprobe,
    /// Raw tracepoints: a stable ABI, but only where the kernel has a tracepoint.
    Tracepoint,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    pub const fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where on the send path a hook sits (also the eBPF module that handles it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The `sendmsg` call: data copied into the write queue, the call blocking and returning.
    Send,
    /// `sk_wmem_alloc` charged and given back (skb ownership).
    Wmem,
    /// The device layer's entry and the qdisc.
    Qdisc,
    /// The driver and the skb's end (freed or dropped).
    Driver,
    /// TCP's own events on the socket: ACKs, retransmits, destruction.
    Tcp,
}

impl Stage {
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Send => "send",
            Stage::Wmem => "wmem",
            Stage::Qdisc => "qdisc",
            Stage::Driver => "driver",
            Stage::Tcp => "tcp",
        }
    }
}

/// In whose context a hook fires, which decides who an event is attributed to before the
/// socket's sender is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// In the path of the socket's own transmit (or its softirq): in process context the
    /// current task is the socket's user.
    SenderPath,
    /// Wherever the device queue is serviced: the current task may be any socket's sender.
    BelowQdisc,
}

/// What an event field means for a hook, and how the text output names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Not shown in the INFO text (it shows elsewhere, e.g. in the counters' change).
    Hidden,
    /// `name=value`.
    Named(&'static str),
    /// `name=value`, left out when the value is 0.
    NamedIfNonzero(&'static str),
    /// One word: the first when the value is not 0, the second when it is.
    Choice(&'static str, &'static str),
    /// `name=ENUMERATOR`: the value is one of the kernel's `enum` (its enumerators read from BTF,
    /// shown without the common prefix); the number where BTF does not name it.
    Enum(&'static str, &'static str, &'static str),
}

/// One kernel attach point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// Raw tracepoint `category:name`; `args` are the argument positions the program reads, with
    /// a substring of the C type the kernel must declare there.
    Tracepoint {
        category: &'static str,
        name: &'static str,
        args: &'static [(usize, &'static str)],
    },
    KProbe(&'static str),
    KRetProbe(&'static str),
    FEntry(&'static str),
    FExit(&'static str),
}

impl Attach {
    /// The backend this kind of attach point belongs to.
    pub const fn backend(self) -> Backend {
        match self {
            Attach::Tracepoint { .. } => Backend::Tracepoint,
            Attach::KProbe(_) | Attach::KRetProbe(_) => Backend::Kprobe,
            Attach::FEntry(_) | Attach::FExit(_) => Backend::Fentry,
        }
    }
}

impl core::fmt::Display for Attach {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Attach::Tracepoint { category, name, .. } => write!(f, "{category}:{name}"),
            Attach::KProbe(func) | Attach::FEntry(func) => write!(f, "{func}"),
            Attach::KRetProbe(func) | Attach::FExit(func) => write!(f, "{func}%return"),
        }
    }
}

/// A program of the eBPF object at one attach point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub program: &'static str,
    pub attach: Attach,
    /// The hook still works without it (e.g. the IPv6 half of a pair).
    pub optional: bool,
}

/// The programs and attach points that implement a hook through one backend.
#[derive(Debug)]
pub struct Variant {
    pub backend: Backend,
    pub attachments: &'static [Attachment],
}

/// Everything known about a hook.
#[derive(Debug)]
pub struct HookSpec {
    pub hook: Hook,
    pub stage: Stage,
    pub runs: Runs,
    /// What `SockEvent::value` holds.
    pub value: Field,
    /// What `SockEvent::duration_ns` holds.
    pub duration: Field,
    /// Whether its events carry an skb (length, truesize, interface).
    pub skb: bool,
    /// What it shows, in the README's words.
    pub shows: &'static str,
    /// Best backend first; a backend missing here has no attach point for this hook.
    pub variants: &'static [Variant],
}

impl HookSpec {
    pub fn variant(&self, backend: Backend) -> Option<&'static Variant> {
        // Specs live in the 'static `HOOKS` table, and so do their variants.
        let variants: &'static [Variant] = self.variants;
        variants
            .iter()
            .find(|v| v.backend == backend && !v.attachments.is_empty())
    }
}

/// This crate's expansion of [`hook_registry!`]: the [`Hook`](crate::Hook) enum and [`HOOKS`].
macro_rules! define_hooks {
    (
        hooks {
            $(
                $hook:ident = $id:literal {
                    name: $name:literal,
                    stage: $stage:ident,
                    runs: $runs:ident,
                    value: $vkind:ident $(($($varg:literal),*))?,
                    duration: $dkind:ident $(($($darg:literal),*))?,
                    skb: $skb:literal,
                    shows: $shows:literal,
                    fentry: [ $($fentry:tt)* ],
                    kprobe: [ $($kprobe:tt)* ],
                    tracepoint: [ $($tracepoint:tt)* ],
                }
            )*
        }
        context [ $($context:tt)* ]
    ) => {
        /// Where in the stack an event was observed. Stored as `u8` in
        /// [`SockEvent::hook`](crate::SockEvent::hook). Declared in [`hook_registry!`].
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Hook {
            $(
                #[doc = $shows]
                $hook = $id,
            )*
        }

        impl Hook {
            /// Every hook, in the order of the data path.
            pub const ALL: [Hook; [$($id),*].len()] = [$(Hook::$hook),*];

            /// Bit `id` set for each hook that [`Runs::BelowQdisc`].
            pub const BELOW_QDISC: u32 = 0 $(| if matches!(Runs::$runs, Runs::BelowQdisc) { 1 << $id } else { 0 })*;

            pub const fn from_u8(v: u8) -> Option<Hook> {
                match v {
                    $($id => Some(Hook::$hook),)*
                    _ => None,
                }
            }

            /// The short name shown to users.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Hook::$hook => $name,)*
                }
            }

            pub const fn stage(self) -> Stage {
                match self {
                    $(Hook::$hook => Stage::$stage,)*
                }
            }

            /// Everything the registry says about this hook.
            pub fn spec(self) -> &'static HookSpec {
                match self {
                    $(Hook::$hook => {
                        const SPEC: HookSpec = HookSpec {
                            hook: Hook::$hook,
                            stage: Stage::$stage,
                            runs: Runs::$runs,
                            value: Field::$vkind $(($($varg),*))?,
                            duration: Field::$dkind $(($($darg),*))?,
                            skb: $skb,
                            shows: $shows,
                            variants: &[
                                Variant { backend: Backend::Fentry, attachments: attachments!([] $($fentry)*) },
                                Variant { backend: Backend::Kprobe, attachments: attachments!([] $($kprobe)*) },
                                Variant { backend: Backend::Tracepoint, attachments: attachments!([] $($tracepoint)*) },
                            ],
                        };
                        &SPEC
                    })*
                }
            }
        }

        /// Programs that are not hooks but keep state the hooks read.
        pub const CONTEXT: &[Attachment] = attachments!([] $($context)*);
    };
}

/// Program lines → `&[Attachment]`, accumulating in the bracket (a tt muncher, one line a step).
macro_rules! attachments {
    ([$($done:tt)*]) => { &[$($done)*] };
    ([$($done:tt)*]
        tracepoint $program:ident ($category:literal : $name:literal [$($index:literal : $ty:literal),*])
        => $($handler:ident)::+ ($($arg:tt),*); $($rest:tt)*) => {
        attachments!([$($done)*
            Attachment {
                program: stringify!($program),
                attach: Attach::Tracepoint { category: $category, name: $name, args: &[$(($index, $ty)),*] },
                optional: false,
            },
        ] $($rest)*)
    };
    ([$($done:tt)*]
        $kind:ident $program:ident ($($func:literal),* $(; optional $($opt:literal),+)?)
        => $($handler:ident)::+ ($($arg:tt),*); $($rest:tt)*) => {
        attachments!([$($done)*
            $(Attachment { program: stringify!($program), attach: attach_point!($kind $func), optional: false },)*
            $($(Attachment { program: stringify!($program), attach: attach_point!($kind $opt), optional: true },)+)?
        ] $($rest)*)
    };
}

macro_rules! attach_point {
    (fentry $f:literal) => {
        Attach::FEntry($f)
    };
    (fexit $f:literal) => {
        Attach::FExit($f)
    };
    (kprobe $f:literal) => {
        Attach::KProbe($f)
    };
    (kretprobe $f:literal) => {
        Attach::KRetProbe($f)
    };
}

crate::hook_registry!(define_hooks);

/// Every hook with what the registry says of it, in the order of the data path.
pub fn hooks() -> impl Iterator<Item = &'static HookSpec> {
    Hook::ALL.into_iter().map(Hook::spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_fit_the_below_qdisc_mask() {
        for (i, a) in Hook::ALL.iter().enumerate() {
            assert!((*a as u8) < 32, "{a:?}");
            assert_eq!(Hook::from_u8(*a as u8), Some(*a));
            for b in &Hook::ALL[i + 1..] {
                assert_ne!(*a as u8, *b as u8, "{a:?} and {b:?} share an id");
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(Hook::from_u8(0), None);
    }

    #[test]
    fn variants_are_per_backend_and_attach_through_it() {
        for spec in hooks() {
            let h = spec.hook;
            assert!(
                spec.variants.iter().any(|v| !v.attachments.is_empty()),
                "{h:?} attaches nowhere"
            );
            for v in spec.variants {
                for a in v.attachments {
                    assert_eq!(a.attach.backend(), v.backend, "{h:?}: {}", a.program);
                    let prefix = match a.attach {
                        Attach::Tracepoint { .. } => "tp_",
                        Attach::KProbe(_) => "kprobe_",
                        Attach::KRetProbe(_) => "kretprobe_",
                        Attach::FEntry(_) => "fentry_",
                        Attach::FExit(_) => "fexit_",
                    };
                    assert!(a.program.starts_with(prefix), "{h:?}: {}", a.program);
                }
                // A variant that only has optional points would "attach" with nothing.
                assert!(
                    v.attachments.is_empty() || v.attachments.iter().any(|a| !a.optional),
                    "{h:?} {:?}: only optional attach points",
                    v.backend
                );
            }
        }
    }

    #[test]
    fn below_qdisc_mask_follows_the_declarations() {
        for spec in hooks() {
            let bit = Hook::BELOW_QDISC & (1 << spec.hook as u8) != 0;
            assert_eq!(bit, spec.runs == Runs::BelowQdisc, "{:?}", spec.hook);
        }
        assert!(Hook::BELOW_QDISC & (1 << Hook::DriverXmit as u8) != 0);
        assert!(Hook::BELOW_QDISC & (1 << Hook::DevQueueXmit as u8) == 0);
    }
}

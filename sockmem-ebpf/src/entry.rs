//! The programs' entry points, generated from the hook registry
//! (`sockmem_common::hook_registry!`): one function per program line, attached as the line says,
//! reading the arguments the line names and calling its handler in `hooks/`. Nothing here is
//! written per hook.

/// The registry's callback: every program line of every hook and of the context programs.
macro_rules! entry_points {
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
        programs! { $($($fentry)* $($kprobe)* $($tracepoint)*)* $($context)* }
    };
}

/// Program lines → entry points, one line a step.
macro_rules! programs {
    () => {};
    (tracepoint $program:ident ($category:tt : $name:tt [$($index:tt : $ty:tt),*])
        => $($handler:ident)::+ ($($arg:tt),*); $($rest:tt)*) => {
        #[raw_tracepoint(tracepoint = $name)]
        #[allow(unused_variables)] // handlers without arguments
        pub fn $program(ctx: RawTracePointContext) -> i32 {
            hooks::$($handler)::+($(arg!(ctx, tracepoint, $arg)),*);
            0
        }
        programs! { $($rest)* }
    };
    // An fentry/fexit program is loaded for one function: the line names exactly one, which
    // may be optional (userspace's concern).
    ($kind:ident $program:ident (; optional $func:tt) => $($rest:tt)*) => {
        programs! { $kind $program ($func) => $($rest)* }
    };
    (fentry $program:ident ($func:tt) => $($handler:ident)::+ ($($arg:tt),*); $($rest:tt)*) => {
        #[fentry(function = $func)]
        #[allow(unused_variables)] // handlers without arguments
        pub fn $program(ctx: FEntryContext) -> i32 {
            hooks::$($handler)::+($(arg!(ctx, fentry, $arg)),*);
            0
        }
        programs! { $($rest)* }
    };
    (fexit $program:ident ($func:tt) => $($handler:ident)::+ ($($arg:tt),*); $($rest:tt)*) => {
        #[fexit(function = $func)]
        #[allow(unused_variables)] // handlers without arguments
        pub fn $program(ctx: FExitContext) -> i32 {
            hooks::$($handler)::+($(arg!(ctx, fexit, $arg)),*);
            0
        }
        programs! { $($rest)* }
    };
    // kprobes attach by name at run time, to every function the line lists.
    (kprobe $program:ident ($($targets:tt)*) => $($handler:ident)::+ ($($arg:tt),*); $($rest:tt)*) => {
        #[kprobe]
        #[allow(unused_variables)] // handlers without arguments
        pub fn $program(ctx: ProbeContext) -> i32 {
            hooks::$($handler)::+($(arg!(ctx, kprobe, $arg)),*);
            0
        }
        programs! { $($rest)* }
    };
    (kretprobe $program:ident ($($targets:tt)*) => $($handler:ident)::+ ($($arg:tt),*); $($rest:tt)*) => {
        #[kretprobe]
        #[allow(unused_variables)] // handlers without arguments
        pub fn $program(ctx: RetProbeContext) -> i32 {
            hooks::$($handler)::+($(arg!(ctx, kretprobe, $arg)),*);
            0
        }
        programs! { $($rest)* }
    };
}

/// One handler argument, as `u64`: an argument position, or `ret`.
macro_rules! arg {
    // `int` returns are truncated by the handlers: the upper half is not defined.
    ($ctx:ident, fexit, ret) => {
        $ctx.ret::<u64>().unwrap_or(0)
    };
    ($ctx:ident, kretprobe, ret) => {
        $ctx.ret::<u64>()
    };
    // A register that cannot be read leaves the program without an event.
    ($ctx:ident, kprobe, $index:literal) => {
        match $ctx.arg::<u64>($index) {
            Some(v) => v,
            None => return 0,
        }
    };
    ($ctx:ident, $kind:ident, $index:literal) => {
        $ctx.arg::<u64>($index)
    };
}

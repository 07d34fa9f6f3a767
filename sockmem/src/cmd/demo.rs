//! `sockmem demo <scenario>`: build, run, record, and say what the counters did (see `demo/`).

use anyhow::bail;

use crate::{
    cli::{DemoArgs, FilterArgs},
    demo::scenario::{self, Scenario, PORT},
    pipeline::timeline::Timeline,
    render::plot::Plot,
};

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let Some(name) = args.scenario.as_deref().filter(|_| !args.list) else {
        for s in Scenario::ALL {
            println!("{:<18} {}", s.name(), s.explain());
        }
        return Ok(());
    };
    let Some(s) = Scenario::by_name(name) else {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        bail!(
            "no demo `{name}`; there are: {} (`sockmem demo --list` explains each)",
            names.join(", ")
        );
    };
    std::fs::create_dir_all(&args.output_dir)
        .map_err(|e| anyhow::anyhow!("creating `{}`: {e}", args.output_dir.display()))?;
    let recording = args.output_dir.join(format!("{}.smrec", s.name()));
    eprintln!("sockmem demo {}: {}", s.name(), s.explain());
    let outcome = scenario::run(s, args.duration.as_secs_f64(), &recording)?;
    let claims = scenario::verdict(s, &outcome);
    let holds = claims.iter().all(|c| c.holds);
    println!(
        "{}: {}",
        s.name(),
        if holds {
            "as expected"
        } else {
            "NOT as expected"
        }
    );
    for c in &claims {
        println!("  [{}] {}", if c.holds { "ok" } else { "no" }, c.text);
    }
    println!("recording: {}", recording.display());
    // The sender's counters over time, from the recording.
    let picture = args.output_dir.join(format!("{}.png", s.name()));
    let filters = FilterArgs {
        port: vec![PORT],
        ..FilterArgs::default()
    };
    let timeline = Timeline::read(&recording, &filters)?;
    let source = format!("sockmem demo {}", s.name());
    Plot::choose(&timeline, &outcome.facts.row.sock_ids, 6, source)?.save(&picture)?;
    println!("plot: {}", picture.display());
    if !holds {
        bail!("the demo did not show what it should (see above)");
    }
    Ok(())
}

//! `meridian-fuzz <target>`: under AFL++ (built with `--features afl`) the persistent fuzzing loop of
//! one target; otherwise it runs the target once on each file named after it, or on standard input.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!(
            "usage: meridian-fuzz <target> [file...]; targets: {}",
            meridian_fuzz::TARGETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return std::process::ExitCode::from(2);
    };
    let Some(target) = meridian_fuzz::target(&name) else {
        eprintln!("meridian-fuzz: no target {name:?}");
        return std::process::ExitCode::from(2);
    };
    run(target, args.collect())
}

#[cfg(feature = "afl")]
fn run(target: fn(&[u8]), _files: Vec<String>) -> std::process::ExitCode {
    afl::fuzz!(|data: &[u8]| target(data));
    std::process::ExitCode::SUCCESS
}

#[cfg(not(feature = "afl"))]
fn run(target: fn(&[u8]), files: Vec<String>) -> std::process::ExitCode {
    use std::io::Read;
    if files.is_empty() {
        let mut data = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut data) {
            eprintln!("meridian-fuzz: standard input: {e}");
            return std::process::ExitCode::FAILURE;
        }
        target(&data);
    }
    for f in files {
        match std::fs::read(&f) {
            Ok(data) => target(&data),
            Err(e) => {
                eprintln!("meridian-fuzz: {f}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

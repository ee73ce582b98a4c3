//! `leak-check [--clean]`: fails (exit 1) if system tests left a `rh-*` network namespace, a
//! `rhtap*` host link, or a process they started (QEMU, pxe-server, …). Run it after the test
//! suite, e.g. at the end of `.ci/run`: `cargo run -p rackhand-tests --bin leak-check`.
//!
//! `--clean` first removes leaks whose creating test process has exited (SIGKILL to marked
//! processes, `ip netns del`), then checks again.

use std::process::ExitCode;

use rackhand_tests::leak;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let clean = match args.as_slice() {
        [] => false,
        [a] if a == "--clean" => true,
        _ => {
            eprintln!("usage: leak-check [--clean]");
            return ExitCode::from(2);
        }
    };
    let mut leaks = leak::scan();
    if clean && !leaks.is_empty() {
        for p in leak::clean(&leaks) {
            eprintln!("leak-check: {p}");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        leaks = leak::scan();
    }
    if leaks.is_empty() {
        println!("leak-check: ok, no namespaces, links or processes left by the tests");
        return ExitCode::SUCCESS;
    }
    for l in &leaks {
        eprintln!("leak-check: LEAK {l}");
    }
    eprintln!("leak-check: {} leak(s)", leaks.len());
    ExitCode::FAILURE
}

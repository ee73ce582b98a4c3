//! `pxeimage`: dispatch only. As PID 1 it boots the machine ([`pxeimage::boot::pid1_main`]);
//! otherwise it runs one debug stage.

use std::process::ExitCode;

use pxeimage::{boot, cmdline};

const USAGE: &str = "\
usage: pxeimage <command>

As PID 1 (in the initramfs) pxeimage boots the machine; these commands run one
stage on any Linux machine:

  debug-recon              print the hardware report as JSON
  debug-cmdline [LINE]     parse LINE (default: /proc/cmdline) and print the
                           settings, or the errors with their reason codes
  agent [LINE]             run the register/orders loop against the appliance
                           named in LINE (default: /proc/cmdline) without any
                           PID-1 duty; prints how it ended instead of rebooting;
                           install orders are refused (install_disabled)
  version                  print the version
";

fn main() -> ExitCode {
    if std::process::id() == 1 {
        boot::pid1_main();
    }
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), args.len()) {
        (Some("debug-recon"), 1) => debug_recon(),
        (Some("debug-cmdline"), 1 | 2) => debug_cmdline(arg(1)),
        (Some("agent"), 1 | 2) => agent(arg(1)),
        (Some("version" | "--version"), 1) => {
            println!("pxeimage {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        (Some("help" | "--help" | "-h"), 1) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn read_cmdline(given: Option<&str>) -> Result<Vec<u8>, ExitCode> {
    match given {
        Some(s) => Ok(s.as_bytes().to_vec()),
        None => std::fs::read(boot::PROC_CMDLINE).map_err(|e| {
            eprintln!("pxeimage: cannot read {}: {e}", boot::PROC_CMDLINE);
            ExitCode::FAILURE
        }),
    }
}

fn parse(given: Option<&str>) -> Result<cmdline::AgentConfig, ExitCode> {
    let raw = read_cmdline(given)?;
    cmdline::parse_bytes(&raw).map_err(|errs| {
        for e in &errs.0 {
            eprintln!("error[{}] {e}", e.code());
        }
        ExitCode::FAILURE
    })
}

fn debug_cmdline(given: Option<&str>) -> ExitCode {
    match parse(given) {
        Ok(cfg) => {
            print!("{}", cfg.render());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn debug_recon() -> ExitCode {
    let report = recon::collect(&recon::Sources::live());
    match serde_json::to_string_pretty(&report) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pxeimage: cannot encode the report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn agent(given: Option<&str>) -> ExitCode {
    let cfg = match parse(given) {
        Ok(c) => c,
        Err(code) => return code,
    };
    pxeimage::console::set_debug(cfg.debug);
    let hw = boot::hardware_report(cfg.boot_mac);
    // Outside the netbooted ramdisk, never write a disk of the machine this runs on.
    let finish = boot::run_agent(&cfg, &hw, &mut pxeimage::install::Disabled);
    println!("agent finished: {} (would reboot)", boot::describe(&finish));
    ExitCode::SUCCESS
}

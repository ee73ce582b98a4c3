//! Processors: model, sockets, cores and threads from `/proc/cpuinfo`, with the sysfs CPU
//! topology (`/sys/devices/system/cpu/cpuN/topology`) filling whatever cpuinfo leaves out
//! (many VMs and non-x86 kernels print no `physical id`/`core id`).

use std::collections::BTreeSet;
use std::path::Path;

use pxe_api::hardware::Cpu;

use crate::layout::CPU_DIR;
use crate::sources::{CPUINFO_CAP, parse_u32, read_attr, read_bounded};

/// Keys that name the processor model, in order of preference (x86, old ARM, PowerPC, MIPS).
const MODEL_KEYS: &[&str] = &["model name", "Processor", "cpu", "cpu model"];

/// Parses `/proc/cpuinfo`. Threads = `processor` records; sockets = distinct `physical id`;
/// cores = distinct (`physical id`, `core id`) pairs, or the sum of `cpu cores` per socket.
/// Facts the text does not carry are `None`.
pub fn parse_cpuinfo(text: &str) -> Cpu {
    let mut threads = 0u32;
    let mut model: Option<(usize, String)> = None;
    let mut packages = BTreeSet::new();
    let mut core_pairs = BTreeSet::new();
    let mut cores_per_package: std::collections::BTreeMap<String, u32> = Default::default();
    let mut all_have_ids = true;

    // Records are separated by blank lines.
    for record in text.split("\n\n") {
        let mut is_processor = false;
        let (mut pkg, mut core, mut cpu_cores) = (None, None, None);
        for line in record.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "processor" if value.parse::<u32>().is_ok() => is_processor = true,
                "physical id" => pkg = Some(value.to_owned()),
                "core id" => core = Some(value.to_owned()),
                "cpu cores" => cpu_cores = parse_u32(value),
                _ => {}
            }
            if let Some(rank) = MODEL_KEYS.iter().position(|k| *k == key)
                && !value.is_empty()
                && model.as_ref().is_none_or(|(r, _)| rank < *r)
            {
                model = Some((rank, value.to_owned()));
            }
        }
        if !is_processor {
            continue;
        }
        threads = threads.saturating_add(1);
        match (&pkg, &core) {
            (Some(p), Some(c)) => {
                core_pairs.insert((p.clone(), c.clone()));
            }
            _ => all_have_ids = false,
        }
        if let Some(p) = pkg {
            if let Some(n) = cpu_cores {
                cores_per_package.insert(p.clone(), n);
            }
            packages.insert(p);
        }
    }

    let sockets = (!packages.is_empty()).then(|| count(&packages));
    let cores = if all_have_ids && !core_pairs.is_empty() {
        Some(count(&core_pairs))
    } else if !packages.is_empty() && cores_per_package.len() == packages.len() {
        cores_per_package
            .values()
            .try_fold(0u32, |acc, n| acc.checked_add(*n))
    } else {
        None
    };
    Cpu {
        model: model.map(|(_, m)| m),
        sockets,
        cores,
        threads: (threads > 0).then_some(threads),
    }
}

fn count<T>(set: &BTreeSet<T>) -> u32 {
    u32::try_from(set.len()).unwrap_or(u32::MAX)
}

/// Sockets and cores from per-CPU sysfs topology: one `(physical_package_id, core_id)` per
/// logical CPU (either may be unreadable). Returns `(sockets, cores, threads)`.
pub fn topology_counts(
    cpus: &[(Option<u32>, Option<u32>)],
) -> (Option<u32>, Option<u32>, Option<u32>) {
    if cpus.is_empty() {
        return (None, None, None);
    }
    let packages: BTreeSet<u32> = cpus.iter().filter_map(|(p, _)| *p).collect();
    let sockets = cpus
        .iter()
        .all(|(p, _)| p.is_some())
        .then(|| count(&packages));
    let pairs: Option<BTreeSet<(u32, u32)>> =
        cpus.iter().map(|(p, c)| Some(((*p)?, (*c)?))).collect();
    let cores = pairs.map(|s| count(&s));
    let threads = u32::try_from(cpus.len()).ok();
    (sockets, cores, threads)
}

/// True for sysfs names `cpu0`, `cpu17`… (not `cpufreq`, `cpuidle`).
fn is_cpu_dir(name: &str) -> bool {
    name.strip_prefix("cpu")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads CPU facts: cpuinfo first, sysfs topology for whatever it lacks.
pub(crate) fn collect(sysfs: &Path, procfs: &Path) -> Cpu {
    let mut cpu = read_bounded(&procfs.join("cpuinfo"), CPUINFO_CAP)
        .map(|b| parse_cpuinfo(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    if cpu.sockets.is_none() || cpu.cores.is_none() || cpu.threads.is_none() {
        let dir = sysfs.join(CPU_DIR);
        let topo: Vec<(Option<u32>, Option<u32>)> = crate::sources::list_dir(&dir)
            .into_iter()
            .filter(|n| is_cpu_dir(n))
            .map(|n| {
                let t = dir.join(n).join("topology");
                let read = |f: &str| read_attr(&t.join(f)).and_then(|s| parse_u32(&s));
                (read("physical_package_id"), read("core_id"))
            })
            .collect();
        let (sockets, cores, threads) = topology_counts(&topo);
        cpu.sockets = cpu.sockets.or(sockets);
        cpu.cores = cpu.cores.or(cores);
        cpu.threads = cpu.threads.or(threads);
    }
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32, extra: &str) -> String {
        format!("processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon Gold\n{extra}\n")
    }

    #[test]
    fn two_sockets_with_ht() {
        // 2 sockets × 2 cores × 2 threads
        let mut text = String::new();
        let mut n = 0;
        for pkg in 0..2 {
            for core in 0..2 {
                for _ in 0..2 {
                    text += &rec(
                        n,
                        &format!("physical id\t: {pkg}\ncore id\t\t: {core}\ncpu cores\t: 2\n"),
                    );
                    n += 1;
                }
            }
        }
        let c = parse_cpuinfo(&text);
        assert_eq!(c.model.as_deref(), Some("Xeon Gold"));
        assert_eq!((c.sockets, c.cores, c.threads), (Some(2), Some(4), Some(8)));
    }

    #[test]
    fn missing_physical_id_leaves_sockets_absent() {
        let text = rec(0, "") + "\n" + &rec(1, "");
        let c = parse_cpuinfo(&text);
        assert_eq!((c.sockets, c.cores, c.threads), (None, None, Some(2)));
    }

    #[test]
    fn cpu_cores_without_core_id() {
        let text = rec(0, "physical id : 0\ncpu cores : 4")
            + "\n"
            + &rec(1, "physical id : 0\ncpu cores : 4");
        let c = parse_cpuinfo(&text);
        assert_eq!((c.sockets, c.cores, c.threads), (Some(1), Some(4), Some(2)));
    }

    #[test]
    fn arm_style_cpuinfo() {
        let text = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\n\
                    processor\t: 1\nBogoMIPS\t: 50.00\n\nHardware\t: BCM2835\n";
        let c = parse_cpuinfo(text);
        assert_eq!(
            (c.model, c.sockets, c.cores, c.threads),
            (None, None, None, Some(2))
        );
    }

    #[test]
    fn garbage_and_empty() {
        assert_eq!(parse_cpuinfo(""), Cpu::default());
        assert_eq!(
            parse_cpuinfo("\u{fffd}\u{fffd}: :\n::\nprocessor: x\n"),
            Cpu::default()
        );
    }

    #[test]
    fn topology_fallback() {
        let t = [
            (Some(0), Some(0)),
            (Some(0), Some(0)),
            (Some(1), Some(0)),
            (Some(1), Some(1)),
        ];
        assert_eq!(topology_counts(&t), (Some(2), Some(3), Some(4)));
        let partial = [(Some(0), None), (Some(0), Some(1))];
        assert_eq!(topology_counts(&partial), (Some(1), None, Some(2)));
        assert_eq!(topology_counts(&[]), (None, None, None));
    }

    #[test]
    fn cpu_dir_names() {
        assert!(is_cpu_dir("cpu0"));
        assert!(is_cpu_dir("cpu127"));
        assert!(!is_cpu_dir("cpufreq"));
        assert!(!is_cpu_dir("cpu"));
    }
}

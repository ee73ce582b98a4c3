//! The `recycle` order: wipe every disk of the machine, verify, and report.
//!
//! The disks are the machine's own: every non-removable, writable, non-USB disk of the
//! hardware report ([`wipe_targets`], pure). The agent netbooted, so none of them is the disk
//! it runs from. Each one goes through preflight (existing partitions may be overwritten: the
//! operator ordered the recycle; mounted, swap or held disks are still refused), then
//! [`installer::wipe`] clears and verifies it. The result carries one
//! [`WipeRecord`] per disk in `detail.wipes`; success moves the machine from `recycling` to
//! `available` on the appliance, so it is reported only when every disk verified.
//!
//! Outside PID 1 (the `pxeimage agent` debug command on someone's workstation) nothing is
//! touched: the order is answered `recycle_disabled`.

use std::time::{SystemTime, UNIX_EPOCH};

use installer::preflight::{ExistingPartitions, SystemPaths, check};
use installer::select::is_kernel_name;
use installer::wipe::{
    DiskFacts, VerifyOptions, WipeOutcome, WipePhase, WipeProgress, WipeRecord, execute, plan_disk,
};
use installer::{DiskRule, TargetDisk};
use pxe_api::agent::{Outcome, ProgressReport, ResultReport};
use pxe_api::hardware::{Disk, HardwareReport};

/// The order's name in reports.
pub const ORDER: &str = "recycle";

/// Why a disk of the report is not wiped (it is not the machine's own fixed storage).
pub fn skip_reason(disk: &Disk) -> Option<&'static str> {
    if !is_kernel_name(&disk.name) {
        Some("bad_name")
    } else if disk.removable.unwrap_or(false) {
        Some("removable")
    } else if disk
        .transport
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("usb"))
    {
        Some("usb")
    } else if disk.read_only.unwrap_or(false) {
        Some("read_only")
    } else {
        None
    }
}

/// The disks to wipe, in report order (pure).
pub fn wipe_targets(report: &HardwareReport) -> Vec<&Disk> {
    report
        .disks
        .iter()
        .filter(|d| skip_reason(d).is_none())
        .collect()
}

/// The result to send for a set of wipe records (pure): success only when there was at
/// least one disk and every record verified.
pub fn result_report(records: &[WipeRecord]) -> ResultReport {
    let detail = serde_json::json!({ "wipes": records });
    let failed: Vec<&WipeRecord> = records
        .iter()
        .filter(|r| r.outcome != WipeOutcome::Success || !r.verified)
        .collect();
    let (outcome, code, message) = match (records.is_empty(), failed.first()) {
        (true, _) => (
            Outcome::Failure,
            Some("no_disks".to_owned()),
            "the hardware report lists no fixed disk to wipe".to_owned(),
        ),
        (false, None) => (
            Outcome::Success,
            None,
            format!("{} disk(s) cleared and verified", records.len()),
        ),
        (false, Some(first)) => (
            Outcome::Failure,
            Some(first.code.clone().unwrap_or_else(|| "io_error".to_owned())),
            format!(
                "{} of {} disk(s) not wiped; first: {}: {}",
                failed.len(),
                records.len(),
                first.disk,
                first.message.as_deref().unwrap_or("failed")
            ),
        ),
    };
    ResultReport {
        order: ORDER.to_owned(),
        outcome,
        code,
        message: Some(message),
        detail: Some(detail),
    }
}

/// Overall percent for disk `index` of `count` in `phase` (pure, bounded to 0..=100).
pub fn percent(index: usize, count: usize, p: &WipeProgress) -> u8 {
    let phase_share = |ph: WipePhase| match ph {
        WipePhase::Edges => (0.0, 0.05),
        WipePhase::Bulk => (0.05, 0.85),
        WipePhase::Verify => (0.90, 0.10),
    };
    let (base, span) = phase_share(p.phase);
    let frac = if p.total == 0 {
        1.0
    } else {
        (p.done.min(p.total) as f64) / (p.total as f64)
    };
    let per_disk = base + span * frac;
    let overall = (index as f64 + per_disk) / (count.max(1) as f64) * 100.0;
    overall.clamp(0.0, 100.0) as u8
}

fn target_disk(disk: &Disk) -> TargetDisk {
    TargetDisk {
        name: disk.name.clone(),
        size_bytes: disk.size_bytes,
        logical_block_size: disk.logical_block_size,
        serial: disk.serial.clone(),
        wwn: disk.wwn.clone(),
        model: disk.model.clone(),
        rule: DiskRule::Name(disk.name.clone()),
    }
}

/// Wipes every disk of `hardware` on the live system (`paths`) and returns the result to
/// report. Progress goes to `progress`, once per whole percent.
pub fn recycle(
    hardware: &HardwareReport,
    paths: &SystemPaths,
    progress: &mut dyn FnMut(ProgressReport),
) -> ResultReport {
    let disks = wipe_targets(hardware);
    for d in &hardware.disks {
        if let Some(why) = skip_reason(d) {
            crate::info!("recycle: not wiping {} ({why})", d.name);
        }
    }
    let time_seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let verify = VerifyOptions {
        time_seed,
        ..VerifyOptions::default()
    };
    let count = disks.len();
    let mut records = Vec::with_capacity(count);
    for (index, disk) in disks.into_iter().enumerate() {
        let plan = plan_disk(&DiskFacts::from_report(disk));
        progress(ProgressReport {
            order: ORDER.to_owned(),
            stage: "preflight".to_owned(),
            percent: Some(percent(
                index,
                count,
                &WipeProgress {
                    phase: WipePhase::Edges,
                    done: 0,
                    total: 1,
                },
            )),
            message: Some(format!("disk {} ({} bytes)", disk.name, disk.size_bytes)),
        });
        let record = match check(&target_disk(disk), paths, 0, ExistingPartitions::Overwrite) {
            Err(e) => WipeRecord::refused(&plan, e.code(), e.to_string()),
            Ok(checked) => {
                let mut last: Option<(WipePhase, u8)> = None;
                execute(checked, &plan, &verify, &mut |p| {
                    let pct = percent(index, count, &p);
                    if last == Some((p.phase, pct)) {
                        return;
                    }
                    last = Some((p.phase, pct));
                    let stage = match p.phase {
                        WipePhase::Edges => "wipe_edges",
                        WipePhase::Bulk => "wipe",
                        WipePhase::Verify => "verify",
                    };
                    progress(ProgressReport {
                        order: ORDER.to_owned(),
                        stage: stage.to_owned(),
                        percent: Some(pct),
                        message: Some(format!("disk {}", disk.name)),
                    });
                })
            }
        };
        match &record.code {
            None => crate::info!(
                "recycle: {} cleared with {:?}, {} blocks verified in {} ms",
                record.disk,
                record.method,
                record.blocks_verified,
                record.duration_ms
            ),
            Some(code) => crate::error!(
                "recycle: {} not wiped: [{code}] {}",
                record.disk,
                record.message.as_deref().unwrap_or("")
            ),
        }
        records.push(record);
    }
    result_report(&records)
}

/// The executor's default for `recycle`: the live wipe as PID 1, `recycle_disabled`
/// anywhere else (nothing opened).
pub fn guarded(
    hardware: &HardwareReport,
    progress: &mut dyn FnMut(ProgressReport),
) -> ResultReport {
    if std::process::id() != 1 {
        crate::warn!("recycle: refused, this agent is not running as PID 1");
        return disabled();
    }
    recycle(hardware, &SystemPaths::live(), progress)
}

/// The refusal outside the netbooted agent.
pub fn disabled() -> ResultReport {
    ResultReport {
        order: ORDER.to_owned(),
        outcome: Outcome::Failure,
        code: Some("recycle_disabled".to_owned()),
        message: Some("wiping is disabled outside the netbooted agent (not PID 1)".to_owned()),
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use installer::wipe::{Method, NistLevel};

    fn disk(name: &str) -> Disk {
        Disk {
            name: name.to_owned(),
            size_bytes: 1 << 30,
            logical_block_size: Some(512),
            physical_block_size: Some(512),
            rotational: Some(false),
            removable: Some(false),
            read_only: Some(false),
            model: None,
            serial: Some(format!("SER-{name}")),
            wwn: None,
            transport: Some("virtio".into()),
            discard: Some(true),
        }
    }

    #[test]
    fn only_fixed_writable_disks_are_targets() {
        let mut usb = disk("sdb");
        usb.transport = Some("USB".into());
        let mut removable = disk("sdc");
        removable.removable = Some(true);
        let mut ro = disk("sdd");
        ro.read_only = Some(true);
        let report = HardwareReport {
            disks: vec![
                disk("nvme0n1"),
                usb,
                removable,
                ro,
                disk("../sda"),
                disk("vda"),
            ],
            ..HardwareReport::default()
        };
        let names: Vec<&str> = wipe_targets(&report)
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["nvme0n1", "vda"]);
        let reasons: Vec<Option<&str>> = report.disks.iter().map(skip_reason).collect();
        assert_eq!(
            reasons,
            [
                None,
                Some("usb"),
                Some("removable"),
                Some("read_only"),
                Some("bad_name"),
                None
            ]
        );
    }

    fn record(name: &str, code: Option<&str>) -> WipeRecord {
        let plan = plan_disk(&DiskFacts::from_report(&disk(name)));
        let mut r = WipeRecord::refused(&plan, code.unwrap_or("x"), "m".into());
        if code.is_none() {
            r.outcome = WipeOutcome::Success;
            r.verified = true;
            r.code = None;
            r.message = None;
        }
        r
    }

    #[test]
    fn results_need_every_disk_verified() {
        let ok = result_report(&[record("vda", None), record("vdb", None)]);
        assert_eq!(ok.outcome, Outcome::Success);
        assert_eq!(ok.code, None);
        let wipes = &ok.detail.as_ref().unwrap()["wipes"];
        assert_eq!(wipes.as_array().unwrap().len(), 2);
        assert_eq!(wipes[0]["disk"], "vda");
        assert_eq!(wipes[0]["method"], "blkzeroout");
        assert_eq!(wipes[0]["nist_level"], "clear");
        let first: WipeRecord = serde_json::from_value(wipes[0].clone()).unwrap();
        assert_eq!(first.method, Method::Blkzeroout);
        assert_eq!(first.nist_level, NistLevel::Clear);
        assert_eq!(first.serial.as_deref(), Some("SER-vda"));

        let bad = result_report(&[record("vda", None), record("vdb", Some("verify_nonzero"))]);
        assert_eq!(bad.outcome, Outcome::Failure);
        assert_eq!(bad.code.as_deref(), Some("verify_nonzero"));
        assert_eq!(bad.detail.unwrap()["wipes"].as_array().unwrap().len(), 2);

        let none = result_report(&[]);
        assert_eq!(none.outcome, Outcome::Failure);
        assert_eq!(none.code.as_deref(), Some("no_disks"));
        assert_eq!(none.order, "recycle");
    }

    #[test]
    fn percent_is_monotonic_and_bounded() {
        let mut last = 0;
        for index in 0..3 {
            for phase in [WipePhase::Edges, WipePhase::Bulk, WipePhase::Verify] {
                for done in [0, 5, 10] {
                    let p = percent(
                        index,
                        3,
                        &WipeProgress {
                            phase,
                            done,
                            total: 10,
                        },
                    );
                    assert!(p >= last && p <= 100, "{index} {phase:?} {done}");
                    last = p;
                }
            }
        }
        assert_eq!(last, 100);
        let odd = WipeProgress {
            phase: WipePhase::Verify,
            done: u64::MAX,
            total: 0,
        };
        assert_eq!(percent(9, 0, &odd), 100);
    }

    #[test]
    fn outside_pid1_nothing_is_touched() {
        // The test harness is never PID 1.
        let report = HardwareReport {
            disks: vec![disk("vda")],
            ..HardwareReport::default()
        };
        let mut progressed = 0;
        let r = guarded(&report, &mut |_| progressed += 1);
        assert_eq!(r.code.as_deref(), Some("recycle_disabled"));
        assert_eq!(r.outcome, Outcome::Failure);
        assert_eq!(progressed, 0);
    }

    /// As root: the whole recycle path on loop devices pre-filled with a canary. The disk
    /// marked removable in the report is the "boot stick" and must keep its exact bytes.
    #[test]
    fn recycle_wipes_the_fixed_loop_disks_and_leaves_the_removable_one() {
        use std::os::unix::fs::MetadataExt;
        use std::process::Command;
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            eprintln!("skipped: not root (loop devices need root)");
            return;
        }
        struct Loop(String);
        impl Drop for Loop {
            fn drop(&mut self) {
                let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
            }
        }
        let size: usize = 24 << 20;
        let canary: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
        let tmp = tempfile::tempdir().unwrap();
        let mut loops = Vec::new();
        for n in 0..3 {
            let f = tmp.path().join(format!("d{n}.img"));
            std::fs::write(&f, &canary).unwrap();
            let out = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&f)
                .output()
                .unwrap();
            if !out.status.success() {
                eprintln!("skipped: losetup failed");
                return;
            }
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            loops.push((Loop(dev), f));
        }
        let name = |i: usize| loops[i].0.0.trim_start_matches("/dev/").to_owned();
        let mut disks: Vec<Disk> = (0..3)
            .map(|i| Disk {
                serial: None,
                transport: None,
                size_bytes: size as u64,
                ..disk(&name(i))
            })
            .collect();
        disks[2].removable = Some(true);
        let hw = HardwareReport {
            disks,
            ..HardwareReport::default()
        };
        let mut stages = Vec::new();
        let r = recycle(&hw, &SystemPaths::live(), &mut |p| {
            stages.push((p.stage, p.percent.unwrap_or(0)))
        });
        assert_eq!(r.outcome, Outcome::Success, "{r:?}");
        let wipes = r.detail.unwrap()["wipes"].clone();
        let records: Vec<WipeRecord> = serde_json::from_value(wipes).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|w| w.verified && w.code.is_none()));
        assert_eq!(records[0].disk, name(0));
        assert!(stages.windows(2).all(|w| w[0].1 <= w[1].1), "{stages:?}");
        assert!(stages.iter().any(|s| s.0 == "verify"));
        // Host-side full scan of the backing files.
        for (_, f) in &loops[..2] {
            let bytes = std::fs::read(f).unwrap();
            assert!(bytes.iter().all(|&b| b == 0), "{} kept data", f.display());
        }
        assert_eq!(std::fs::read(&loops[2].1).unwrap(), canary);
    }
}

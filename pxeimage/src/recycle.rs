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
//! The order may keep disks out ([`Order::Recycle`](pxe_api::agent::Order::Recycle)'s
//! `keep_disks`, by serial or WWN): those are never opened and are listed in
//! `detail.skipped` with reason [`KEPT_BY_ORDER`], beside the disks skipped for what they are
//! (removable, USB, read-only). A kept identifier that names no disk of the report refuses
//! the whole order (`keep_disk_not_found`): the disk it meant to protect may be there under
//! another name, and a wipe cannot be undone. Right before the first wipe the agent re-asks
//! the appliance whether the order still stands (`confirm`); if not, nothing is wiped
//! (`order_withdrawn`).
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
use pxe_api::agent::{Outcome, ProgressReport, ResultReport, disk_id_matches};
use pxe_api::hardware::{Disk, HardwareReport};

use crate::agent::{Confirm, ORDER_WITHDRAWN};

/// The order's name in reports.
pub const ORDER: &str = "recycle";

/// Skip reason of a disk the order keeps.
pub const KEPT_BY_ORDER: &str = "kept_by_order";

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

/// Why a disk is not wiped under an order keeping `keep_disks` (serials/WWNs): kept by the
/// order first, else [`skip_reason`] (pure).
pub fn skip_reason_for(disk: &Disk, keep_disks: &[String]) -> Option<&'static str> {
    if keep_disks
        .iter()
        .any(|k| disk_id_matches(k, disk.serial.as_deref(), disk.wwn.as_deref()))
    {
        Some(KEPT_BY_ORDER)
    } else {
        skip_reason(disk)
    }
}

/// The disks to wipe, in report order (pure).
pub fn wipe_targets<'a>(report: &'a HardwareReport, keep_disks: &[String]) -> Vec<&'a Disk> {
    report
        .disks
        .iter()
        .filter(|d| skip_reason_for(d, keep_disks).is_none())
        .collect()
}

/// The kept identifiers that name no disk of the report (pure).
pub fn unmatched_keeps<'a>(report: &HardwareReport, keep_disks: &'a [String]) -> Vec<&'a str> {
    keep_disks
        .iter()
        .filter(|k| {
            !report
                .disks
                .iter()
                .any(|d| disk_id_matches(k, d.serial.as_deref(), d.wwn.as_deref()))
        })
        .map(String::as_str)
        .collect()
}

/// The disks of the report that are not wiped, with why, for `detail.skipped` (pure).
pub fn skipped(report: &HardwareReport, keep_disks: &[String]) -> Vec<serde_json::Value> {
    report
        .disks
        .iter()
        .filter_map(|d| {
            skip_reason_for(d, keep_disks).map(|why| {
                serde_json::json!({
                    "disk": d.name, "serial": d.serial, "wwn": d.wwn, "reason": why,
                })
            })
        })
        .collect()
}

/// The result to send for a set of wipe records (pure): success only when every record
/// verified and there was at least one disk, unless every fixed disk was kept by the order.
pub fn result_report(records: &[WipeRecord], skipped: &[serde_json::Value]) -> ResultReport {
    let detail = serde_json::json!({ "wipes": records, "skipped": skipped });
    let kept = skipped
        .iter()
        .filter(|s| s["reason"] == KEPT_BY_ORDER)
        .count();
    let failed: Vec<&WipeRecord> = records
        .iter()
        .filter(|r| r.outcome != WipeOutcome::Success || !r.verified)
        .collect();
    let (outcome, code, message) = match (records.is_empty(), failed.first()) {
        (true, _) if kept > 0 => (
            Outcome::Success,
            None,
            format!("no disk wiped: the order keeps all {kept} fixed disk(s)"),
        ),
        (true, _) => (
            Outcome::Failure,
            Some("no_disks".to_owned()),
            "the hardware report lists no fixed disk to wipe".to_owned(),
        ),
        (false, None) => (
            Outcome::Success,
            None,
            if kept > 0 {
                format!(
                    "{} disk(s) cleared and verified, {kept} kept by the order",
                    records.len()
                )
            } else {
                format!("{} disk(s) cleared and verified", records.len())
            },
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

/// A failure that touched nothing.
fn refusal(code: &str, message: String, skipped: Vec<serde_json::Value>) -> ResultReport {
    ResultReport {
        order: ORDER.to_owned(),
        outcome: Outcome::Failure,
        code: Some(code.to_owned()),
        message: Some(message),
        detail: Some(serde_json::json!({ "wipes": [], "skipped": skipped })),
    }
}

/// Wipes every disk of `hardware` but the kept ones on the live system (`paths`) and returns
/// the result to report. Progress goes to `progress`, once per whole percent. `confirm` is
/// asked once, right before the first disk is opened; on `Err` nothing is wiped.
pub fn recycle(
    hardware: &HardwareReport,
    keep_disks: &[String],
    paths: &SystemPaths,
    progress: &mut dyn FnMut(ProgressReport),
    confirm: &mut Confirm<'_>,
) -> ResultReport {
    let skipped_disks = skipped(hardware, keep_disks);
    let unmatched = unmatched_keeps(hardware, keep_disks);
    if !unmatched.is_empty() {
        crate::error!(
            "recycle: refused, no disk has serial or WWN {}",
            unmatched.join(", ").escape_debug()
        );
        return refusal(
            "keep_disk_not_found",
            format!(
                "the order keeps {} but no disk of this machine has that serial or WWN; \
                 nothing was wiped",
                unmatched.join(", ").escape_debug()
            ),
            skipped_disks,
        );
    }
    let disks = wipe_targets(hardware, keep_disks);
    for d in &hardware.disks {
        if let Some(why) = skip_reason_for(d, keep_disks) {
            crate::info!("recycle: not wiping {} ({why})", d.name);
        }
    }
    if let Err(why) = confirm() {
        return refusal(
            ORDER_WITHDRAWN,
            format!("{why}; nothing was wiped"),
            skipped_disks,
        );
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
            bytes_done: None,
            bytes_total: None,
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
                        bytes_done: Some(p.done),
                        bytes_total: Some(p.total),
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
    result_report(&records, &skipped_disks)
}

/// The executor's default for `recycle`: the live wipe as PID 1, `recycle_disabled`
/// anywhere else (nothing opened).
pub fn guarded(
    hardware: &HardwareReport,
    keep_disks: &[String],
    progress: &mut dyn FnMut(ProgressReport),
    confirm: &mut Confirm<'_>,
) -> ResultReport {
    if std::process::id() != 1 {
        crate::warn!("recycle: refused, this agent is not running as PID 1");
        return disabled();
    }
    recycle(
        hardware,
        keep_disks,
        &SystemPaths::live(),
        progress,
        confirm,
    )
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
        let names: Vec<&str> = wipe_targets(&report, &[])
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

    /// Kept ids, then the expected targets, skip reasons and unmatched ids.
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        &'a [Option<&'a str>],
        &'a [&'a str],
    );

    #[test]
    fn kept_disks_are_matched_by_serial_or_wwn_and_listed_as_skipped() {
        let mut wwn = disk("sdb");
        wwn.serial = None;
        wwn.wwn = Some("naa.5000c500a1b2c3d4".into());
        let mut usb = disk("sdc");
        usb.transport = Some("usb".into());
        let report = HardwareReport {
            disks: vec![disk("sda"), wwn, usb, disk("nvme0n1")],
            ..HardwareReport::default()
        };
        #[rustfmt::skip]
        let table: &[Case] = &[
            // keep                                  targets          reasons                  unmatched
            (&[], &["sda", "sdb", "nvme0n1"], &[None, None, Some("usb"), None], &[]),
            (&["SER-sda"], &["sdb", "nvme0n1"],
                &[Some(KEPT_BY_ORDER), None, Some("usb"), None], &[]),
            (&[" NAA.5000C500A1B2C3D4 ", "ser-nvme0n1"], &["sda"],
                &[None, Some(KEPT_BY_ORDER), Some("usb"), Some(KEPT_BY_ORDER)], &[]),
            // A kept USB stick is reported as kept; an unknown id is reported as unmatched.
            (&["SER-sdc", "SER-gone"], &["sda", "sdb", "nvme0n1"],
                &[None, None, Some(KEPT_BY_ORDER), None], &["SER-gone"]),
            // Never matched: a prefix, or a name instead of a serial.
            (&["SER-sd", "sda"], &["sda", "sdb", "nvme0n1"],
                &[None, None, Some("usb"), None], &["SER-sd", "sda"]),
        ];
        for (keep, targets, reasons, unmatched) in table {
            let keep: Vec<String> = keep.iter().map(|s| (*s).to_owned()).collect();
            let names: Vec<&str> = wipe_targets(&report, &keep)
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            assert_eq!(&names, targets, "{keep:?}");
            let got: Vec<Option<&str>> = report
                .disks
                .iter()
                .map(|d| skip_reason_for(d, &keep))
                .collect();
            assert_eq!(&got, reasons, "{keep:?}");
            assert_eq!(&unmatched_keeps(&report, &keep), unmatched, "{keep:?}");
            let sk = skipped(&report, &keep);
            assert_eq!(sk.len(), reasons.iter().flatten().count());
            for s in &sk {
                let d = report.disks.iter().find(|d| s["disk"] == d.name).unwrap();
                assert_eq!(s["reason"], skip_reason_for(d, &keep).unwrap());
                assert_eq!(s["serial"], serde_json::json!(d.serial));
            }
        }
    }

    #[test]
    fn nothing_is_opened_when_a_kept_disk_is_missing_or_the_order_is_withdrawn() {
        // Disk names that exist nowhere: reaching preflight would fail differently.
        let report = HardwareReport {
            disks: vec![disk("vdzz"), disk("vdzy")],
            ..HardwareReport::default()
        };
        let mut progressed = 0;
        let mut asked = 0;
        let r = recycle(
            &report,
            &["SER-gone".to_owned()],
            &SystemPaths::live(),
            &mut |_| progressed += 1,
            &mut || {
                asked += 1;
                Ok(())
            },
        );
        assert_eq!(r.outcome, Outcome::Failure);
        assert_eq!(r.code.as_deref(), Some("keep_disk_not_found"));
        assert_eq!(
            (progressed, asked),
            (0, 0),
            "refused before asking or touching"
        );

        let r = recycle(
            &report,
            &["SER-vdzy".to_owned()],
            &SystemPaths::live(),
            &mut |_| progressed += 1,
            &mut || {
                asked += 1;
                Err("the appliance revoked this boot's token".into())
            },
        );
        assert_eq!(r.outcome, Outcome::Failure);
        assert_eq!(r.code.as_deref(), Some(ORDER_WITHDRAWN));
        assert!(r.message.as_deref().unwrap().contains("revoked"), "{r:?}");
        assert_eq!((progressed, asked), (0, 1));
        let detail = r.detail.unwrap();
        assert_eq!(detail["wipes"], serde_json::json!([]));
        assert_eq!(detail["skipped"][0]["disk"], "vdzy");
        assert_eq!(detail["skipped"][0]["reason"], KEPT_BY_ORDER);
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
        let ok = result_report(&[record("vda", None), record("vdb", None)], &[]);
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

        let bad = result_report(
            &[record("vda", None), record("vdb", Some("verify_nonzero"))],
            &[],
        );
        assert_eq!(bad.outcome, Outcome::Failure);
        assert_eq!(bad.code.as_deref(), Some("verify_nonzero"));
        assert_eq!(bad.detail.unwrap()["wipes"].as_array().unwrap().len(), 2);

        let none = result_report(&[], &[]);
        assert_eq!(none.outcome, Outcome::Failure);
        assert_eq!(none.code.as_deref(), Some("no_disks"));
        assert_eq!(none.order, "recycle");
        // Every fixed disk kept by the order: nothing to wipe is what the operator asked.
        let usb = serde_json::json!({"disk": "sdz", "reason": "usb"});
        let kept = serde_json::json!({"disk": "vdb", "reason": KEPT_BY_ORDER});
        assert_eq!(
            result_report(&[], std::slice::from_ref(&usb))
                .code
                .as_deref(),
            Some("no_disks")
        );
        let all_kept = result_report(&[], &[usb, kept.clone()]);
        assert_eq!(all_kept.outcome, Outcome::Success);
        let partly = result_report(&[record("vda", None)], std::slice::from_ref(&kept));
        assert_eq!(partly.outcome, Outcome::Success);
        assert_eq!(
            partly.message.as_deref(),
            Some("1 disk(s) cleared and verified, 1 kept by the order")
        );
        assert_eq!(partly.detail.unwrap()["skipped"][0], kept);
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
        let mut asked = 0;
        let r = guarded(&report, &[], &mut |_| progressed += 1, &mut || {
            asked += 1;
            Ok(())
        });
        assert_eq!(asked, 0);
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
        for n in 0..4 {
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
        let mut disks: Vec<Disk> = (0..4)
            .map(|i| Disk {
                serial: (i == 3).then(|| "KEEP-ME".to_owned()),
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
        let mut asked = 0;
        let r = recycle(
            &hw,
            &["keep-me".to_owned()],
            &SystemPaths::live(),
            &mut |p| stages.push((p.stage, p.percent.unwrap_or(0))),
            &mut || {
                asked += 1;
                Ok(())
            },
        );
        assert_eq!(r.outcome, Outcome::Success, "{r:?}");
        assert_eq!(asked, 1, "re-checked once, before the first wipe");
        let detail = r.detail.unwrap();
        let reasons: Vec<(&str, &str)> = detail["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["disk"].as_str().unwrap(), s["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(
            reasons,
            [
                (name(2).as_str(), "removable"),
                (name(3).as_str(), KEPT_BY_ORDER)
            ]
        );
        let wipes = detail["wipes"].clone();
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
        assert_eq!(std::fs::read(&loops[3].1).unwrap(), canary, "the kept disk");
    }
}

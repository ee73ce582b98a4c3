//! `pxe-api`: the vocabulary shared by the appliance (`pxe-server`) and its agent (`pxeimage`).
//!
//! Serde types only: no I/O, no async runtime, no workspace dependencies. Changing a type here
//! changes the wire format between server and agent, so fields are only ever added (with
//! `#[serde(default)]`) within `/api/v1`.

pub mod agent;
pub mod error;
pub mod hardware;
pub mod mac;
pub mod machine;
pub mod routes;

pub use error::{ApiError, ErrorBody};
pub use hardware::HardwareReport;
pub use mac::Mac;
pub use machine::{IdentityKind, MachineState, MachineView};

#[cfg(test)]
mod tests {
    use super::agent::Order;

    #[test]
    fn order_wire_format_is_tagged() {
        let o = Order::Install {
            snapshot: "debian-12".into(),
            url: "/assets/snapshots/debian-12".into(),
        };
        let j = serde_json::to_string(&o).unwrap();
        assert_eq!(
            j,
            r#"{"order":"install","snapshot":"debian-12","url":"/assets/snapshots/debian-12"}"#
        );
        let w: Order = serde_json::from_str(r#"{"order":"wait","retry_after_secs":5}"#).unwrap();
        assert_eq!(
            w,
            Order::Wait {
                retry_after_secs: 5
            }
        );
    }

    #[test]
    fn recycle_scope_is_backward_compatible() {
        // An unscoped recycle is exactly the old wire form, both ways.
        let plain = Order::Recycle { keep_disks: vec![] };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"order":"recycle"}"#
        );
        let old: Order = serde_json::from_str(r#"{"order":"recycle"}"#).unwrap();
        assert_eq!(old, plain);
        let scoped = Order::Recycle {
            keep_disks: vec!["SER-2".into()],
        };
        let j = serde_json::to_string(&scoped).unwrap();
        assert_eq!(j, r#"{"order":"recycle","keep_disks":["SER-2"]}"#);
        assert_eq!(serde_json::from_str::<Order>(&j).unwrap(), scoped);
        assert_eq!(scoped.name(), "recycle");
    }

    #[test]
    fn disk_ids_match_serial_or_wwn_loosely_but_never_empty() {
        use super::agent::disk_id_matches as m;
        assert!(m("SER-2", Some("SER-2"), None));
        assert!(m(" ser-2 ", Some("SER-2  "), None));
        assert!(m(
            "naa.5000c500a1b2c3d4",
            None,
            Some("NAA.5000C500A1B2C3D4")
        ));
        assert!(m("WWN1", Some("SER-2"), Some("wwn1")));
        assert!(!m("SER-2", Some("SER-20"), None));
        assert!(!m("SER-2", None, None));
        assert!(!m("", Some(""), Some("")));
        assert!(!m("  ", Some("  "), None));
    }
}

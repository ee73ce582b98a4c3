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
}

//! HTTP paths, in one place so the server, the agent, the CLI and the tests agree.

/// iPXE boot script: `GET /boot.ipxe?mac=..&serial=..&uuid=..&buildarch=..&platform=..`.
pub const BOOT_SCRIPT: &str = "/boot.ipxe";
/// Static assets (kernel, initramfs, iPXE binaries, snapshots): `GET /assets/{name}`.
pub const ASSETS_PREFIX: &str = "/assets/";
/// Liveness probe.
pub const HEALTHZ: &str = "/healthz";
/// OpenAPI document.
pub const OPENAPI: &str = "/api/v1/openapi.json";

/// Operator: list machines (`?state=`).
pub const MACHINES: &str = "/api/v1/machines";

/// Operator: one machine, by id, serial or MAC.
pub fn machine(id: &str) -> String {
    format!("/api/v1/machines/{id}")
}

/// Operator: an action on one machine (`install`, `recycle`, `broken`, `in-use`, `retire`,
/// `history`).
pub fn machine_action(id: &str, action: &str) -> String {
    format!("/api/v1/machines/{id}/{action}")
}

/// Agent: register a hardware report (`POST`, per-boot token).
pub const AGENT_REGISTER: &str = "/api/v1/agent/register";
/// Agent: fetch orders (`GET`, per-boot token).
pub const AGENT_ORDERS: &str = "/api/v1/agent/orders";
/// Agent: report progress (`POST`, per-boot token).
pub const AGENT_PROGRESS: &str = "/api/v1/agent/progress";
/// Agent: report the result of an order (`POST`, per-boot token).
pub const AGENT_RESULT: &str = "/api/v1/agent/result";

/// Kernel command-line key carrying the appliance's base URL.
pub const CMDLINE_URL: &str = "rackhand.url";
/// Kernel command-line key carrying the per-boot agent token.
pub const CMDLINE_TOKEN: &str = "rackhand.token";

//! The real `pxe-server` inside a namespace, reached from inside the namespace only.

use rackhand_tests::gate::{self, Need, announce};
use rackhand_tests::proc::pid_alive;
use rackhand_tests::{Appliance, ApplianceConfig, Netns, Result, WorkDir, leak};

#[test]
fn appliance_serves_health_boot_script_and_cli_inside_the_namespace() -> Result<()> {
    let test = "appliance_serves_health_boot_script_and_cli_inside_the_namespace";
    if !gate::require(
        test,
        &[Need::Root, Need::Iproute, Need::Curl, Need::PxeServer],
    )? {
        return Ok(());
    }
    let dir = WorkDir::new(test)?;
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).expect("assets dir");
    let ns = Netns::new(0)?;
    let name = ns.name().to_owned();
    let t0 = std::time::Instant::now();
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::http_only(&assets))?;
    announce(&format!(
        "TIMING {test}: {} healthy after {:.2} s",
        app.binary().display(),
        t0.elapsed().as_secs_f64()
    ));
    let pid = app.pid().expect("pid");

    let health = app.get("/healthz")?;
    assert_eq!((health.status, health.body.trim()), (200, "ok"));

    // An unknown machine asking for its script gets an iPXE script that points back at the
    // public URL, never at anything outside the namespace.
    let script = app.get("/boot.ipxe?mac=52-54-00-99-00-01&platform=pcbios&serial=RH-TEST-0001")?;
    assert_eq!(script.status, 200, "{}", script.body);
    assert!(script.body.starts_with("#!ipxe"), "{}", script.body);
    assert!(
        script.body.contains("http://10.99.0.1:8080"),
        "{}",
        script.body
    );

    // The operator API wants the token; the CLI (run inside the namespace) has it.
    let denied = app.get("/api/v1/machines")?;
    assert_eq!(denied.status, 401, "{}", denied.body);
    let machines = app.machines()?;
    assert!(machines.is_empty(), "{machines:?}");

    // A bad request gets a clear error, not a script.
    let bad = app.get("/boot.ipxe?mac=not-a-mac")?;
    assert_eq!(bad.status, 400, "{}", bad.body);

    drop(app);
    assert!(
        !pid_alive(pid),
        "pxe-server {pid} survived the appliance's drop"
    );
    drop(ns);
    assert_eq!(leak::scan_netns(&name), vec![]);
    Ok(())
}

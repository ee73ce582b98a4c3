//! The published OpenAPI document matches the routes, and `--help` fits 80 columns.

use crate::common::Server;

#[test]
fn openapi_is_served_and_lists_every_route() {
    let s = Server::start();
    let (st, body) = s.request("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(st, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/boot.ipxe"),
        ("get", "/assets/{path}"),
        ("get", "/api/v1/machines"),
        ("get", "/api/v1/machines/{id}"),
        ("get", "/api/v1/machines/{id}/history"),
        ("post", "/api/v1/machines/{id}/install"),
        ("post", "/api/v1/machines/{id}/recycle"),
        ("post", "/api/v1/machines/{id}/broken"),
        ("post", "/api/v1/machines/{id}/in-use"),
        ("post", "/api/v1/machines/{id}/retire"),
        ("post", "/api/v1/agent/register"),
        ("get", "/api/v1/agent/orders"),
        ("post", "/api/v1/agent/progress"),
        ("post", "/api/v1/agent/result"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
        // And the route exists: an unauthenticated call is never the router's 404.
        let real = path.replace("{id}", "x").replace("{path}", "vmlinuz");
        let (st, resp) = s.request(&method.to_uppercase(), &real, None, Some("{}"));
        assert!(
            !resp.contains("\"not_found\""),
            "{method} {path} is not routed: {st}"
        );
    }
}

#[test]
fn help_fits_80_columns() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["machine", "--help"],
        &["machine", "list", "--help"],
        &["machine", "install", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pxe-server"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{args:?}: {line:?}");
        }
    }
}

//! Asset paths: hundreds of traversal payloads read nothing outside the assets directory.

use crate::common::Server;

const CANARY: &str = "CANARY-7f3a9c-outside-the-assets-root";

fn payloads() -> Vec<String> {
    let ups = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e.",
        "%252e%252e",
        "..%00",
        "%c0%ae%c0%ae",
        "..%c0%af",
        "%uff0e%uff0e",
        "．．",
        "...",
        "....",
        "..;",
        "..\\",
        "%5c..",
    ];
    let seps = ["/", "%2f", "%2F", "%5c", "\\", "%252f", "//", "/./", "%00/"];
    let targets = [
        "secret.txt",
        "etc/passwd",
        "data/operator.token",
        "data/rackhand.db",
    ];
    let mut v = Vec::new();
    for u in ups {
        for sep in seps {
            for depth in [1, 2, 4] {
                let prefix: String = (0..depth).map(|_| format!("{u}{sep}")).collect();
                v.push(format!(
                    "/assets/{prefix}{}",
                    targets[depth % targets.len()]
                ));
            }
        }
    }
    for extra in [
        "/assets//etc/passwd",
        "/assets/%2fetc%2fpasswd",
        "/assets/link-out",
        "/assets/link-out/secret.txt",
        "/assets/dir-out/secret.txt",
        "/assets/dir-out/data/operator.token",
        "/assets/snapshots/../../secret.txt",
        "/assets/vmlinuz/../../secret.txt",
        "/assets/vmlinuz%00.txt",
        "/assets/.hidden",
        "/assets/",
        "/assets/snapshots",
        "/assets/snapshots/",
        "/assets/~root",
        "/assets/C:%5cwindows",
        "/../secret.txt",
        "/assets/../secret.txt",
    ] {
        v.push(extra.to_owned());
    }
    v
}

#[test]
fn traversal_payloads_read_nothing_outside_the_root() {
    let s = Server::start();
    let root = s.root.path();
    std::fs::write(root.join("secret.txt"), CANARY).unwrap();
    std::fs::write(root.join("assets/.hidden"), CANARY).unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("assets/link-out")).unwrap();
    std::os::unix::fs::symlink("..", root.join("assets/dir-out")).unwrap();
    let payloads = payloads();
    assert!(payloads.len() >= 200, "{}", payloads.len());
    for p in &payloads {
        let req = format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (st, body) = s.raw(req.as_bytes());
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(CANARY), "{p} leaked the canary");
        assert!(!text.contains("root:x:0"), "{p} leaked /etc/passwd");
        assert!(!text.contains(&s.op), "{p} leaked the operator token");
        assert!([400, 404].contains(&st), "{p}: status {st}");
    }
    // And the legitimate file is served, with ranges.
    let (st, body) = s.raw(
        b"GET /assets/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=4-7\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 206);
    assert!(String::from_utf8_lossy(&body).ends_with("4567"));
}

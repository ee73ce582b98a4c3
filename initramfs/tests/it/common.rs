//! A synthetic spec shaped like the real agent initramfs.

use initramfs::{Spec, SpecError};

/// The spec used by the golden and reproducibility tests. `reversed` adds the same
/// entries in the opposite order.
pub(crate) fn agent_like_spec(reversed: bool) -> Result<Spec, SpecError> {
    type Add = Box<dyn Fn(&mut Spec) -> Result<(), SpecError>>;
    let steps: Vec<Add> = vec![
        Box::new(|s| s.add_file("init", 0o755, b"\x7fELF-not-really".to_vec())),
        Box::new(|s| s.add_char_device("dev/console", 0o600, 5, 1)),
        Box::new(|s| s.add_dir("dev", 0o755)),
        Box::new(|s| s.add_dir("proc", 0o555)),
        Box::new(|s| s.add_dir("sys", 0o555)),
        Box::new(|s| s.add_dir("run", 0o755)),
        Box::new(|s| s.add_dir("tmp", 0o1777)),
        Box::new(|s| {
            s.add_file(
                "lib/modules/6.1.0-test-amd64/kernel/drivers/net/virtio_net.ko",
                0o644,
                vec![0xAB; 1000],
            )
        }),
        Box::new(|s| {
            s.add_file(
                "lib/modules/6.1.0-test-amd64/modules.dep",
                0o644,
                b"kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n".to_vec(),
            )
        }),
        Box::new(|s| s.add_symlink("sbin", "bin")),
    ];
    let mut spec = Spec::new();
    if reversed {
        steps.iter().rev().try_for_each(|f| f(&mut spec))?;
    } else {
        steps.iter().try_for_each(|f| f(&mut spec))?;
    }
    Ok(spec)
}

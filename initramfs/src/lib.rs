//! Reproducible newc cpio initramfs assembly.

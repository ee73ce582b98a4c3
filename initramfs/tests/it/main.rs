//! Integration tests for the `initramfs` crate: golden listings, round trips through the
//! reader and through GNU cpio, and reproducibility.

mod common;
mod gnu_cpio;
mod golden;
mod reproducible;

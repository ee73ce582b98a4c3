//! System-test framework: network namespaces, the real pxe-server binary, QEMU machines.

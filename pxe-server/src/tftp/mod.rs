//! TFTP server (read-only): RFC 1350 with the option extensions of RFC 2347/2348/2349/7440.

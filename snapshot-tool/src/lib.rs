//! Builds, signs, inspects and verifies rackhand OS snapshots (chunked zstd raw images with a signed manifest).

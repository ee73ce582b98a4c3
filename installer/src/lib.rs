//! Writes verified OS snapshots to disks and wipes disks, safe by default.

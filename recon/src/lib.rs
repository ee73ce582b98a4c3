//! Hardware discovery for rackhand: DMI, NICs, disks, CPU and memory from sysfs/procfs under an injectable root.

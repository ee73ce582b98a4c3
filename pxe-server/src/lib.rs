//! The rackhand appliance: store, machine lifecycle, boot decisions, iPXE scripts, REST API,
//! DHCP, TFTP and HTTP.

pub mod dhcp;
pub mod tftp;

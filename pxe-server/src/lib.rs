//! The rackhand appliance: store, machine lifecycle, boot decisions, iPXE scripts, REST API,
//! DHCP, TFTP and HTTP.
//!
//! Pure cores: [`lifecycle`], [`identity`], [`boot`] (and the decision parts of [`dhcp`] and
//! [`tftp`]) open no socket or file and read no clock. [`store`] owns all SQL; [`http`] maps
//! requests onto the cores and the store; [`run`] binds sockets and supervises services.

pub mod app;
pub mod boot;
pub mod cli;
pub mod client;
pub mod config;
pub mod dhcp;
pub mod http;
pub mod identity;
pub mod lifecycle;
pub mod progress;
pub mod run;
pub mod store;
pub mod tftp;
pub mod token;

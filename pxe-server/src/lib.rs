//! The rackhand appliance.

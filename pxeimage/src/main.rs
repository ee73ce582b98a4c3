//! `pxeimage`: the rackhand agent.

fn main() {
    println!("pxeimage {}", env!("CARGO_PKG_VERSION"));
}

//! DHCPv4 server and proxyDHCP: pure decisions, lease allocation, and the socket service.

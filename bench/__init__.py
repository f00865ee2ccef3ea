"""Side-by-side benchmark of proxydhcp against the TFTP and proxyDHCP servers it replaces (issue 6)."""

"""The service: sockets, endpoints, the reply memo and the lifecycle of `proxydhcp serve`."""

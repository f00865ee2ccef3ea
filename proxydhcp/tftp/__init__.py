"""TFTP server (RFC 1350, 2347, 2348, 2349, 7440), usable alone.

It imports nothing from `dhcp/`, `pxe/` or `config.py`; `server.TftpServer(TftpConfig)` is the entry point.
"""

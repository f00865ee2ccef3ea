"""The HTTP file server (UEFI HTTP boot, iPXE over HTTP): read-only, confined to a root like TFTP.

Usable alone (`proxydhcp http`) like the TFTP package; imports nothing from dhcp/, pxe/ or config.py.
"""

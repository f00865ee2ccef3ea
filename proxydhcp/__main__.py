from proxydhcp.cli import main

main()

"""Container engines: one small protocol, adapters over docker-py and podman-py."""

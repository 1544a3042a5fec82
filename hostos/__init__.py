"""hostos: stateless cluster nodes running container units on Docker or Podman."""

__version__ = "0.1.0"

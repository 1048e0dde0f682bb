"""Runtimes: where tenant databases run (Docker; Kubernetes later)."""

from cloner.runtime.base import ContainerInfo, ContainerSpec, OwnedResources, Runtime

__all__ = ["ContainerInfo", "ContainerSpec", "OwnedResources", "Runtime"]

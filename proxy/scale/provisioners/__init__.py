"""Provisioners: how the scaler gets servers.  One per file, all following ``base.Provisioner``."""

from proxy.scale.provisioners.base import Provisioner, ProvisionError, accepts, split_address
from proxy.scale.provisioners.process import ProcessProvisioner
from proxy.scale.provisioners.static import StaticProvisioner

__all__ = [
    "ProcessProvisioner",
    "ProvisionError",
    "Provisioner",
    "StaticProvisioner",
    "accepts",
    "split_address",
]

"""Provisioning and deprovisioning pipelines: ordered, idempotent, timed, compensated."""

from cloner.pipeline.deprovision import Deprovisioner
from cloner.pipeline.provision import PROVISION_STEPS, Provisioner, StepFailed

__all__ = ["PROVISION_STEPS", "Deprovisioner", "Provisioner", "StepFailed"]

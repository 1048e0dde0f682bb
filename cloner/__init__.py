"""cloner: a dedicated, isolated database container per tenant, provisioned from a queue."""

__version__ = "0.1.0"

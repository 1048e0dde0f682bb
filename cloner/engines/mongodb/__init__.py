"""MongoDB engine on pymongo's own asyncio API (``pymongo.AsyncMongoClient``).

Not motor: motor is deprecated upstream in favour of the async API that
pymongo ships itself (generally available since pymongo 4.13), which is a
native asyncio implementation rather than a thread-pool wrapper.

One ``mongod`` per tenant, started with the official ``mongo`` image contract
(``MONGO_INITDB_ROOT_USERNAME`` / ``MONGO_INITDB_ROOT_PASSWORD``, ``--auth``).
The root user lives in ``admin`` and belongs to cloner alone; its bootstrap
password, visible in ``docker inspect``, is replaced on first contact. The
tenant's users (owner / app / readonly) live in the tenant database itself
(``authSource=<db>``), each holding one custom role of that database that
inherits ``dbOwner`` / ``readWrite`` / ``read`` on that database only.

Every command document is built by a pure function in ``commands`` (unit-tested
without a server); ``engine.MongoEngine`` only connects and sends them;
``archive`` reads backups back without a server.

MongoDB differences from PostgreSQL worth knowing:

- a standalone server has no multi-document transactions, so templates are
  applied idempotently step by step (create or ``collMod``, ``createIndexes``,
  seed upserts by ``_id``) and ``schema_info`` records each file once done;
- SCRAM-SHA-256 needs the server to digest the password, so ``createUser``
  carries the cleartext over the loopback connection (the server redacts it
  from its logs); backup tools get the root password from a 0600 file on the
  container's tmpfs, never from their command line;
- there are no per-user connection limits: ``--maxConns`` caps the server;
- ``readWrite`` cannot be narrowed per collection by subtraction, so unlike
  PostgreSQL the app role can write ``schema_info``.
"""

from cloner.engines.mongodb.engine import MongoEngine

__all__ = ["MongoEngine"]

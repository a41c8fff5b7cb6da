"""chatmesh: the shared library every service uses (config, database, Redis, auth, logging, gRPC serving, streams)."""

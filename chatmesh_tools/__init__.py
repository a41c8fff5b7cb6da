"""The tools around the mesh: the `chatmesh` command (up, serve, migrate, status, dead-letter, token,
keygen, bench), the process launcher, and the embedded PostgreSQL and Redis of `chatmesh up`.

Tools may import the services (`migrate` loads each service's store for its schema); no service imports
this package, so a service process never loads it (tests/test_layering.py holds that).
"""

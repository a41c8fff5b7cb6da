"""`chatmesh bench`: the mesh's own load generator and measurements (see docs/performance.md)."""

"""The edge: the mesh's only door for external clients, as REST/JSON and WebSocket."""

"""The fault-injection harness of tests/test_faults.py (GitHub issue 14).

It owns a whole world so it may break any part of it: its own PostgreSQL and Redis (`stores`), the
four services as real processes with a TCP proxy between the edge and the message service
(`cluster`, `proxy`), a steady mixed load of WebSocket devices and retrying senders (`device`,
`load`), the faults themselves (`scenarios`), the invariants checked afterwards (`checks`) and the
table written to docs/reliability.md (`report`).
"""

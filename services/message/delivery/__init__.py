"""The message service's delivery path, in the order a message travels through it.

1. The send's transaction writes the event to the outbox; the relay (chatmesh/outbox.py, shared with
   the conversation service) publishes it to its conversation's partition of the events streams
   (K of them), in commit order.
2. `partitions.py`: each replica fans out the partitions it leases (`leases.py`: one lease per
   partition, about K/N per replica), all read with one XREADGROUP; `fanout.py`: one partition's
   fan-out, which appends each event to every recipient's inbox (one atomic script per round,
   per-conversation seq order enforced), then publishes the batch to the hubs (per recipient, the
   inbox entry each new one follows).
3. `inbox.py`: the inboxes (a Redis stream per user) and the resume tokens that point into them.
4. `hub.py`: each replica's reader of the inboxes its subscribers own; it replays on subscribe,
   hands a live batch's entries straight on where they follow what a subscription sent, and reads
   the inbox to repair any gap.
5. `subscription.py`: one connection's view: the offline buffer merged with the inbox, the order
   check, the acknowledgements.
6. `streams.py`: the gRPC server streams to the edges (the offline buffer from PostgreSQL, and many
   subscriptions multiplexed onto one stream).

`metrics.py` holds the events streams' series (pending, lengths, dead letters, this replica's work).
"""

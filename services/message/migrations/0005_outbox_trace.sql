-- Tracing (chatmesh/tracing.py): the W3C traceparent of the traced write that enqueued an event, NULL
-- for every untraced one. The relay puts it beside the event in the stream and fan-out continues
-- that trace, so one send is one trace across the edge, this service and fan-out.
--
-- send_message (0004) inserts its outbox row itself, so the column's default reads the traceparent
-- from a transaction-local setting that a traced send sets in its transaction (outbox.carry_trace):
-- the function stays as it is, and an untraced send sets nothing (current_setting answers NULL, or ''
-- once the session has seen the setting). outbox.enqueue passes the column directly.
ALTER TABLE outbox ADD COLUMN traceparent text
    DEFAULT NULLIF(current_setting('chatmesh.traceparent', true), '');

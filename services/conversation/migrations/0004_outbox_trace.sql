-- Tracing (chatmesh/tracing.py): the W3C traceparent of the traced write that enqueued an event, NULL
-- for every untraced one; the relay carries it into the events stream, and fan-out continues the
-- trace. outbox.enqueue fills it (the default matches the message service's outbox).
ALTER TABLE outbox ADD COLUMN traceparent text
    DEFAULT NULLIF(current_setting('chatmesh.traceparent', true), '');

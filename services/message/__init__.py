"""The message service: messages, receipts, reactions, and the durable delivery path."""

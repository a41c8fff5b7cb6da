"""The presence service: who is online and who is typing, held in Redis."""

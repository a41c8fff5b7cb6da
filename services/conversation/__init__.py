"""The conversation service: users, conversations, participants and roles."""

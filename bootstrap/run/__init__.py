"""kboot run: one command on several environments, with a result per environment."""

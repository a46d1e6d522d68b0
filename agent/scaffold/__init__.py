"""The agent's program as data: the seed scaffold, sandbox jobs that run it, self-edits."""

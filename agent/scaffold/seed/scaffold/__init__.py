"""A coding agent: `solve` attacks a task, `improve` edits the agent's own repository."""

from scaffold.improve import improve
from scaffold.solve import solve

__all__ = ["improve", "solve"]

"""Knobs of `solve`. An edit to this file is the simplest way for the agent to change itself."""

SAMPLES = 1  # completions drawn per task
TEMPERATURE = 0.0  # 0 = greedy; sampling needs > 0 for several different samples
MAX_TOKENS = 384  # new tokens per completion
# A completion ends where a new top-level statement starts (the function is done).
STOPS = ["\ndef", "\nclass", "\nif", "\nprint", "\n#"]
# With several samples: keep the one that passes most of the prompt's `>>>` examples.
SELECT_BY_EXAMPLES = False

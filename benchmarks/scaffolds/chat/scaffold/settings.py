"""Knobs of `solve`: the instruct model asked in its own chat format."""

SAMPLES = 1  # completions drawn per task
TEMPERATURE = 0.0  # 0 = greedy
MAX_TOKENS = 384  # new tokens per completion
# The reply is the function's body (its opening is put in the model's mouth); it ends at the
# closing fence or where a new top-level statement starts.
STOPS = ["```", "\ndef", "\nclass", "\nif", "\nprint", "\n#", "\nassert"]
INSTRUCTION = (
    "Complete the following Python function so that it does what its docstring says. "
    "Answer with the complete function in one Python code block.\n\n```python\n{prompt}\n```"
)
# With several samples: keep the one that passes most of the prompt's `>>>` examples.
SELECT_BY_EXAMPLES = False

"""Knobs of `solve`: one greedy and SAMPLES sampled candidates, voted by execution agreement."""

SAMPLES = 4  # sampled completions, in addition to the greedy one
TEMPERATURE = 0.8
MAX_TOKENS = 384
STOPS = ["\ndef", "\nclass", "\nif", "\nprint", "\n#"]
SELECT_BY_EXAMPLES = True
INPUT_CALLS = 4  # example calls the model is asked to write
RUN_TIMEOUT_S = 2.0

"""Knobs of `solve`: one greedy and SAMPLES sampled candidates, chosen by the model's own tests."""

SAMPLES = 6  # sampled completions, in addition to the greedy one
TEMPERATURE = 0.8
MAX_TOKENS = 384
STOPS = ["\ndef", "\nclass", "\nif", "\nprint", "\n#"]
TESTS = 5  # asserts the model is asked to write for the entry point
RUN_TIMEOUT_S = 2.0  # per test, in a child process

"""Knobs of `solve`: the greedy continuation, the chat answer and SAMPLES sampled continuations,
chosen by the model's own tests."""

SAMPLES = 2  # sampled continuations, in addition to the greedy one and the chat answer
TEMPERATURE = 0.4  # low: samples at 0.8 were worse one by one than greedy
MAX_TOKENS = 384
STOPS = ["\ndef", "\nclass", "\nif", "\nprint", "\n#"]
CHAT_ASK = "Complete this Python function. Reply with the whole function in one ```python block."
CHAT_MAX_TOKENS = 512  # the reply may explain itself after the code block
TESTS = 5  # asserts the model is asked to write for the entry point
RUN_TIMEOUT_S = 2.0  # per test, in a child process

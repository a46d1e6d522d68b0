"""Knobs of `solve`. An edit to this file is the simplest way for the agent to change itself."""

# How a task is put to the model: "instruct" or "completion".
# - "instruct": a chat, EvalPlus's protocol (the one instruct models' published scores use): the
#   user asks INSTRUCTION with the task's prompt in a code fence, the model's reply is started
#   with RESPONSE_PREFIX and an opening python fence, generation stops at the closing fence
#   (INSTRUCT_STOPS), and the program is the reply's imports and the definitions the entry point
#   needs (`lineage_sanitize`). Needs a model with a chat template: without one, solve falls
#   back to "completion".
# - "completion": the model continues the prompt (signature + docstring) and stops at a new
#   top-level statement (STOPS); the program is the prompt plus that continuation.
PROTOCOL = "instruct"
SAMPLES = 1  # answers drawn per task (each costs a full reply's tokens)
TEMPERATURE = 0.0  # 0 = greedy (the model's best guess); > 0 samples, so SAMPLES differ
MAX_TOKENS = 384  # new tokens per completion ("completion")
INSTRUCT_MAX_TOKENS = 768  # new tokens per reply ("instruct": it restates the signature first)
# A completion ends where a new top-level statement starts (the function is done).
STOPS = ["\ndef", "\nclass", "\nif", "\nprint", "\n#"]
INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:"
)
RESPONSE_PREFIX = (
    "Below is a Python script with a self-contained function that solves the problem and passes "
    "corresponding tests:"
)
# A markdown code fence, spelled so because this file travels inside fenced replies.
FENCE = "`" * 3
# A reply ends at its closing fence, or where it starts a demo after the function.
INSTRUCT_STOPS = ["\n" + FENCE + "\n", "\nif __name__", "\ndef main(", "\nprint("]
# Of several samples, keep the one that passes most of the prompt's `>>>` examples. They run in a
# child process; this helps only when samples differ (TEMPERATURE > 0).
SELECT_BY_EXAMPLES = False
# Extra samples, drawn only for a task whose programs so far fail its `>>>` examples (0 = never).
# They are sampled at RETRY_TEMPERATURE and the program passing most examples is kept; tasks whose
# examples pass cost nothing extra.
RETRY_SAMPLES = 0
RETRY_TEMPERATURE = 0.8  # how varied the extra samples are (0 = all the same)
# Repair rounds for a task whose best program still fails a `>>>` example (0 = never): the model
# is shown its program and what the first failing example returned against what was expected,
# and asked for a corrected script (greedy, "instruct" only). A fix is kept only when it passes
# more examples; tasks whose examples pass cost nothing extra.
REPAIR_ROUNDS = 0
REPAIR_INSTRUCTION = (
    "This script is wrong: {failure}. Please provide the corrected self-contained Python "
    "script in a markdown code block."
)

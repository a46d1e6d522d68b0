from scaffold.text import doc_examples, last_code_block


def test_last_code_block():
    reply = "Sure.\n```python\nx = 1\n```\nor better\n```python\nx = 2\n```\n"
    assert last_code_block(reply) == "x = 2\n"
    assert last_code_block("no code here") is None


def test_doc_examples():
    prompt = 'def f(x):\n    """\n    >>> f(2)\n    4\n    """\n'
    assert doc_examples(prompt) == [("f(2)", "4")]


def test_examples_passed_counts_and_survives_a_loop():
    from scaffold.solve import examples_passed

    prompt = 'def f(x):\n    """\n    >>> f(2)\n    4\n    >>> f(3)\n    9\n    """\n'
    assert examples_passed(prompt + "    return x * x\n", prompt) == 2
    assert examples_passed(prompt + "    return x + 2\n", prompt) == 1
    assert examples_passed(prompt + "    while True: pass\n", prompt) == 0

from scaffold.imports import with_missing_imports


def test_adds_what_is_used_but_not_imported():
    program = "def f(s):\n    return re.findall('a', s), Counter(s), math.sqrt(4)\n"
    fixed = with_missing_imports(program)
    assert fixed.splitlines()[:3] == ["import math", "import re", "from collections import Counter"]
    namespace = {}
    exec(fixed, namespace)
    assert namespace["f"]("aab")[0] == ["a", "a"]


def test_leaves_defined_names_and_broken_code_alone():
    own = "import re\ndef sqrt(x):\n    return x\ndef f(math):\n    return sqrt(math) + re.I\n"
    assert with_missing_imports(own) == own
    assert with_missing_imports("def f(:\n") == "def f(:\n"

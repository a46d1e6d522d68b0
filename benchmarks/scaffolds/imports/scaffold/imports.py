"""Small models often use `re`, `math` or `Counter` without importing them (the prompt's own
imports are all they see), and the program dies with a NameError. Add the standard-library
imports such names need; a name the program defines itself is left alone."""

import ast
import builtins

MODULES = {
    "re",
    "math",
    "cmath",
    "itertools",
    "collections",
    "heapq",
    "functools",
    "string",
    "bisect",
    "operator",
    "statistics",
    "sys",
    "random",
    "copy",
    "fractions",
    "decimal",
    "datetime",
    "json",
}
FROM = {
    "Counter": "collections",
    "defaultdict": "collections",
    "deque": "collections",
    "OrderedDict": "collections",
    "namedtuple": "collections",
    "reduce": "functools",
    "lru_cache": "functools",
    "cmp_to_key": "functools",
    "combinations": "itertools",
    "permutations": "itertools",
    "product": "itertools",
    "accumulate": "itertools",
    "groupby": "itertools",
    "chain": "itertools",
    "zip_longest": "itertools",
    "combinations_with_replacement": "itertools",
    "heappush": "heapq",
    "heappop": "heapq",
    "heapify": "heapq",
    "nlargest": "heapq",
    "nsmallest": "heapq",
    "gcd": "math",
    "sqrt": "math",
    "floor": "math",
    "ceil": "math",
    "factorial": "math",
    "comb": "math",
    "isqrt": "math",
    "inf": "math",
    "pi": "math",
    "bisect_left": "bisect",
    "bisect_right": "bisect",
    "insort": "bisect",
    "List": "typing",
    "Tuple": "typing",
    "Dict": "typing",
    "Set": "typing",
    "Optional": "typing",
    "Any": "typing",
    "Union": "typing",
}


def missing_names(program):
    """Names the program reads but never binds (and that are not builtins)."""
    tree = ast.parse(program)
    loaded, bound = set(), set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return loaded - bound


def with_missing_imports(program):
    """The program with the imports its unbound standard-library names need, first."""
    try:
        missing = missing_names(program)
    except SyntaxError:
        return program
    lines = [f"import {name}" for name in sorted(missing & MODULES)]
    lines += [f"from {FROM[name]} import {name}" for name in sorted(missing & set(FROM))]
    return "".join(line + "\n" for line in lines) + program if lines else program

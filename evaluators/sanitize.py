"""From a model's reply to the program that is judged, the way EvalPlus post-processes replies.

An instruct model answers in prose and markdown: a code block, maybe a second one with usage, an
`if __name__ == "__main__":` demo, asserts and prints at top level. EvalPlus judges what is left
after two steps, and so do we:

1. `extract_code`: the longest run of whole lines (counted in non-blank lines) that parses as
   Python, so prose, fences and half-finished tails fall away;
2. `sanitize`: of that code's top-level statements keep every import (first, in order) and the
   definitions the entry point needs (functions, classes, assignments to names, followed through
   the names each one mentions); everything else at top level (calls, prints, asserts, loops,
   `if __name__` blocks) is dropped.

Where this differs from EvalPlus's tree-sitter version (on purpose, each a case where EvalPlus
drops code the program needs): decorated definitions are kept; with an entry point, a function the
entry point needs is kept even without a `return` (EvalPlus keeps only functions that return,
which drops generators and in-place helpers; without an entry point we keep the same rule, plus
`yield`); a tuple assignment defines each of its names. The first definition of a name wins, as in
EvalPlus. `reply_program` adds EvalPlus's last step (tabs become four spaces before sanitizing)
and judges the raw reply when nothing survives, where EvalPlus would judge an empty program
(both fail, unless the reply defines the entry point somewhere sanitizing drops, such as inside a
top-level `if`).

Standalone on purpose (standard library only, no Lineage imports): the same file is copied into
the agent's sandbox as `lineage_sanitize`, so the seed scaffold judges its replies exactly as
`lineage eval --protocol instruct` does.
"""

import ast

__all__ = ["extract_code", "reply_program", "sanitize"]


def _parses(code):
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def extract_code(text):
    """The longest span of whole lines of `text` that is valid Python ("" if none is).

    Spans are compared by their non-blank lines; among equally long ones the earliest wins. Each
    start is tried with its longest end first, and a start stops being tried once it cannot beat
    the best span found, so a reply that is all code costs one parse.
    """
    lines = text.split("\n")
    nonblank = [0]  # nonblank[k]: non-blank lines among lines[:k]
    for line in lines:
        nonblank.append(nonblank[-1] + bool(line.strip()))
    best, best_span = 0, (0, 0)
    for start in range(len(lines)):
        if nonblank[-1] - nonblank[start] <= best:
            break
        if not lines[start].strip():
            continue
        for end in range(len(lines), start, -1):
            size = nonblank[end] - nonblank[start]
            if size <= best:
                break
            if lines[end - 1].strip() and _parses("\n".join(lines[start:end])):
                best, best_span = size, (start, end)
                break
    return "\n".join(lines[best_span[0] : best_span[1]])


def _defined_names(node):
    """The names a top-level statement defines, or () for one that defines none we keep."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return (node.name,)
    if isinstance(node, ast.AnnAssign) and node.value is not None:
        targets = [node.target]
    elif isinstance(node, ast.Assign):
        targets = node.targets
    else:
        return ()
    names = []
    for target in targets:
        elements = target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
        if not all(isinstance(e, ast.Name) for e in elements):
            return ()  # `a[0] = ...`, `obj.x = ...`: changes something, defines nothing
        names.extend(e.id for e in elements)
    return tuple(names)


def _mentions(node):
    """Every identifier used inside a statement (names and attribute names)."""
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute):
            found.add(child.attr)
    return found


def _returns(node):
    return any(isinstance(n, ast.Return | ast.Yield | ast.YieldFrom) for n in ast.walk(node))


def _segment(code, lines, node):
    """The source of a top-level statement; a decorated definition starts at its decorators."""
    decorators = getattr(node, "decorator_list", None)
    if decorators:
        return "".join(lines[decorators[0].lineno - 1 : node.end_lineno]).rstrip("\n")
    return ast.get_source_segment(code, node)


def sanitize(text, entry_point=None):
    """The program in `text`: its imports and the definitions `entry_point` depends on (all
    definitions when no entry point is given), in source order, ending in a newline ("" if the
    reply holds no code)."""
    code = extract_code(text)
    if not code.strip():
        return ""
    tree = ast.parse(code)
    lines = code.splitlines(keepends=True)
    imports, definitions, taken = [], [], set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            imports.append(node)
            continue
        names = _defined_names(node)
        if not names or taken.intersection(names):
            continue  # not a definition, or a later definition of a name already defined
        is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if is_function and entry_point is None and not _returns(node):
            continue  # a `main()` or a test, not part of a solution
        taken.update(names)
        definitions.append((names, node))
    if entry_point is not None:
        needs = {}
        for names, node in definitions:
            for name in names:
                needs.setdefault(name, set()).update(_mentions(node))
        wanted, todo = {entry_point}, [entry_point]
        while todo:
            for name in needs.get(todo.pop(), ()):
                if name not in wanted:
                    wanted.add(name)
                    todo.append(name)
        definitions = [(names, node) for names, node in definitions if wanted.intersection(names)]
    head = "".join(_segment(code, lines, node) + "\n" for node in imports)
    body = "\n".join(_segment(code, lines, node) + "\n" for _, node in definitions)
    return head + ("\n" if head and body else "") + body


def reply_program(reply, entry_point=None):
    """The program to judge for an instruct reply: EvalPlus's post-processing (tabs to four
    spaces, then `sanitize`). When nothing of the reply survives (it holds no code, or none
    that defines anything), the reply itself: the judge then says what is wrong with it, and an
    empty program would read as an agent that gave no answer."""
    return sanitize(reply.replace("\t", "    "), entry_point) or reply

"""Generated grade-school math word problems in GSM8K's format (the offline default data).

Each problem is one *template* filled with names, objects and numbers. The solution has
one line per arithmetic step, written as GSM8K writes them::

    Mia buys 4 * 7 = <<4*7=28>>28 pencils.
    She has 28 - 5 = <<28-5=23>>23 pencils left.
    #### 23

so one answer extractor (``#### N``) and one arithmetic checker (parse every
``<<expr=result>>``) work for synthetic data, GSM8K and MetaMathQA alike.

Split hygiene: an *instance* is (template, numbers). Test instances are drawn first,
then validation, then train, each rejecting instances already taken, so the same
question with the same numbers never occurs in two splits (names and objects do not
count: "Mia buys 4 * 7" and "Leo buys 4 * 7" are the same instance). Numbers are kept
small (one-digit factors, every result < 250) so a tiny model can learn the
arithmetic in minutes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from mtpsd.errors import MtpsdError

NAMES = [
    ("Mia", "She"), ("Leo", "He"), ("Ava", "She"), ("Sam", "He"), ("Zoe", "She"), ("Ben", "He"),
    ("Lily", "She"), ("Max", "He"), ("Emma", "She"), ("Noah", "He"), ("Ella", "She"), ("Omar", "He"),
    ("Nora", "She"), ("Ivan", "He"), ("Ruby", "She"), ("Finn", "He"),
]
OBJECTS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells",
           "flowers", "stamps", "coins", "balloons", "eggs", "toys", "beads", "candies"]
ITEMS = ["cakes", "shirts", "hats", "bowls", "lamps", "kites", "mugs", "bags"]
CONTAINERS = ["boxes", "bags", "jars", "baskets", "packs", "trays"]

_STEP_RE = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


@dataclass(frozen=True)
class Problem:
    """One generated problem; ``key`` identifies the instance (template + numbers)."""

    key: tuple
    question: str
    answer: str


def _line(text_before: str, a: int, op: str, b: int, result: int, text_after: str) -> str:
    """``"{before}a op b = <<a op b=r>>r{after}"`` (GSM8K style, with spaces outside <<>>)."""
    shown = {"*": "*", "+": "+", "-": "-", "/": "/"}[op]
    return f"{text_before}{a} {shown} {b} = <<{a}{op}{b}={result}>>{result}{text_after}"


def _solution(lines: list[str], final: int) -> str:
    return "\n".join(lines + [f"#### {final}"])


# --- templates: rng -> (numbers, question, solution lines, final) or None (rejected) -------

def _t_packs_give(rng: random.Random):
    (n, p), obj, box = rng.choice(NAMES), rng.choice(OBJECTS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    total = a * b
    c = rng.randint(1, total - 1)
    q = (f"{n} buys {a} {box} of {obj}. Each of the {box} has {b} {obj}. {p} gives away {c} {obj}. "
         f"How many {obj} does {n} have left?")
    lines = [_line(f"{n} buys ", a, "*", b, total, f" {obj}."),
             _line(f"{p} has ", total, "-", c, total - c, f" {obj} left.")]
    return (a, b, c), q, lines, total - c


def _t_sell_two(rng: random.Random):
    (n, p) = rng.choice(NAMES)
    i1, i2 = rng.sample(ITEMS, 2)
    a, b, c, d = (rng.randint(2, 9) for _ in range(4))
    x, y = a * b, c * d
    q = (f"{n} sells {a} {i1} for ${b} each and {c} {i2} for ${d} each. "
         f"How much money does {n} make?")
    lines = [_line(f"The {i1} make $", a, "*", b, x, "."),
             _line(f"The {i2} make $", c, "*", d, y, "."),
             _line(f"{p} makes $", x, "+", y, x + y, " in total.")]
    return (a, b, c, d), q, lines, x + y


def _t_pages_left(rng: random.Random):
    (n, p) = rng.choice(NAMES)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    read = a * b
    c = rng.randint(read + 1, read + 60)
    q = (f"{n} reads {a} pages every day for {b} days. The book has {c} pages. "
         f"How many pages are left to read?")
    lines = [_line(f"{p} reads ", a, "*", b, read, " pages."),
             _line("There are ", c, "-", read, c - read, " pages left.")]
    return (a, b, c), q, lines, c - read


def _t_rows_add_remove(rng: random.Random):
    (n, p), obj = rng.choice(NAMES), rng.choice(OBJECTS)
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 30)
    x = a * b
    y = x + c
    d = rng.randint(1, y - 1)
    q = (f"There are {a} rows of {obj} with {b} {obj} in each row. {n} adds {c} more {obj} "
         f"and then takes away {d} {obj}. How many {obj} are there now?")
    lines = [_line("There are ", a, "*", b, x, f" {obj} in the rows."),
             _line("After adding there are ", x, "+", c, y, f" {obj}."),
             _line("Now there are ", y, "-", d, y - d, f" {obj}.")]
    return (a, b, c, d), q, lines, y - d


def _t_share(rng: random.Random):
    (n, p), obj = rng.choice(NAMES), rng.choice(OBJECTS)
    b, qn = rng.randint(2, 9), rng.randint(2, 9)
    a = b * qn
    c = rng.randint(1, 30)
    q = (f"{n} has {a} {obj} and shares them equally among {b} friends. "
         f"Then each friend finds {c} more {obj}. How many {obj} does each friend have now?")
    lines = [_line("Each friend gets ", a, "/", b, qn, f" {obj}."),
             _line("Each friend now has ", qn, "+", c, qn + c, f" {obj}.")]
    return (a, b, c), q, lines, qn + c


def _t_wage(rng: random.Random):
    (n, p) = rng.choice(NAMES)
    a, b, c = rng.randint(2, 9), rng.randint(1, 5), rng.randint(1, 5)
    h = b + c
    if h > 9:
        return None
    e = h * a
    d = rng.randint(1, e - 1)
    q = (f"{n} earns ${a} per hour. {p} works {b} hours on Monday and {c} hours on Tuesday, "
         f"then spends ${d}. How much money does {n} have left?")
    lines = [_line(f"{p} works ", b, "+", c, h, " hours."),
             _line(f"{p} earns $", h, "*", a, e, "."),
             _line(f"{p} has $", e, "-", d, e - d, " left.")]
    return (a, b, c, d), q, lines, e - d


def _t_friends_total(rng: random.Random):
    (n1, _), (n2, _), (n3, _) = rng.sample(NAMES, 3)
    obj = rng.choice(OBJECTS)
    a, b, c = rng.randint(2, 9), rng.randint(1, 30), rng.randint(2, 9)
    x = a + b
    y = a * c
    s = a + x
    t = s + y
    q = (f"{n1} has {a} {obj}. {n2} has {b} more {obj} than {n1}. {n3} has {c} times as many "
         f"{obj} as {n1}. How many {obj} do they have altogether?")
    lines = [_line(f"{n2} has ", a, "+", b, x, f" {obj}."),
             _line(f"{n3} has ", a, "*", c, y, f" {obj}."),
             _line(f"{n1} and {n2} have ", a, "+", x, s, f" {obj}."),
             _line("Altogether they have ", s, "+", y, t, f" {obj}.")]
    return (a, b, c), q, lines, t


def _t_store_restock(rng: random.Random):
    (n, p), obj, box = rng.choice(NAMES), rng.choice(OBJECTS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    x = a * b
    d = rng.randint(1, x - 1)
    e = rng.randint(1, 40)
    q = (f"A store has {a} {box} with {b} {obj} in each. {n} buys {d} of the {obj}. "
         f"Then the store gets {e} new {obj}. How many {obj} does the store have now?")
    lines = [_line("The store has ", a, "*", b, x, f" {obj}."),
             _line("After the sale it has ", x, "-", d, x - d, f" {obj}."),
             _line("Now it has ", x - d, "+", e, x - d + e, f" {obj}.")]
    return (a, b, d, e), q, lines, x - d + e


TEMPLATES: dict[str, Callable] = {
    "packs_give": _t_packs_give,
    "sell_two": _t_sell_two,
    "pages_left": _t_pages_left,
    "rows_add_remove": _t_rows_add_remove,
    "share": _t_share,
    "wage": _t_wage,
    "friends_total": _t_friends_total,
    "store_restock": _t_store_restock,
}


def sample_problem(rng: random.Random) -> Problem:
    """Draw one problem (rejection-samples templates whose numbers fall out of range)."""
    while True:
        name = rng.choice(sorted(TEMPLATES))
        out = TEMPLATES[name](rng)
        if out is None:
            continue
        numbers, question, lines, final = out
        return Problem(key=(name, *numbers), question=question, answer=_solution(lines, final))


def generate_splits(n_train: int, n_validation: int, n_test: int, *, seed: int) -> dict[str, list[dict]]:
    """Disjoint train/validation/test problems as rows ``{id, question, answer, seed_id}``.

    Test is drawn first, then validation, then train; an instance key already used by an
    earlier split is rejected, so no (template, numbers) occurs in two splits.
    ``seed_id`` is the instance key as text.
    """
    rng = random.Random(seed)
    taken: set[tuple] = set()
    out: dict[str, list[dict]] = {}
    for split, n in (("test", n_test), ("validation", n_validation), ("train", n_train)):
        rows, tries = [], 0
        while len(rows) < n:
            tries += 1
            if tries > 50 * n + 10000:
                raise MtpsdError(
                    f"data.synthetic.n_{split}={n}: only {len(rows)} distinct problems found; "
                    "the generator's instance space is too small for this size"
                )
            prob = sample_problem(rng)
            if prob.key in taken:
                continue
            taken.add(prob.key)
            rows.append({"id": f"synth-{split}-{len(rows):06d}", "question": prob.question,
                         "answer": prob.answer, "seed_id": "|".join(map(str, prob.key))})
        out[split] = rows
    return out


def check_arithmetic(answer: str) -> list[str]:
    """Problems with an answer's arithmetic: every ``<<expr=r>>`` must evaluate to r, and the
    ``#### N`` line must equal the last result. Returns a list of messages (empty = correct)."""
    errors = []
    steps = _STEP_RE.findall(answer)
    for expr, result in steps:
        if not re.fullmatch(r"[0-9+\-*/(). ]+", expr):
            errors.append(f"unsupported expression {expr!r}")
            continue
        value = eval(expr, {"__builtins__": {}})  # noqa: S307 - digits and operators only
        if abs(float(value) - float(result)) > 1e-9:
            errors.append(f"{expr} = {value}, not {result}")
    final = re.findall(r"####\s*(-?[0-9.]+)\s*$", answer)
    if not final:
        errors.append("no final '#### N' line")
    elif steps and float(final[0]) != float(steps[-1][1]):
        errors.append(f"final answer {final[0]} differs from last step result {steps[-1][1]}")
    return errors

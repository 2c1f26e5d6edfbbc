"""The math and code pairs of the Section 5.2 set (data/section52/, docs/section52.md "How it was
written"): every chosen result is right and every rejected one wrong; every chosen function passes
test inputs and every buggy one fails some. These checks were run when the set was written, but the
scripts were not kept. Here they live in the suite, so a file that changes wrongly fails.

The expected values below were worked out by hand from each prompt, not by running the chosen
function or reading the chosen text. Each row also records a keyword of its prompt, so a file
whose rows have been reordered fails clearly instead of quietly checking the wrong row."""
import copy
import json
import math
import re
import signal
from contextlib import contextmanager
from fractions import Fraction as F
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "section52"


def _rows(name):
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]


# ---- code.jsonl: row -> (prompt keyword, function name, the rejected one's bug, cases) --------
# A case is (args, expected); at least one case per row is an input that shows the bug.
CODE = {
    0: ("even numbers", "sum_evens", "sums the odd numbers",
        [(([1, 2, 3, 4],), 6), (([],), 0), (([-2, -3, 5],), -2)]),
    1: ("factorial", "factorial", "multiplies only up to n - 1",
        [((0,), 1), ((1,), 1), ((5,), 120)]),
    2: ("string reversed", "reverse_string", "appends instead of prepending",
        [(("abc",), "cba"), (("",), ""), (("a",), "a")]),
    3: ("largest number", "largest", "starts from 0, wrong for all-negative lists",
        [(([3, 7, 2],), 7), (([-5, -2, -9],), -2)]),
    4: ("forwards and backwards", "is_palindrome", "lowers one side only",
        [(("Racecar",), True), (("abc",), False), (("",), True)]),
    5: ("first occurrence", "find_index", "returns -1 after the first mismatch",
        [(([4, 5, 6], 6), 2), (([1, 2, 1], 1), 0), (([], 1), -1), (([4], 9), -1)]),
    6: ("Celsius to Fahrenheit", "celsius_to_fahrenheit", "5/9 for 9/5",
        [((0,), 32.0), ((100,), 212.0), ((-40,), -40.0), ((37,), 98.6)]),
    7: ("Fibonacci", "fib", "starts from 1, 1",
        [((0,), 0), ((1,), 1), ((2,), 1), ((10,), 55)]),
    8: ("prime", "is_prime", "never tries the square root itself",
        [((0,), False), ((1,), False), ((2,), True), ((4,), False), ((9,), False), ((97,), True)]),
    9: ("duplicate", "remove_duplicates", "returns the set's order",
        [(([3, 1, 3, 2, 1],), [3, 1, 2]), (([],), [])]),
    10: ("any amount of whitespace", "word_count", 'split(" ") counts empty words',
         [(("hello world",), 2), (("a  b",), 2), (("",), 0)]),
    11: ("median", "median", "even length: the pair one place too far right",
         [(([3, 1, 2],), 2), (([5],), 5), (([4, 1, 3, 2],), 2.5), (([1, 3],), 2.0)]),
    12: ("sum of the decimal digits", "digit_sum", "drops the leading digit",
         [((0,), 0), ((7,), 7), ((305,), 8), ((9999,), 36)]),
    13: ("strictly greater", "count_greater", ">= for >",
         [(([1, 5, 3, 5], 3), 2), (([], 0), 0), (([3], 3), 0)]),
    14: ("flattens", "flatten", "append for extend",
         [(([[1, 2], [3], []],), [1, 2, 3]), (([],), [])]),
    15: ("greatest common divisor", "gcd", "b % a for a % b",
         [((12, 18), 6), ((18, 12), 6), ((7, 5), 1), ((5, 5), 5)]),
    16: ("capitalizes", "capitalize_words", "skips the first word",
         [(("hello big world",), "Hello Big World"), (("a",), "A"), (("",), "")]),
    17: ("running totals", "running_total", "appends the total before adding",
         [(([1, 2, 3],), [1, 3, 6]), (([],), []), (([2, -2, 4],), [2, 0, 4])]),
    18: ("is a leap year", "is_leap_year", "forgets the 400-year rule",
         [((2024,), True), ((2023,), False), ((1900,), False), ((2000,), True)]),
    19: ("second largest distinct", "second_largest", "does not drop repeats",
         [(([1, 3, 2],), 2), (([5, 5, 4],), 4), (([2, 1, 2, 1],), 1)]),
    20: ("how many times it appears", "char_counts", "counts from 1",
         [(("aab",), {"a": 2, "b": 1}), (("",), {})]),
    21: ("product of all numbers", "product", "skips the first number",
         [(([2, 3, 4],), 24), (([],), 1), (([5],), 5)]),
    22: ("clamps", "clamp", "gives lo above hi",
         [((5, 0, 10), 5), ((-3, 0, 10), 0), ((15, 0, 10), 10), ((10, 0, 10), 10)]),
    23: ("anagrams", "is_anagram", "compares sets, not counts",
         [(("listen", "silent"), True), (("aab", "abb"), False), (("abc", "abd"), False)]),
    24: ("merges two sorted lists", "merge_sorted", "drops the rest of b",
         [(([1, 4, 6], [2, 3, 7, 8]), [1, 2, 3, 4, 6, 7, 8]), (([], [1, 2]), [1, 2]),
          (([1, 1], [1]), [1, 1, 1])]),
    25: ("binary digits", "binary_to_int", "reads the digits backwards",
         [(("110",), 6), (("0",), 0), (("1",), 1), (("1011",), 11)]),
    26: ("boxes", "boxes_needed", "rounds down",
         [((10, 3), 4), ((9, 3), 3), ((0, 5), 0), ((1, 5), 1)]),
    27: ("splits a bill", "split_bill", "floor division",
         [((10, 4), 2.5), ((90, 3), 30.0)]),
    28: ("every index at which", "indices_of", "counts positions from 1",
         [(([1, 2, 1, 3], 1), [0, 2]), (([], 1), []), (([5], 6), [])]),
    29: ("non-negative numbers", "remove_negatives", "removes from the list it iterates",
         [(([1, -2, -3, 4],), [1, 4]), (([],), []), (([0, -1],), [0])]),
    30: ("minus the one before it", "differences", "subtracts the already-changed neighbour",
         [(([5, 7, 10, 9],), [5, 2, 3, -1]), (([],), []), (([4],), [4])]),
    31: ("non-decreasing", "is_sorted", "calls equal neighbours unsorted",
         [(([1, 2, 2, 3],), True), (([3, 1],), False), (([],), True), (([5],), True)]),
    32: ("days in a given month", "days_in_month", "forgets November",
         [((1,), 31), ((2,), 28), ((4,), 30), ((11,), 30), ((12,), 31)]),
    33: ("H:MM:SS", "format_seconds", "minutes not taken within the hour",
         [((0,), "0:00:00"), ((59,), "0:00:59"), ((3661,), "1:01:01"), ((7325,), "2:02:05")]),
    34: ("longest word", "longest_word", "keeps the latest of equal lengths",
         [(("the quick brown fox",), "quick"), (("",), "")]),
    35: ("sum of the squares", "sum_of_squares", "sums 0 to n - 1",
         [((1,), 1), ((3,), 14), ((0,), 0)]),
    36: ("overlapping occurrences", "count_overlapping", "never tries the last position",
         [(("aaaa", "aa"), 3), (("abcabc", "abc"), 2), (("ab", "ab"), 1), (("abc", "abcd"), 0)]),
    37: ("smallest and largest", "min_max", "starts from 0",
         [(([3, 1, 4],), (1, 4)), (([-5, -2],), (-5, -2)), (([7],), (7, 7))]),
    38: ("positive divisors", "sum_proper_divisors", "stops below n // 2",
         [((6,), 6), ((28,), 28), ((12,), 16), ((4,), 3), ((1,), 0)]),
    39: ("more than once", "all_unique", "compares neighbours only",
         [(("abc",), True), (("abca",), False), (("aab",), False), (("",), True)]),
    40: ("two diagonals", "diagonal_difference", "no absolute value",
         [(([[1, 2], [3, 4]],), 0), (([[1, 2, 3], [4, 5, 6], [9, 8, 9]],), 2), (([[5]],), 0)]),
    41: ('appends "..."', "truncate", "cuts a text of exactly n characters",
         [(("hello", 10), "hello"), (("hello", 5), "hello"), (("hello world", 5), "hello...")]),
    42: ("uppercase letters", "count_upper", "counts spaces and other non-letters",
         [(("Hello World",), 2), (("",), 0), (("ABC",), 3)]),
    43: ("multiples of 4 or of 6", "sum_multiples", "and for or",
         [(([4, 6, 12, 5, 8],), 30), (([],), 0)]),
    44: ("every k-th element", "every_kth", "starts at index k",
         [(([1, 2, 3, 4, 5], 2), [1, 3, 5]), (([1, 2, 3], 1), [1, 2, 3]), (([], 3), [])]),
    45: ("compresses a string", "compress", "drops the last run",
         [(("aaabb",), "a3b2"), (("abc",), "a1b1c1"), (("a",), "a1"), (("",), "")]),
    46: ("dot product", "dot", "= for +=",
         [(([1, 2, 3], [4, 5, 6]), 32), (([], []), 0)]),
    47: ("start with a given letter", "count_starting_with", "lowers the letter, not the word",
         [((["Apple", "avocado", "banana"], "a"), 2), ((["Apple", "avocado"], "A"), 2), (([], "a"), 0)]),
    48: ("digits of a non-negative integer as a list", "digits", "gives [] for 0",
         [((305,), [3, 0, 5]), ((0,), [0]), ((7,), [7])]),
    49: ("percentage of True", "percent_true", "floor-divides before scaling",
         [(([True, False],), 50.0), (([True, True, True, False],), 75.0), (([False],), 0.0),
          (([True],), 100.0)]),
    50: ("index of the smallest", "argmin", "compares with the index, not the value",
         [(([3, 1, 2],), 1), (([5],), 0), (([2, 2, 1, 1],), 2), (([4, -1, 3],), 1)]),
    51: ("order of the words", "reverse_words", "reverses the characters",
         [(("one two three",), "three two one"), (("hello",), "hello"), (("",), "")]),
    52: ("pairs of positions", "count_pairs", "pairs a position with itself",
         [(([1, 2, 3, 4], 5), 2), (([1, 1, 1], 2), 3), (([2, 3], 4), 0), (([], 0), 0)]),
    53: ("initials", "initials", "does not uppercase",
         [(("ada lovelace",), "A.L."), (("grace brewster hopper",), "G.B.H."), (("Alan Turing",), "A.T.")]),
    54: ("compounded once a year", "compound", "uses the percent as a fraction",
         [((1000, 5, 2), 1102.5), ((100, 10, 0), 100.0), ((200, 50, 1), 300.0)]),
    55: ("miles to kilometers", "miles_to_km", "divides by 1.609344",
         [((1,), 1.61), ((10,), 16.09), ((5,), 8.05), ((0,), 0.0)]),
    56: ("Collatz", "collatz_steps", "counts from 1",
         [((1,), 0), ((2,), 1), ((6,), 8), ((27,), 111)]),
    57: ("middle character", "middle", "even length: one place too far right",
         [(("abc",), "b"), (("abcd",), "bc"), (("a",), "a"), (("ab",), "ab")]),
    58: ("strictly between", "count_between", "or for and",
         [(([1, 5, 10], 2, 8), 1), (([2, 8], 2, 8), 0), (([], 0, 1), 0)]),
    59: ("whole weeks", "weeks_and_days", "true division for whole weeks",
         [((15,), (2, 1)), ((14,), (2, 0)), ((0,), (0, 0)), ((6,), (0, 6))]),
}


def _same(got, want):
    """A float is compared to 1e-9 and may come back as an int; anything else must match in type
    too, so whole weeks of 2.0 or a count of True is a wrong value."""
    if isinstance(want, float):
        return (isinstance(got, (int, float)) and not isinstance(got, bool)
                and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12))
    if isinstance(want, (tuple, list)):
        return type(got) is type(want) and len(got) == len(want) and all(map(_same, got, want))
    return type(got) is type(want) and got == want


@contextmanager
def _time_limit(seconds=1.0):
    """A buggy loop must fail its case, not hang the suite (SIGALRM: POSIX main thread only)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"no answer in {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _function(row, side, name):
    """The row's `side` function, exec'd in a fresh namespace and found by its `def NAME(`."""
    src = row[side]
    assert re.findall(r"^def (\w+)\(", src, re.M) == [name], f"{side} should define {name} alone"
    ns = {}
    exec(compile(src, f"code.jsonl:{side}", "exec"), ns)
    return ns[name]


def _outcomes(fn, cases, seconds=1.0):
    """(args, expected, got or the exception) for every case; args are copied, since some of the
    buggy functions edit their input in place."""
    out = []
    for args, want in cases:
        try:
            with _time_limit(seconds):
                got = fn(*copy.deepcopy(args))
        except Exception as e:  # an exception is a failed case, like a wrong value
            got = e
        out.append((args, want, got))
    return out


CODE_ROWS = _rows("code")


def test_a_function_that_never_returns_fails_its_case():
    """The time limit turns an endless loop into a failed case instead of a hung suite."""
    def spin():
        while True:
            pass
    [(_, _, got)] = _outcomes(spin, [((), 1)], seconds=0.05)
    assert isinstance(got, TimeoutError)


def test_the_code_table_covers_every_row():
    """A row added or removed without its cases fails here, not silently."""
    assert len(CODE_ROWS) == 60 and sorted(CODE) == list(range(len(CODE_ROWS)))


@pytest.mark.parametrize("i", sorted(CODE), ids=lambda i: f"code{i:02d}-{CODE[i][1]}")
def test_chosen_function_passes(i):
    """Every chosen function returns the value its prompt asks for on every case."""
    keyword, name, _, cases = CODE[i]
    row = CODE_ROWS[i]
    assert keyword.lower() in row["prompt"].lower(), f"row {i} is not the {name!r} task: {row['prompt']!r}"
    wrong = [(a, w, g) for a, w, g in _outcomes(_function(row, "chosen", name), cases) if not _same(g, w)]
    assert not wrong, f"chosen {name}: (args, expected, got) {wrong}"


@pytest.mark.parametrize("i", sorted(CODE), ids=lambda i: f"code{i:02d}-{CODE[i][1]}")
def test_rejected_function_fails_a_case(i):
    """Every buggy function returns a wrong value (or raises) on at least one case: the pair's bug
    is a real one, and the table has an input that shows it."""
    keyword, name, bug, cases = CODE[i]
    row = CODE_ROWS[i]
    assert keyword.lower() in row["prompt"].lower(), f"row {i} is not the {name!r} task: {row['prompt']!r}"
    outcomes = _outcomes(_function(row, "rejected", name), cases)
    assert any(not _same(g, w) for _, w, g in outcomes), (
        f"rejected {name} (bug: {bug}) passes every case: {outcomes}")


# ---- math.jsonl: row -> (prompt keyword, the exact answer, computed here) ---------------------
MATH = {
    0: ("35% of 240", F(35, 100) * 240),
    1: ("jacket", 120 - F(30, 100) * 120),
    2: ("2/3 + 1/4", F(2, 3) + F(1, 4)),
    3: ("centimeters are in 3.5 meters", F("3.5") * 100),
    4: ("3x + 7 = 25", F(25 - 7, 3)),
    5: ("ratio 3:5", F(40, 3 + 5) * 5),
    6: ("78, 85, 92, and 81", F(78 + 85 + 92 + 81, 4)),
    7: ("60 km/h for 2.5 hours", 60 * F("2.5")),
    8: ("8 cm long and 5 cm wide", 8 * 5),
    9: ("greater than 4", F(len([k for k in range(1, 7) if k > 4]), 6)),
    10: ("144 ÷ 12 + 7 × 3", F(144, 12) + 7 * 3),
    11: ("town of 2,000", 2000 * F(11, 10) ** 2),
    12: ("5 feet 6 inches", 5 * 12 + 6),
    13: ("3/4 of 96", F(3, 4) * 96),
    14: ("y/4 − 3 = 5", (5 + 3) * 4),
    15: ("12 cups of milk", F(2, 3) * 12),
    16: ("9:45 a.m.", (13 * 60 + 20) - (9 * 60 + 45)),
    17: ("radius 7 cm", 2 * F(22, 7) * 7),
    18: ("exactly one head", F(sum((a + b).count("H") == 1 for a in "HT" for b in "HT"), 4)),
    19: ("7.5% sales tax", F("0.075") * 64),
    20: ("84/126", F(84, 126)),
    21: ("seconds are in 2.5 hours", F("2.5") * 3600),
    22: ("5 notebooks", F("13.75") / 5 * 8),
    23: ("72, 88, and 80", 4 * 82 - (72 + 88 + 80)),
    24: ("90 km apart", F(90, 20 + 25)),
    25: ("legs of 9 cm and 12 cm", math.isqrt(9 ** 2 + 12 ** 2)),        # 225, a perfect square
    26: ("4 red, 5 green, and 3 yellow", F(5, 4 + 5 + 3)),
    27: ("15² − 12²", 15 ** 2 - 12 ** 2),
    28: ("lamp for $50", F(65 - 50, 50) * 100),                            # percent
    29: ("1/2 ÷ 1/8", F(1, 2) / F(1, 8)),
    30: ("68 degrees Fahrenheit", (68 - 32) * F(5, 9)),
    31: ("2(x − 4) = 10", F(10, 2) + 4),
    32: ("3 workers", F(3 * 8, 6)),
    33: ("perimeter of 36 m", F(36, 2) - 11),
    34: ("4, 8, 15, 16, 23, and 42", F(4 + 8 + 15 + 16 + 23 + 42, 6)),
    35: ("Walking at 5 km/h", F(3, 5) * 60),
    36: ("base of 10 cm", F(10 * 7, 2)),
    37: ("king or a heart", F(len({(r, s) for r in range(13) for s in range(4) if r == 12 or s == 0}), 52)),
    38: ("0.6 × 0.4", F("0.6") * F("0.4")),
    39: ("$80 to $92", F(92 - 80, 80) * 100),                              # percent
    40: ("2.25 liters", F("2.25") * 1000),
    41: ("5n − 3 = 2n + 12", F(12 + 3, 5 - 2)),
    42: ("ratio 2:3:4", F(450, 2 + 3 + 4) * 4),
    43: ("battery", F(70, F(100 - 70, 3))),
    44: ("edges of 4 cm", 4 ** 3),
    45: ("sum is 7", F(sum(a + b == 7 for a in range(1, 7) for b in range(1, 7)), 36)),
    46: ("25% of 60% of 200", F(25, 100) * F(60, 100) * 200),
    47: ("5/6 − 1/3", F(5, 6) - F(1, 3)),
    48: ("4 yards by 3 yards", (4 * 3) * (3 * 3)),
    49: ("100, 93, 86", 100 - (10 - 1) * 7),
    50: ("1,200 miles", F(1200, F("2.5"))),
    51: ("diameter of 10 m", F("3.14") * F(10, 2) ** 2),
    52: ("heads every time", F(1, 2) ** 3),
    53: ("1,000 − 387", 1000 - 387),
    54: ("$18 after a 10% discount", F(18, F("0.9"))),
    55: ("12, 7, 3, 18, 9, and 5", F(7 + 9, 2)),                          # sorted: 3 5 7 9 12 18
    56: ("3x² − 2x", 3 * 4 ** 2 - 2 * 4),
    57: ("6.4 cm apart", F("6.4") * 25),
    58: ("50 cm long, 30 cm wide", F(50 * 30 * 20, 1000)),
    59: ("$74 bill and a $13 tip", F(74 + 13, 3)),
}

# A number: an optional minus (ASCII or U+2212) touching its digits, thousands grouped by commas,
# an optional decimal part, an optional "/denominator". "$", "%" and units around it are ignored.
NUMBER = re.compile(r"(?<![\w.])([-−]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:/(\d+))?")


def final_number(text):
    """The last number a response states, exactly: "$4.80" -> 24/5, "11/12" -> 11/12, "1,200" -> 1200."""
    matches = list(NUMBER.finditer(text))
    assert matches, f"no number in {text!r}"
    sign, whole, frac, den = matches[-1].groups()
    value = F(whole.replace(",", "") + (frac or ""))
    value = value / int(den) if den else value
    return -value if sign else value


@pytest.mark.parametrize("text,value", [
    ("so the sale price is 120 − 36 = $84.", F(84)),
    ("so the sum is 11/12.", F(11, 12)),
    ("so 3.5 × 100 = 350 centimeters.", F(350)),
    ("2,200 × 1.1 = 2,420.", F(2420)),
    ("The tax is 0.075 × 64 = $4.80.", F(24, 5)),
    ("so x = −3.", F(-3)),
    ("the change is -2.5 degrees", F(-5, 2)),
    ("x = 32/3", F(32, 3)),
    ("so the profit is 30%.", F(30)),
    ("outcomes (1,6) and (6,1), so 1/6", F(1, 6)),
])
def test_final_number_by_hand(text, value):
    """The forms the responses end with: money, units, thousands, decimals, fractions, percents,
    and a minus that is part of the number (ASCII or U+2212) but not one between two numbers."""
    assert final_number(text) == value


MATH_ROWS = _rows("math")


def test_the_math_table_covers_every_row():
    """A row added or removed without its answer fails here, not silently."""
    assert len(MATH_ROWS) == 60 and sorted(MATH) == list(range(len(MATH_ROWS)))


@pytest.mark.parametrize("i", sorted(MATH), ids=lambda i: f"math{i:02d}")
def test_chosen_result_right_rejected_wrong(i):
    """The chosen answer ends with the exact result; the rejected one ends with another."""
    keyword, answer = MATH[i]
    row = MATH_ROWS[i]
    assert keyword in row["prompt"], f"row {i} is not the {keyword!r} question: {row['prompt']!r}"
    assert final_number(row["chosen"]) == answer, f"chosen {row['chosen']!r}, expected {answer}"
    assert final_number(row["rejected"]) != answer, f"rejected {row['rejected']!r} states the right {answer}"

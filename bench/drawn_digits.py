"""How well the product reads real handwriting: pen-drawn digits, whole numbers, non-digits.

The digits are real pen trajectories from 30 writers outside MNIST (the development set in
`../shared/data/pen-digits-dev/`, evaluation only, never trained on). Each is painted onto
the 280x280 canvas with an 18 px round pen, as the Draw page would receive it, in two
placements: *fit* (filling the canvas) and *box* (the writer's own size and place). Numbers
are composed from one writer's digits, 2 to 6 side by side as people write them (see
evaluation/canvas_layouts.py), and read twice: from the picture alone, as the CLI and the API
read it, and with the strokes in drawing order too, as the Draw page reads it. Non-digits are
seeded random scribbles and generated letters and doodles (evaluation/non_digits.py).
Everything is read through the same path as the app, the API and the CLI. The last line is a
JSON object with every figure.

    python -m bench.drawn_digits [--data PATH] [--numbers-per-length 400] [--model FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

from evaluation.canvas_layouts import PLACEMENTS, draw_digit, numbers_from_writers
from evaluation.non_digits import CONFIDENT, non_digit_figures
from evaluation.unipen import DEFAULT_PATH, DevelopmentSetMissing, read_unipen
from mnist_core.inference import load_recognizer

NUMBER_LENGTHS = (2, 3, 4, 5, 6)


def read_all(recognizer, pictures) -> list:
    return [recognizer.read(picture) for picture in pictures]


def digit_figures(recognizer, digits, placement: str) -> dict:
    labels = np.array([digit.label for digit in digits])
    readings = read_all(recognizer, (draw_digit(digit, placement) for digit in digits))
    read = np.array([reading.digit if reading.digit is not None and len(reading.digits) == 1
                     else -1 for reading in readings])
    refused = np.array([reading.is_not_a_digit for reading in readings])
    blank = np.array([reading.is_blank and not reading.is_not_a_digit for reading in readings])
    split = np.array([len(reading.digits) > 1 for reading in readings])
    confusions = collections.Counter(
        (int(true), int(guess)) for true, guess in zip(labels, read) if true != guess)
    per_class = {str(digit): round(float((read[labels == digit] == digit).mean()), 4)
                 for digit in range(10)}
    return {"accuracy": float((read == labels).mean()), "count": int(len(labels)),
            "per_class": per_class, "refused_as_not_a_digit": int(refused.sum()),
            "read_as_blank": int(blank.sum()), "split_into_several": int(split.sum()),
            "confusions": [{"true": true, "read": guess if guess >= 0 else None, "count": count}
                           for (true, guess), count in confusions.most_common(12)]}


def number_figures(recognizer, digits, per_length: int, *, with_strokes: bool = False) -> dict:
    """Exact-number and digit-count accuracy per length; `with_strokes` reads as the Draw page
    does, with the pen's strokes in drawing order beside the picture (the CLI and the API have
    the picture only)."""
    numbers = numbers_from_writers(digits, NUMBER_LENGTHS, per_length)
    readings = [recognizer.read(number.picture, strokes=number.strokes if with_strokes else None)
                for number in numbers]
    figures = {}
    for length in NUMBER_LENGTHS:
        pairs = [(number, reading) for number, reading in zip(numbers, readings)
                 if len(number.text) == length]
        figures[str(length)] = {
            "exact": float(np.mean([reading.text == number.text for number, reading in pairs])),
            "digit_count": float(np.mean([len(reading.digits) == length
                                          for number, reading in pairs])),
            "count": len(pairs)}
    short = [(number, reading) for number, reading in zip(numbers, readings)
             if len(number.text) <= 4]
    figures["2_to_4"] = {
        "exact": float(np.mean([reading.text == number.text for number, reading in short])),
        "digit_count": float(np.mean([len(reading.digits) == len(number.text)
                                      for number, reading in short])),
        "count": len(short)}
    return figures


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PATH,
                        help="the UNIPEN file of the real-handwriting development set")
    parser.add_argument("--numbers-per-length", type=int, default=400)
    parser.add_argument("--non-digits-per-kind", type=int, default=500)
    parser.add_argument("--limit", type=int, default=None, help="use the first N digits only")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--without-number-reader", action="store_true",
                        help="read with the digit model alone, as before the number reader")
    parser.add_argument("--write-card", action="store_true",
                        help="record the headline figures in the model's card (full runs only)")
    parsed = parser.parse_args(arguments)
    try:
        digits = read_unipen(parsed.data)
    except DevelopmentSetMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if parsed.limit:
        digits = digits[:parsed.limit]
    recognizer = load_recognizer(parsed.model)
    if parsed.without_number_reader:
        if parsed.write_card:
            print("error: the card records the product as served, with its number reader",
                  file=sys.stderr)
            return 2
        recognizer.number_reader = None
    started = time.perf_counter()
    figures: dict = {"model_version": recognizer.model_version, "digits": len(digits),
                     "number_reader": recognizer.number_reader is not None}
    for placement in PLACEMENTS:
        result = digit_figures(recognizer, digits, placement)
        figures[f"dev_{placement}"] = result
        print(f"dev set, {placement:3s}: {result['accuracy']:.2%} of {result['count']} "
              f"(refused {result['refused_as_not_a_digit']}, blank {result['read_as_blank']}, "
              f"split {result['split_into_several']})")
        print("   per class: " + ", ".join(f"{digit} {value:.1%}"
                                           for digit, value in result["per_class"].items()))
        print("   confusions: " + ", ".join(
            f"{item['true']}→{item['read']} ×{item['count']}" for item in result["confusions"]))
    for key, with_strokes, label in (("numbers", False, "picture only (CLI, API)"),
                                     ("numbers_with_strokes", True, "with strokes (Draw page)")):
        numbers = number_figures(recognizer, digits, parsed.numbers_per_length,
                                 with_strokes=with_strokes)
        figures[key] = numbers
        for length, result in numbers.items():
            print(f"numbers of {length} digits, {label}: exact {result['exact']:.1%}, "
                  f"digit count {result['digit_count']:.1%} ({result['count']})")
    non_digits = non_digit_figures(recognizer, parsed.non_digits_per_kind)
    figures["non_digits"] = non_digits
    for kind, result in non_digits.items():
        print(f"{kind}: shown as a digit at >= {CONFIDENT:.0%} confidence "
              f"{result['shown_as_digit_confident']:.1%}, refused {result['refused']:.1%}")
    figures["seconds"] = round(time.perf_counter() - started, 1)
    if parsed.write_card:
        write_card(recognizer, figures, digits)
    print(json.dumps(figures))
    return 0


def write_card(recognizer, figures: dict, digits) -> None:
    """Put the headline figures, and the command that made them, in the model card."""
    card_path = Path(recognizer.model_path).with_suffix(".card.json")
    card = json.loads(card_path.read_text())
    card["real_handwriting"] = {
        "read_as": recognizer.model_version,
        "dev_digits": len(digits),
        "dev_writers": len({digit.writer for digit in digits}),
        "dev_fit_accuracy": round(figures["dev_fit"]["accuracy"], 4),
        "dev_box_accuracy": round(figures["dev_box"]["accuracy"], 4),
        "numbers_2_to_4_exact": round(figures["numbers"]["2_to_4"]["exact"], 4),
        "numbers_2_to_4_digit_count": round(figures["numbers"]["2_to_4"]["digit_count"], 4),
        "numbers_by_length_exact": {length: round(result["exact"], 4)
                                    for length, result in figures["numbers"].items()
                                    if length != "2_to_4"},
        "numbers_per_length": figures["numbers"]["2"]["count"],
        "numbers_2_to_4_exact_with_strokes": round(
            figures["numbers_with_strokes"]["2_to_4"]["exact"], 4),
        "numbers_2_to_4_digit_count_with_strokes": round(
            figures["numbers_with_strokes"]["2_to_4"]["digit_count"], 4),
        **{f"{kind}_shown_as_digit": round(result["shown_as_digit_confident"], 4)
           for kind, result in figures["non_digits"].items()},
        "reproduce": "python -m bench.drawn_digits --write-card "
                     "(real pen digits from ../shared/data/pen-digits-dev/, evaluation only)",
    }
    card_path.write_text(json.dumps(card, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())

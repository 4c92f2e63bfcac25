"""The `.exp` grammar lives in `expc.lark` beside this file; `GRAMMAR_PATH` points at it."""

from pathlib import Path

GRAMMAR_PATH = Path(__file__).with_name("expc.lark")

#!/usr/bin/env python3
"""Prints the medians of two series and, as the last line, `ratio R` = median(a) / median(b).

    ratio.py LABEL_A "a1 a2 ..." LABEL_B "b1 b2 ..." UNIT
"""
import statistics
import sys

label_a, values_a, label_b, values_b, unit = sys.argv[1:6]
a = statistics.median(float(x) for x in values_a.split())
b = statistics.median(float(x) for x in values_b.split())
print(f"median: {label_a} {a:.3f} {unit}  {label_b} {b:.3f} {unit}")
print(f"ratio {a / b:.2f}")

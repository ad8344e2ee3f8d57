#!/usr/bin/env python3
"""Unit test of perf/lib/nccl_tests_parse.py (ctest perf_lib.nccl_tests_parse, label unit).

The sample output is written with nccl-tests' own print formats (NVIDIA/nccl-tests a0b82b2,
version 2.19.6): the header of src/util.cu:756-759, each row's preamble util.cu:457 and bodies
util.cu:508 (checked, %6g #wrong) and :510 (unchecked, "N/A"), the footer util.cu:777-780. The
numbers are made up; the layout is upstream's.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nccl_tests_parse  # noqa: E402


def preamble(nbytes, count, typ, op, root):  # util.cu:455-457
    return "%12li  %12li  %8s  %6s  %6s" % (nbytes, count, typ, op, "%6i" % root)


def body(time_us, algbw, busbw, wrong):  # util.cu:508 (#wrong checked) / :510 (N/A)
    if wrong is None:
        return "  %7s  %6s  %6s    N/A" % (time_us, algbw, busbw)
    return "  %7s  %6s  %6s  %6g" % (time_us, algbw, busbw, float(wrong))


def header():  # util.cu:744, 756-759
    return "\n".join([
        "#",
        "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          "
        % ("", "", "", "", ""),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s %*s"
        % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
           "algbw", "busbw", "#wrong", 0, ""),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s %*s"
        % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)",
           "(GB/s)", "", 0, ""),
    ])


def footer(errors, avg, program):  # util.cu:777-780
    return "\n".join([
        "# %-20s : %d %s" % ("Out of bounds values", errors, "FAILED" if errors else "OK"),
        "# %-20s : %g %s" % ("Avg bus bandwidth", avg, ""),
        "#",
        "# Collective test concluded: %s" % program,
    ])


def sample(wrong_at_4k=0):
    """all_reduce_perf -b 8 -e 4K -f 512 -c 1 with an NCCL INFO line mixed in, as mpirun
    prints them."""
    return "\n".join([
        "# nccl-tests version 2.19.6 nccl-headers=23007 nccl-library=23007",
        "# Collective test starting: all_reduce_perf",
        "host:123:123 [0] NCCL INFO NET/Plugin: Loaded net plugin devmem (v12)",
        header(),
        preamble(8, 2, "float", "sum", -1) + body("18.52", "0.00", "0.00", 0) +
        body("17.90", "0.00", "0.00", 0),
        preamble(4096, 1024, "float", "sum", -1) + body("1234.5", "3.32", "3.32", wrong_at_4k) +
        body("1200.0", "3.41", "3.41", 0),
        footer(1 if wrong_at_4k else 0, 1.68, "all_reduce_perf"),
        "",
    ])


class ParseTest(unittest.TestCase):
    def test_rows_and_footer(self):
        p = nccl_tests_parse.parse(sample())
        self.assertEqual([r["bytes"] for r in p["rows"]], [8, 4096])
        row = p["rows"][1]
        self.assertEqual((row["count"], row["type"], row["redop"], row["root"]),
                         (1024, "float", "sum", -1))
        self.assertEqual(row["out_of_place"], {"time_us": 1234.5, "algbw": 3.32, "busbw": 3.32,
                                               "wrong": 0})
        self.assertEqual(row["in_place"]["busbw"], 3.41)
        self.assertEqual(p["out_of_bounds"], 0)
        self.assertTrue(p["out_of_bounds_ok"])
        self.assertEqual(p["avg_busbw"], 1.68)
        self.assertEqual(p["concluded"], "all_reduce_perf")

    def test_wrong_values_are_counted(self):
        p = nccl_tests_parse.parse(sample(wrong_at_4k=7))
        self.assertEqual(nccl_tests_parse.total_wrong(p["rows"][1]), 7)
        self.assertEqual(p["out_of_bounds"], 1)
        self.assertFalse(p["out_of_bounds_ok"])

    def test_unchecked_rows_say_none(self):
        # sendrecv_perf -c 0: redop "none", #wrong printed as N/A (util.cu:510).
        text = preamble(1048576, 262144, "float", "none", -1) + \
            body("95.12", "11.02", "11.02", None) + body("94.00", "11.16", "11.16", None)
        row = nccl_tests_parse.parse(text)["rows"][0]
        self.assertEqual(row["redop"], "none")
        self.assertIsNone(nccl_tests_parse.total_wrong(row))

    def test_large_numbers_and_rank_prefix(self):
        # getFloatStr (util.cu:487) drops decimals to fit: "  12345" time, "1234.5" bandwidth.
        text = " 0: " + preamble(268435456, 67108864, "float", "sum", -1) + \
            body("12345", "21.74", "21.74", 0) + body("1.2e+05", "2.24", "2.24", 0)
        row = nccl_tests_parse.parse(text)["rows"][0]
        self.assertEqual(row["bytes"], 268435456)
        self.assertEqual(row["out_of_place"]["time_us"], 12345.0)
        self.assertEqual(row["in_place"]["time_us"], 120000.0)

    def test_header_and_log_lines_are_not_rows(self):
        p = nccl_tests_parse.parse(header() + "\nhost:1:1 [0] NCCL INFO 8 coll channels\n")
        self.assertEqual(p["rows"], [])
        self.assertIsNone(p["out_of_bounds"])


class ReportTest(unittest.TestCase):
    def run_report(self, socket_text, ours_text, ours_rc=0):
        out = tempfile.mkdtemp()
        script = os.path.join(HERE, "nccl_tests_parse.py")
        with open(os.path.join(out, "records.jsonl"), "w") as jsonl, \
                open(os.path.join(out, "runs.tsv"), "w") as runs:
            for label, text, rc in (("socket", socket_text, 0), ("host", ours_text, ours_rc)):
                path = os.path.join(out, label + ".txt")
                with open(path, "w") as f:
                    f.write(text)
                jsonl.write(subprocess.run(
                    [sys.executable, script, "records", path, label, "1", "all_reduce", "x"],
                    check=True, capture_output=True, text=True).stdout)
                runs.write("%s\tall_reduce\t1\t%s\t%d\t1000\n" % (label, "PASS" if rc == 0
                                                                  else "FAIL", rc))
        p = subprocess.run([sys.executable, script, "report", out], capture_output=True,
                           text=True)
        with open(os.path.join(out, "compare.json")) as f:
            return p.returncode, json.load(f), p.stdout

    def test_pass_and_ratio(self):
        rc, report, stdout = self.run_report(sample(), sample())
        self.assertEqual(rc, 0, stdout)
        self.assertEqual(report["verdict"], "PASS")
        row = [r for r in report["busbw"] if r["bytes"] == 4096][0]
        self.assertEqual(row["socket_busbw"], 3.32)
        self.assertEqual(row["host_ratio"], 1.0)

    def test_wrong_exits_3(self):
        # nccl-tests exits EXIT_FAILURE on out-of-bounds values (src/common.cu:1853).
        rc, report, stdout = self.run_report(sample(), sample(wrong_at_4k=3), ours_rc=1)
        self.assertEqual(rc, 3, stdout)
        self.assertEqual(report["verdict"], "WRONG")
        self.assertIn("host all_reduce round 1, 4096 B: 3 wrong", report["wrong"])

    def test_cut_off_output_fails(self):
        cut = sample().split("# Out of bounds")[0]
        rc, report, stdout = self.run_report(sample(), cut)
        self.assertEqual(rc, 1, stdout)
        self.assertEqual(report["verdict"], "FAIL")


if __name__ == "__main__":
    unittest.main()

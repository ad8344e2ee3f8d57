#!/usr/bin/env python3
"""Unit test of perf_parse_options in perf/scripts/common.sh, the option parser of the GPU
comparison scripts (ctest perf.common_options, label unit): it runs bash with common.sh sourced
and a main() that keeps its options in locals, as those scripts do."""
import os
import subprocess
import unittest

COMMON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.sh")
# A main() like compare_nccl_tests.sh's: defaults in locals, the table, then what it parsed.
SCRIPT = r'''
source "$COMMON"
usage() { echo "usage shown"; exit 2; }
main() {
  local plugin=default-plugin ops=all_reduce positional=() extra=()
  perf_parse_options demo.sh "$TABLE" "$@"
  echo "plugin=$plugin"
  echo "ops=$ops"
  echo "positional=${positional[*]-}"
  echo "extra=${extra[*]-}"
}
main "$@"
'''
TABLE = "--plugin:plugin:path\n    --ops:ops:list"


def parse(*args, table=TABLE):
    env = dict(os.environ, COMMON=COMMON, TABLE=table)
    p = subprocess.run(["bash", "-c", SCRIPT, "demo.sh"] + list(args), env=env,
                       capture_output=True, text=True)
    return p.returncode, p.stdout.splitlines(), p.stderr.strip()


class ParseOptionsTest(unittest.TestCase):
    def test_values_go_to_the_callers_locals_and_words_to_positional(self):
        rc, out, _ = parse("OUT_DIR", "--ops", "all_gather,sendrecv", "--plugin", "/a b/x.so", "B")
        self.assertEqual(rc, 0)
        self.assertEqual(out, ["plugin=/a b/x.so", "ops=all_gather,sendrecv",
                               "positional=OUT_DIR B", "extra="])

    def test_defaults_stay_where_an_option_is_not_given(self):
        self.assertEqual(parse("OUT")[1][:2], ["plugin=default-plugin", "ops=all_reduce"])

    def test_a_value_that_looks_like_an_option_is_taken_as_the_value(self):
        self.assertEqual(parse("--ops", "-h", "OUT")[1][1], "ops=-h")

    def test_a_missing_or_empty_value_exits_1_naming_the_option(self):
        # bash's own ${2:?--ops needs a list}, which the scripts used before, also exits 1.
        for args in (["OUT", "--ops"], ["--ops", "", "OUT"]):
            rc, out, err = parse(*args)
            self.assertEqual((rc, out, err), (1, [], "demo.sh: --ops needs a list"))

    def test_help_shows_the_usage(self):
        for flag in ("-h", "--help"):
            self.assertEqual(parse(flag, "OUT")[:2], (2, ["usage shown"]))

    def test_an_unknown_option_is_named_then_the_usage_shown(self):
        self.assertEqual(parse("OUT", "--bogus"),
                         (2, ["usage shown"], "demo.sh: unknown option --bogus"))

    def test_dashdash_is_an_unknown_option_where_the_table_has_no_dashdash_entry(self):
        self.assertEqual(parse("--", "OUT")[2], "demo.sh: unknown option --")

    def test_dashdash_in_the_table_passes_every_later_word_on(self):
        rc, out, _ = parse("OUT", "--", "--ops", "x", "-n", table=TABLE + " --:extra")
        self.assertEqual(rc, 0)
        self.assertEqual(out, ["plugin=default-plugin", "ops=all_reduce", "positional=OUT",
                               "extra=--ops x -n"])


if __name__ == "__main__":
    unittest.main()

// The receive-pipeline bench (perf/bench/rx_pipeline_bench.cc) at smoke size, the way CI runs it
// on a host region: the plugin's DevmemFragReceiver and host scatter consumer take every frag
// profile of the synthetic NIC, each case's verify phase matches the sender's pattern byte for
// byte, every token comes back, and a scatter that swaps two frags fails that check. The
// synthetic recvmsg is written from Linux's tcp_recvmsg_dmabuf (6952350/linux-6.18.y @27d8ad92
// net/ipv4/tcp.c: one SCM_DEVMEM_LINEAR cmsg for an skb's linear bytes, then one
// SCM_DEVMEM_DMABUF cmsg per frag with a fresh token); see perf/bench/synthetic_nic.h. Nothing
// here looks at a timing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/common/shell.h"

namespace devmem {
namespace {

using Row = std::map<std::string, std::string>;

// One line of the bench's --json output: a flat object of string and number values.
Row ParseRow(const std::string& line) {
  Row row;
  size_t at = line.find('{');
  while (at != std::string::npos) {
    const size_t key_start = line.find('"', at);
    if (key_start == std::string::npos) break;
    const size_t key_end = line.find('"', key_start + 1);
    if (key_end == std::string::npos || line[key_end + 1] != ':') break;
    const std::string key = line.substr(key_start + 1, key_end - key_start - 1);
    size_t value_start = key_end + 2;
    size_t value_end;
    std::string value;
    if (line[value_start] == '"') {
      value_end = value_start + 1;
      while (value_end < line.size() && line[value_end] != '"') {
        if (line[value_end] == '\\') ++value_end;
        value.push_back(line[value_end++]);
      }
      ++value_end;
    } else {
      value_end = line.find_first_of(",}", value_start);
      value = line.substr(value_start, value_end - value_start);
    }
    row[key] = value;
    at = value_end < line.size() && line[value_end] == ',' ? value_end + 1 : std::string::npos;
  }
  return row;
}

std::vector<Row> RunBench(const std::string& args, int* status, std::string* output) {
  *status = testing::RunCommand(std::string(DEVMEM_RX_PIPELINE_BENCH_PATH) + " " + args, output);
  std::vector<Row> rows;
  size_t start = 0;
  while (start < output->size()) {
    size_t end = output->find('\n', start);
    if (end == std::string::npos) end = output->size();
    const std::string line = output->substr(start, end - start);
    if (line.rfind("{\"bench\":\"rx-pipeline\"", 0) == 0) rows.push_back(ParseRow(line));
    start = end + 1;
  }
  return rows;
}

uint64_t Number(const Row& row, const char* key) {
  auto found = row.find(key);
  return found == row.end() ? 0 : strtoull(found->second.c_str(), nullptr, 10);
}

TEST(RxPipelineBenchTest, HostScatterPassesItsByteCheckForEveryFragProfile) {
  int status = 0;
  std::string output;
  std::vector<Row> rows = RunBench("--smoke --json --consumer host", &status, &output);
  EXPECT_EQ(status, 0) << output;
  // Page and MTU frags, 4 KiB and 16 KiB RX pages, 64 KiB and 128 KiB steps.
  ASSERT_EQ(rows.size(), 8u) << output;
  std::set<std::string> profiles;
  for (const Row& row : rows) {
    SCOPED_TRACE(row.at("frags") + " " + row.at("step_bytes"));
    ASSERT_EQ(row.count("error"), 0u) << row.at("error");
    EXPECT_EQ(row.at("consumer"), "host-scatter");
    EXPECT_EQ(row.at("check"), "passed");
    EXPECT_GE(Number(row, "verify_steps"), 1u);
    EXPECT_GT(Number(row, "steps"), 0u);
    EXPECT_EQ(Number(row, "bytes"), Number(row, "steps") * Number(row, "step_bytes"));
    EXPECT_GT(Number(row, "recvmsg_calls"), 0u);
    EXPECT_GT(Number(row, "frags_described"), 0u);
    EXPECT_GT(Number(row, "linear_bytes"), 0u);  // the NIC's linear bytes reached the consumer
    EXPECT_GT(Number(row, "tokens_issued"), 0u);
    EXPECT_EQ(Number(row, "tokens_released"), Number(row, "tokens_issued"));
    EXPECT_GT(Number(row, "dontneed_calls"), 0u);
    profiles.insert(row.at("frags"));
  }
  EXPECT_EQ(profiles, (std::set<std::string>{"page-4k", "page-16k", "mtu1500-4k", "mtu1500-16k"}));
}

TEST(RxPipelineBenchTest, ASwappedScatterFailsTheByteCheck) {
  int status = 0;
  std::string output;
  std::vector<Row> rows =
      RunBench("--smoke --json --consumer host --frags page --page 4K -e 64K --wrong-scatter",
               &status, &output);
  EXPECT_NE(status, 0) << output;
  ASSERT_EQ(rows.size(), 1u) << output;
  EXPECT_EQ(rows[0].at("check"), "FAILED");
  EXPECT_NE(rows[0]["check_detail"].find("differs from the sent bytes"), std::string::npos)
      << output;
}

TEST(RxPipelineBenchTest, GpuConsumersRunOrSayWhyNot) {
  int status = 0;
  std::string output;
  std::string unpack_output;
  std::vector<Row> rows =
      RunBench("--smoke --json --consumer kernel --frags page --page 4K", &status, &output);
  std::vector<Row> unpack = RunBench("--smoke --json --consumer unpack --frags page --page 4K",
                                     &status, &unpack_output);
  rows.insert(rows.end(), unpack.begin(), unpack.end());
  output += unpack_output;
  ASSERT_EQ(rows.size(), 4u) << output;
  for (const Row& row : rows) {
    SCOPED_TRACE(row.at("consumer") + " " + row.at("step_bytes"));
    EXPECT_EQ(row.count("error"), 0u) << row.at("error");
    if (row.count("skipped") != 0) {
      EXPECT_FALSE(row.at("skipped").empty());  // no GPU here: the reason is named
    } else {
      EXPECT_EQ(row.at("check"), "passed");
      EXPECT_EQ(Number(row, "tokens_released"), Number(row, "tokens_issued"));
    }
  }
}

}  // namespace
}  // namespace devmem

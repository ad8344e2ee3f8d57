// The metrics file's pieces without the transport: the Prometheus text the writer produces
// (read back by tests/common/prometheus_text.h, written from the format's rules), label
// escaping, the histogram, the registry folding closed sources, %p/%h expansion, the atomic
// replace, and an unwritable directory costing one WARN.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "plugin/core/log.h"
#include "plugin/observe/metrics.h"
#include "plugin/observe/metrics_writer.h"
#include "plugin/observe/prometheus.h"
#include "tests/common/captured_log.h"
#include "tests/common/child_process.h"
#include "tests/common/prometheus_text.h"

namespace devmem::observe {
namespace {

using testing::ParseExposition;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> DirectoryEntries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  return names;
}

MetricsSnapshot SampleSnapshot() {
  MetricsSnapshot s;
  s.bytes[0][static_cast<size_t>(DataPath::kPlain)] = 1000;
  s.bytes[0][static_cast<size_t>(DataPath::kDevmemTx)] = 4096;
  s.bytes[1][static_cast<size_t>(DataPath::kDevmem)] = 5096;
  s.messages[0] = 3;
  s.frags[static_cast<size_t>(DataPath::kDevmem)] = 2;
  s.tokens_held = 7;
  s.fallbacks[static_cast<size_t>(Fallback::kTxRefused)] = 1;
  s.consumer_latency.buckets[0] = 2;      // <= 10 us
  s.consumer_latency.buckets[6] = 1;      // <= 1 ms
  s.consumer_latency.buckets.back() = 1;  // above every bound
  s.consumer_latency.count = 4;
  s.consumer_latency.sum_ns = 3'000'000'000;
  return s;
}

TEST(PrometheusTest, TheTextFollowsTheExpositionFormat) {
  const std::string text = FormatPrometheus(SampleSnapshot(), 1234, "host\"a\\b\nc");
  const testing::Exposition parsed = ParseExposition(text);
  for (const std::string& error : parsed.errors) ADD_FAILURE() << error;
  EXPECT_EQ(parsed.Value("nccl_devmem_bytes_total{direction=\"send\",path=\"plain\"}"), 1000);
  EXPECT_EQ(parsed.Value("nccl_devmem_bytes_total{direction=\"send\",path=\"devmem_tx\"}"), 4096);
  EXPECT_EQ(parsed.Value("nccl_devmem_bytes_total{direction=\"recv\",path=\"devmem\"}"), 5096);
  // Devmem TX only sends.
  EXPECT_FALSE(parsed.Has("nccl_devmem_bytes_total{direction=\"recv\",path=\"devmem_tx\"}"));
  EXPECT_EQ(parsed.Value("nccl_devmem_messages_total{direction=\"send\"}"), 3);
  EXPECT_EQ(parsed.Value("nccl_devmem_frags_total{path=\"devmem\"}"), 2);
  EXPECT_EQ(parsed.Value("nccl_devmem_tokens_held"), 7);
  EXPECT_EQ(parsed.types.at("nccl_devmem_tokens_held"), "gauge");
  EXPECT_EQ(parsed.types.at("nccl_devmem_bytes_total"), "counter");
  EXPECT_EQ(parsed.Value("nccl_devmem_fallbacks_total{reason=\"tx_refused\"}"), 1);
  // Histogram: cumulative buckets, +Inf = count (the parser checks both), sum in seconds.
  EXPECT_EQ(parsed.types.at("nccl_devmem_consumer_latency_seconds"), "histogram");
  EXPECT_EQ(parsed.Value("nccl_devmem_consumer_latency_seconds_bucket{le=\"1e-05\"}"), 2);
  EXPECT_EQ(parsed.Value("nccl_devmem_consumer_latency_seconds_bucket{le=\"0.001\"}"), 3);
  EXPECT_EQ(parsed.Value("nccl_devmem_consumer_latency_seconds_bucket{le=\"+Inf\"}"), 4);
  EXPECT_EQ(parsed.Value("nccl_devmem_consumer_latency_seconds_count"), 4);
  EXPECT_DOUBLE_EQ(parsed.Value("nccl_devmem_consumer_latency_seconds_sum"), 3.0);
  // The host label, escaped as the format says and read back as written.
  EXPECT_NE(text.find("host=\"host\\\"a\\\\b\\nc\""), std::string::npos) << text;
}

TEST(PrometheusTest, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(EscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(EscapeLabelValue("two\nlines"), "two\\nlines");
  EXPECT_EQ(EscapeHelp("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");  // quotes stay in HELP
}

TEST(LatencyHistogramTest, EachLatencyLandsInTheFirstBucketThatHoldsIt) {
  LatencyHistogram histogram;
  histogram.Record(std::chrono::microseconds(10));  // == the first bound: first bucket
  histogram.Record(std::chrono::microseconds(11));  // second bucket
  histogram.Record(std::chrono::seconds(2));        // above every bound
  histogram.Record(std::chrono::nanoseconds(-5));   // a clock step back counts as 0
  LatencyCounts counts;
  histogram.AddTo(&counts);
  EXPECT_EQ(counts.buckets[0], 2u);
  EXPECT_EQ(counts.buckets[1], 1u);
  EXPECT_EQ(counts.buckets.back(), 1u);
  EXPECT_EQ(counts.count, 4u);
  EXPECT_EQ(counts.sum_ns, 2'000'021'000u);
}

class FixedSource final : public MetricsSource {
 public:
  void Collect(MetricsSnapshot* into) const override {
    into->messages[0] += messages;
    into->tokens_held += held;
  }
  RelaxedCounter messages;  // the writer thread reads them while the test writes them
  RelaxedCounter held;
};

TEST(MetricsRegistryTest, AClosedSourceKeepsItsCountersButNotItsGauges) {
  MetricsRegistry& registry = MetricsRegistry::Process();
  registry.Enable();
  const MetricsSnapshot before = registry.Snapshot();
  FixedSource a, b;
  a.messages.store(5);
  a.held.store(3);
  b.messages.store(7);
  b.held.store(4);
  {
    MetricsRegistration ra, rb;
    ra.Register(&a);
    rb.Register(&b);
    const MetricsSnapshot live = registry.Snapshot();
    EXPECT_EQ(live.messages[0] - before.messages[0], 12u);
    EXPECT_EQ(live.tokens_held - before.tokens_held, 7u);
    ra.Reset();
    const MetricsSnapshot one_closed = registry.Snapshot();
    EXPECT_EQ(one_closed.messages[0] - before.messages[0], 12u);  // a's 5 folded in
    EXPECT_EQ(one_closed.tokens_held - before.tokens_held, 4u);   // only b's held tokens
  }
  const MetricsSnapshot after = registry.Snapshot();
  EXPECT_EQ(after.messages[0] - before.messages[0], 12u);
  EXPECT_EQ(after.tokens_held, before.tokens_held);
}

TEST(MetricsPathTest, PercentPAndPercentHExpand) {
  EXPECT_EQ(ExpandMetricsPath("/var/lib/node/devmem-%p.prom", 42, "gpu7"),
            "/var/lib/node/devmem-42.prom");
  EXPECT_EQ(ExpandMetricsPath("/m/%h/%p-%h.prom", 7, "node-a"), "/m/node-a/7-node-a.prom");
  EXPECT_EQ(ExpandMetricsPath("100%%-%x-%", 1, "h"), "100%-%x-%");
  EXPECT_EQ(ExpandMetricsPath("plain.prom", 1, "h"), "plain.prom");
}

TEST(MetricsFileTest, AWriteReplacesTheFileAndLeavesNoTemporaryBehind) {
  testing::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/devmem.prom";
  ASSERT_TRUE(WriteFileAtomically(path, "first 1\n").ok());
  // A reader that opened the old file keeps reading the old contents: a rename, not a rewrite.
  std::ifstream old_reader(path);
  ASSERT_TRUE(WriteFileAtomically(path, "second 2\n").ok());
  std::string old_text;
  std::getline(old_reader, old_text);
  EXPECT_EQ(old_text, "first 1");
  EXPECT_EQ(ReadFile(path), "second 2\n");
  EXPECT_EQ(DirectoryEntries(dir.path()), std::vector<std::string>{"devmem.prom"});
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);  // readable by a collector running as another user
}

TEST(MetricsFileTest, AnUnwritableDirectoryIsAnErrorAndLeavesNothing) {
  testing::TempDir dir;
  const std::string missing = dir.path() + "/no/such/dir/devmem.prom";
  Status status = WriteFileAtomically(missing, "x 1\n");
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("no/such/dir"), std::string::npos) << status.message();
  EXPECT_TRUE(DirectoryEntries(dir.path()).empty());
}

TEST(MetricsWriterTest, WritesAtOnceAndOnceMoreWhenStopped) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/w.prom";
  MetricsRegistry::Process().Enable();
  const double before = static_cast<double>(MetricsRegistry::Process().Snapshot().messages[0]);
  FixedSource source;
  source.messages.store(11);
  MetricsRegistration registration;
  registration.Register(&source);
  {
    Result<std::unique_ptr<MetricsWriter>> writer =
        MetricsWriter::Start(path, std::chrono::hours(1));
    ASSERT_TRUE(writer.ok()) << writer.status().message();
    writer.value()->WriteNow();
    testing::Exposition first = ParseExposition(ReadFile(path));
    EXPECT_TRUE(first.errors.empty());
    EXPECT_EQ(first.Value("nccl_devmem_messages_total{direction=\"send\"}"), before + 11);
    source.messages.store(20);  // counted on; the writer's last write at stop shows it
  }
  testing::Exposition last = ParseExposition(ReadFile(path));
  EXPECT_TRUE(last.errors.empty());
  EXPECT_EQ(last.Value("nccl_devmem_messages_total{direction=\"send\"}"), before + 20);
  EXPECT_EQ(DirectoryEntries(dir.path()), std::vector<std::string>{"w.prom"});
}

TEST(MetricsWriterTest, AnUnwritableDirectoryIsOneWarnAndNoCrash) {
  log::SetLogger(testing::CapturedLog::Logger);
  testing::CapturedLog::Clear();
  testing::TempDir dir;
  const std::string path = dir.path() + "/missing/w.prom";
  {
    Result<std::unique_ptr<MetricsWriter>> writer =
        MetricsWriter::Start(path, std::chrono::hours(1));
    ASSERT_TRUE(writer.ok());
    for (int i = 0; i < 3; ++i) writer.value()->WriteNow();
  }  // the thread's first and last writes fail too
  log::SetLogger(nullptr);
  const std::vector<std::string> warns = testing::CapturedLog::Warnings();
  ASSERT_EQ(warns.size(), 1u);
  EXPECT_NE(warns[0].find("NCCL_DEVMEM_METRICS_FILE: cannot write"), std::string::npos)
      << warns[0];
  EXPECT_NE(warns[0].find("/missing/w.prom"), std::string::npos) << warns[0];
}

}  // namespace
}  // namespace devmem::observe

// The cmsg parser fed crafted control buffers: valid mixes, truncation, out-of-range and
// foreign frags, zero and huge sizes, frags across a niov boundary, large (rx-page-size)
// frags, and thousands of cmsgs.
#include "plugin/devmem/frag_parser.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <vector>

#include "plugin/devmem/uapi.h"

namespace devmem {
namespace {

constexpr RegionBinding kBinding{7, 1 << 20, 4096};

// Builds a control buffer of devmem cmsgs the way the kernel lays them out.
class ControlBuilder {
 public:
  ControlBuilder& Dmabuf(uint64_t offset, uint32_t size, uint32_t token, uint32_t id = 7) {
    return Add(uapi::kScmDevmemDmabuf, {offset, size, token, id, 0});
  }
  ControlBuilder& Linear(uint32_t size) { return Add(uapi::kScmDevmemLinear, {0, size, 0, 0, 0}); }
  ControlBuilder& Add(int type, uapi::DmabufCmsg frag, int level = SOL_SOCKET,
                      size_t data_len = sizeof(uapi::DmabufCmsg)) {
    const size_t at = buffer_.size();
    last_ = at;
    buffer_.resize(at + CMSG_SPACE(data_len), 0);
    auto* cm = reinterpret_cast<cmsghdr*>(buffer_.data() + at);
    cm->cmsg_level = level;
    cm->cmsg_type = type;
    cm->cmsg_len = CMSG_LEN(data_len);
    memcpy(CMSG_DATA(cm), &frag, std::min(data_len, sizeof(frag)));
    return *this;
  }
  // Rewrites the last cmsg's cmsg_len (its bytes stay where they are).
  ControlBuilder& LastCmsgLen(size_t cmsg_len) {
    reinterpret_cast<cmsghdr*>(buffer_.data() + last_)->cmsg_len = cmsg_len;
    return *this;
  }
  // msg_controllen says fewer bytes than were written: what follows must never be read.
  ControlBuilder& DeclareBytes(size_t bytes) {
    declared_ = bytes;
    return *this;
  }
  msghdr Message(int flags = 0) {
    msghdr msg{};
    msg.msg_control = buffer_.empty() ? nullptr : buffer_.data();
    msg.msg_controllen = declared_ != kAll ? declared_ : buffer_.size();
    msg.msg_flags = flags;
    return msg;
  }

 private:
  static constexpr size_t kAll = SIZE_MAX;
  alignas(cmsghdr) std::vector<uint8_t> buffer_;
  size_t last_ = 0;
  size_t declared_ = kAll;
};

TEST(FragParserTest, LinearThenFragsInStreamOrder) {
  ControlBuilder control;
  control.Linear(100).Dmabuf(4096, 4096, 11).Dmabuf(0, 1000, 12);
  msghdr msg = control.Message();
  std::vector<StreamSegment> segments;
  Result<ParsedReceive> parsed = ParseDevmemReceive(msg, 5196, kBinding, 256, &segments);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_FALSE(parsed->plain);
  EXPECT_EQ(parsed->frags, 2u);
  EXPECT_EQ(parsed->region_bytes, 5096u);
  EXPECT_EQ(parsed->host_bytes, 100u);
  ASSERT_EQ(segments.size(), 3u);
  EXPECT_EQ(segments[0].kind, StreamSegment::Kind::kHost);
  EXPECT_EQ(segments[0].length, 100u);
  EXPECT_EQ(segments[1].kind, StreamSegment::Kind::kRegion);
  EXPECT_EQ(segments[1].source_offset, 4096u);
  EXPECT_EQ(segments[1].token, 11u);
  EXPECT_EQ(segments[2].source_offset, 0u);
  EXPECT_EQ(segments[2].length, 1000u);
}

TEST(FragParserTest, NoCmsgMeansPlainDataInTheBounceBuffer) {
  ControlBuilder control;
  msghdr msg = control.Message();
  std::vector<StreamSegment> segments;
  Result<ParsedReceive> parsed = ParseDevmemReceive(msg, 300, kBinding, 4096, &segments);
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->plain);
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].kind, StreamSegment::Kind::kHost);
  EXPECT_EQ(segments[0].length, 300u);
}

struct BadCase {
  const char* name;
  std::function<void(ControlBuilder*)> build;
  ssize_t received;
  int flags;
  const char* message;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class FragParserRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(FragParserRejects, AndLeavesNoSegmentsBehind) {
  const BadCase& c = GetParam();
  ControlBuilder control;
  c.build(&control);
  msghdr msg = control.Message(c.flags);
  std::vector<StreamSegment> segments = {StreamSegment{}};  // earlier content is preserved
  Result<ParsedReceive> parsed = ParseDevmemReceive(msg, c.received, kBinding, 4096, &segments);
  ASSERT_FALSE(parsed.ok()) << c.name;
  EXPECT_NE(parsed.status().message().find(c.message), std::string::npos)
      << c.name << ": " << parsed.status().message();
  EXPECT_EQ(segments.size(), 1u) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    CraftedBuffers, FragParserRejects,
    ::testing::Values(
        BadCase{"ctrunc", [](ControlBuilder* b) { b->Dmabuf(0, 4096, 1); }, 4096, MSG_CTRUNC,
                "MSG_CTRUNC"},
        BadCase{"offset past region", [](ControlBuilder* b) { b->Dmabuf(1 << 20, 1, 1); }, 1, 0,
                "outside"},
        BadCase{"end past region", [](ControlBuilder* b) { b->Dmabuf((1 << 20) - 100, 4096, 1); },
                4096, 0, "outside"},
        BadCase{"offset overflow", [](ControlBuilder* b) { b->Dmabuf(UINT64_MAX - 10, 4096, 1); },
                4096, 0, "outside"},
        BadCase{"huge size", [](ControlBuilder* b) { b->Dmabuf(0, UINT32_MAX, 1); }, 1, 0,
                "outside"},
        // A cmsg is one skb frag, and a frag one netmem (niov): rx-page-size series,
        // net/core/devmem.h net_iov_virtual_addr = idx << niov_shift.
        BadCase{"frag across a niov", [](ControlBuilder* b) { b->Dmabuf(2048, 4096, 1); }, 4096, 0,
                "crosses a 4096-byte RX page"},
        BadCase{"wrong dmabuf id", [](ControlBuilder* b) { b->Dmabuf(0, 4096, 1, 8); }, 4096, 0,
                "bound to 7"},
        BadCase{"zero-size frag", [](ControlBuilder* b) { b->Dmabuf(0, 0, 1); }, 0, 0, "0 bytes"},
        BadCase{"zero-size linear", [](ControlBuilder* b) { b->Linear(0); }, 0, 0, "0 bytes"},
        BadCase{"short cmsg",
                [](ControlBuilder* b) {
                  b->Add(uapi::kScmDevmemDmabuf, {0, 8, 1, 7, 0}, SOL_SOCKET, 8);
                },
                8, 0, "expected"},
        BadCase{"foreign cmsg type",
                [](ControlBuilder* b) {
                  b->Add(SCM_RIGHTS, {0, 8, 1, 7, 0});
                },
                8, 0, "unexpected cmsg"},
        BadCase{"foreign level",
                [](ControlBuilder* b) {
                  b->Add(uapi::kScmDevmemDmabuf, {0, 8, 1, 7, 0}, 6);
                },
                8, 0, "unexpected cmsg"},
        BadCase{"sum below received", [](ControlBuilder* b) { b->Dmabuf(0, 4096, 1); }, 5000, 0,
                "describe 4096 bytes but recvmsg returned 5000"},
        BadCase{"sum above received",
                [](ControlBuilder* b) { b->Dmabuf(0, 4096, 1).Dmabuf(4096, 4096, 2); }, 4096, 0,
                "describe 8192"},
        BadCase{"linear overflows bounce buffer", [](ControlBuilder* b) { b->Linear(5000); }, 5000,
                0, "overflow"},
        // The bytes past msg_controllen hold a valid frag: reading them would accept it.
        BadCase{"only cmsg runs past controllen",
                [](ControlBuilder* b) { b->Dmabuf(0, 4096, 1).DeclareBytes(sizeof(cmsghdr) + 4); },
                4096, 0, "runs past the 20-byte control data"},
        BadCase{"second cmsg runs past controllen",
                [](ControlBuilder* b) {
                  b->Dmabuf(0, 4096, 1)
                      .Dmabuf(4096, 4096, 2)
                      .DeclareBytes(CMSG_SPACE(sizeof(uapi::DmabufCmsg)) + sizeof(cmsghdr) + 8);
                },
                4096, 0, "runs past"},
        BadCase{"cmsg_len past controllen",
                [](ControlBuilder* b) {
                  b->Dmabuf(0, 4096, 1).LastCmsgLen(CMSG_LEN(sizeof(uapi::DmabufCmsg)) + 64);
                },
                4096, 0, "runs past"},
        BadCase{"controllen ends inside a header",
                [](ControlBuilder* b) {
                  b->Dmabuf(0, 4096, 1)
                      .Dmabuf(4096, 4096, 2)
                      .DeclareBytes(CMSG_SPACE(sizeof(uapi::DmabufCmsg)) + 8);
                },
                4096, 0, "ends 8 bytes into a cmsg header"},
        BadCase{"controllen shorter than one header",
                [](ControlBuilder* b) { b->Dmabuf(0, 4096, 1).DeclareBytes(8); }, 4096, 0,
                "ends 8 bytes into a cmsg header"},
        BadCase{"cmsg_len zero", [](ControlBuilder* b) { b->Dmabuf(0, 4096, 1).LastCmsgLen(0); },
                4096, 0, "devmem cmsg of 0 bytes"},
        BadCase{"cmsg_len shorter than header and payload",
                [](ControlBuilder* b) {
                  b->Dmabuf(0, 4096, 1).LastCmsgLen(CMSG_LEN(sizeof(uapi::DmabufCmsg)) - 1);
                },
                4096, 0, "expected"}),
    [](const ::testing::TestParamInfo<BadCase>& info) {
      std::string name = info.param.name;
      for (char& ch : name) ch = isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

TEST(FragParserTest, PlainReceiveOfFourGibOrMoreIsDescribedWhole) {
  // Segment lengths are 32-bit; every byte of a plain read must still be described, in order.
  for (const uint64_t received : {uint64_t{4} << 30, (uint64_t{4} << 30) + 5,
                                  (uint64_t{9} << 30) + 4097, uint64_t{UINT32_MAX}}) {
    ControlBuilder control;
    msghdr msg = control.Message();
    std::vector<StreamSegment> segments = {StreamSegment{}};
    Result<ParsedReceive> parsed = ParseDevmemReceive(msg, static_cast<ssize_t>(received), kBinding,
                                                      uint64_t{16} << 30, &segments);
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    EXPECT_TRUE(parsed->plain);
    EXPECT_EQ(parsed->host_bytes, received);
    uint64_t described = 0;
    for (size_t i = 1; i < segments.size(); ++i) {
      EXPECT_EQ(segments[i].kind, StreamSegment::Kind::kHost);
      EXPECT_EQ(segments[i].source_offset, described) << "segment " << i;
      EXPECT_GT(segments[i].length, 0u);
      described += segments[i].length;
    }
    EXPECT_EQ(described, received);
  }
}

// bind-rx with NETDEV_A_DMABUF_RX_PAGE_SIZE = 16384 (torvalds/linux @001b5d34
// net/core/netdev-genl.c: niov_shift = ilog2(rx_page_size)) makes niovs of 16 KiB: frags of up
// to 16 KiB at any offset inside one are the kernel's, and only a binding of 4 KiB niovs
// would call them broken.
TEST(FragParserTest, SixteenKiBFragsOfA16KiBBinding) {
  ControlBuilder control;
  control.Dmabuf(16384, 16384, 1).Dmabuf(32768 + 100, 16284, 2).Dmabuf(0, 9000, 3);
  const RegionBinding large{7, 1 << 20, 16384};
  msghdr msg = control.Message();
  std::vector<StreamSegment> segments;
  Result<ParsedReceive> parsed = ParseDevmemReceive(msg, 16384 + 16284 + 9000, large, 0, &segments);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  ASSERT_EQ(segments.size(), 3u);
  EXPECT_EQ(segments[0].length, 16384u);
  EXPECT_EQ(segments[1].source_offset, 32868u);
  EXPECT_EQ(parsed->region_bytes, 16384u + 16284u + 9000u);

  segments.clear();
  msg = control.Message();
  parsed = ParseDevmemReceive(msg, 16384 + 16284 + 9000, kBinding, 0, &segments);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("crosses a 4096-byte RX page"), std::string::npos)
      << parsed.status().message();
  EXPECT_TRUE(segments.empty());
}

TEST(FragParserTest, ThousandsOfCmsgsInOneReceive) {
  ControlBuilder control;
  constexpr uint32_t kFrags = 5000;
  const RegionBinding big{7, uint64_t{kFrags} * 4096};
  for (uint32_t i = 0; i < kFrags; ++i) control.Dmabuf(uint64_t{i} * 4096, 4096, 100 + i);
  msghdr msg = control.Message();
  std::vector<StreamSegment> segments;
  Result<ParsedReceive> parsed = ParseDevmemReceive(msg, ssize_t{kFrags} * 4096, big, 0, &segments);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  ASSERT_EQ(segments.size(), kFrags);
  EXPECT_EQ(parsed->frags, kFrags);
  EXPECT_EQ(segments.back().token, 100 + kFrags - 1);
}

}  // namespace
}  // namespace devmem

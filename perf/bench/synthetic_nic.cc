#include "perf/bench/synthetic_nic.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace devmem::perf {
namespace {

// MAX_SKB_FRAGS at the kernel's default CONFIG_MAX_SKB_FRAGS (include/linux/skbuff.h).
constexpr uint32_t kMaxSkbFrags = 17;
// gve's rx buffer, whatever the MTU (frag_geometry.h kUnreportedRxBufBytes names the same one).
constexpr uint32_t kMtuBufferBytes = kUnreportedRxBufBytes;
// Page frags come from a jumbo-MTU NIC whose hardware GRO fills whole buffers.
constexpr uint32_t kJumboMtu = 9000;
// Messages a NIC keeps track of at once: more than NCCL ever has in flight (NCCL_STEPS).
constexpr size_t kMessageRing = 64;

SyntheticNic* active_nic = nullptr;

uint64_t PatternWord(uint64_t message, uint64_t word) {
  // splitmix64 of (message, word): neighbouring words and messages share no bytes.
  uint64_t x = message * 0x9e3779b97f4a7c15ull ^ (word + 0x632be59bd9b4e019ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string ProfileName(const char* kind, uint32_t niov_bytes) {
  return Format("%s-%uk", kind, niov_bytes >> 10);
}

}  // namespace

NicProfile PageFrags(uint32_t niov_bytes) {
  NicProfile profile;
  profile.name = ProfileName("page", niov_bytes);
  profile.niov_bytes = niov_bytes;
  profile.buffer_bytes = niov_bytes;
  profile.unit_bytes = niov_bytes;
  profile.geometry = FragGeometry::ForNic(kJumboMtu, niov_bytes, niov_bytes);
  return profile;
}

NicProfile MtuFrags(uint32_t mtu, uint32_t niov_bytes) {
  NicProfile profile;
  profile.name = ProfileName(Format("mtu%u", mtu).c_str(), niov_bytes);
  profile.niov_bytes = niov_bytes;
  profile.buffer_bytes = std::min(kMtuBufferBytes, niov_bytes);
  profile.geometry = FragGeometry::ForNic(mtu, kMtuBufferBytes, niov_bytes);
  profile.unit_bytes = std::min(profile.geometry.unit_bytes(), profile.buffer_bytes);
  return profile;
}

void FillPattern(uint64_t message, uint64_t position, char* out, size_t len) {
  size_t i = 0;
  while (i < len) {
    const uint64_t at = position + i;
    const uint64_t word = PatternWord(message, at / 8);
    const unsigned first = static_cast<unsigned>(at % 8);
    const size_t n = std::min<size_t>(8 - first, len - i);
    for (size_t b = 0; b < n; ++b) out[i + b] = static_cast<char>(word >> (8 * (first + b)));
    i += n;
  }
}

int64_t FirstPatternMismatch(uint64_t message, const char* data, size_t len) {
  char expected[4096];
  for (size_t at = 0; at < len; at += sizeof(expected)) {
    const size_t n = std::min(sizeof(expected), len - at);
    FillPattern(message, at, expected, n);
    if (memcmp(expected, data + at, n) == 0) continue;
    for (size_t i = 0; i < n; ++i) {
      if (expected[i] != data[at + i]) return static_cast<int64_t>(at + i);
    }
  }
  return -1;
}

SyntheticNic::SyntheticNic(RxRegion* region, NicProfile profile, NicOptions options,
                           uint64_t message_bytes, CopyStream* stamp_stream)
    : region_(region),
      profile_(std::move(profile)),
      options_(options),
      message_bytes_(message_bytes),
      stamp_stream_(stamp_stream),
      messages_(kMessageRing) {
  const size_t niovs = region->bytes() / profile_.niov_bytes;
  free_ring_.resize(niovs);
  for (size_t i = 0; i < niovs; ++i) free_ring_[i] = static_cast<uint32_t>(i);  // first fit
  free_count_ = niovs;
  niov_refs_.assign(niovs, 0);
}

SyntheticNic::~SyntheticNic() = default;

std::vector<std::chrono::nanoseconds> SyntheticNic::TakeReleaseLatencies() {
  std::vector<std::chrono::nanoseconds> out;
  out.swap(latencies_);
  return out;
}

SyntheticNic::Message& SyntheticNic::MessageAt(uint64_t index) {
  Message& m = messages_[index % messages_.size()];
  if (m.index != index) m = Message{index, 0, false, {}};
  return m;
}

void SyntheticNic::DropNiovRef(uint32_t niov) {
  if (--niov_refs_[niov] != 0) return;
  free_ring_[(free_head_ + free_count_) % free_ring_.size()] = niov;
  ++free_count_;
}

bool SyntheticNic::NextUnit() {
  const uint32_t buffers_per_niov = profile_.niov_bytes / profile_.buffer_bytes;
  if (current_niov_ == UINT32_MAX || next_buffer_ == buffers_per_niov) {
    if (current_niov_ != UINT32_MAX) {
      DropNiovRef(current_niov_);  // the NIC is done with it: its frags' tokens keep it
      current_niov_ = UINT32_MAX;
    }
    if (free_count_ == 0) return false;
    current_niov_ = free_ring_[free_head_];
    free_head_ = (free_head_ + 1) % free_ring_.size();
    --free_count_;
    ++niov_refs_[current_niov_];
    next_buffer_ = 0;
  }
  unit_niov_ = current_niov_;
  unit_offset_ = uint64_t{current_niov_} * profile_.niov_bytes +
                 uint64_t{next_buffer_} * profile_.buffer_bytes;
  unit_left_ = profile_.unit_bytes;
  ++next_buffer_;
  --skb_units_left_;
  return true;
}

uint32_t SyntheticNic::IssueToken(uint32_t niov, uint64_t message) {
  size_t word = token_hint_;
  while (word < token_used_.size() && token_used_[word] == ~uint64_t{0}) ++word;
  if (word == token_used_.size()) token_used_.push_back(0);
  token_hint_ = word;
  const unsigned bit = static_cast<unsigned>(__builtin_ctzll(~token_used_[word]));
  token_used_[word] |= uint64_t{1} << bit;
  const uint32_t token = static_cast<uint32_t>(word * 64 + bit);
  if (token >= token_niov_.size()) {
    token_niov_.resize(token + 1);
    token_message_.resize(token + 1);
  }
  token_niov_[token] = niov;
  token_message_[token] = message;
  ++niov_refs_[niov];
  ++outstanding_;
  ++MessageAt(message).tokens_out;
  ++counters_.tokens_issued;
  return token;
}

void SyntheticNic::Stamp(uint64_t region_offset, uint64_t position, uint32_t len) {
  const uint64_t message = position / message_bytes_;
  const uint64_t in_message = position % message_bytes_;
  if (char* host = region_->host_base(); host != nullptr) {
    FillPattern(message, in_message, host + region_offset, len);
    return;
  }
  scratch_.resize(len);
  FillPattern(message, in_message, scratch_.data(), len);
  Status written = region_->Write(region_offset, scratch_.data(), len, stamp_stream_);
  if (written.ok() && stamp_stream_ != nullptr) written = stamp_stream_->Wait();
  if (!written.ok() && error_.ok()) error_ = written.WithContext("the synthetic NIC's DMA");
}

ssize_t SyntheticNic::Receive(msghdr* msg) {
  ++counters_.recvmsg_calls;
  char* iov = msg->msg_iovlen > 0 ? static_cast<char*>(msg->msg_iov[0].iov_base) : nullptr;
  const uint64_t iov_len = msg->msg_iovlen > 0 ? msg->msg_iov[0].iov_len : 0;
  const uint64_t message = position_ / message_bytes_;
  const uint64_t message_start = message * message_bytes_;
  const uint64_t sent_end = allowed_messages_ * message_bytes_;
  // The transport asks for at most the rest of a chunk (SocketMover::AdvanceFrags), so a call
  // never crosses a message; the cap keeps each token's message unambiguous all the same.
  const uint64_t want = std::min({iov_len, sent_end > position_ ? sent_end - position_ : 0,
                                  message_start + message_bytes_ - position_});
  auto* control = static_cast<unsigned char*>(msg->msg_control);
  const size_t control_bytes = control != nullptr ? msg->msg_controllen : 0;
  const size_t cmsg_space = CMSG_SPACE(sizeof(uapi::DmabufCmsg));
  size_t control_used = 0;
  uint64_t done = 0;
  uint64_t host_cursor = 0;
  bool pool_empty = false;
  auto put_cmsg = [&](int type, const uapi::DmabufCmsg& body) {
    cmsghdr header{};
    header.cmsg_level = SOL_SOCKET;
    header.cmsg_type = type;
    header.cmsg_len = CMSG_LEN(sizeof(body));
    memcpy(control + control_used, &header, sizeof(header));
    memcpy(control + control_used + CMSG_LEN(0), &body, sizeof(body));
    control_used += cmsg_space;
  };
  while (done < want && control_bytes - control_used >= cmsg_space) {
    if (linear_left_ == 0 && unit_left_ == 0) {
      if (skb_units_left_ == 0) {
        skb_units_left_ = kMaxSkbFrags;
        if (options_.linear_every != 0 && skbs_++ % options_.linear_every == 0) {
          linear_left_ = options_.linear_bytes;
          continue;
        }
      }
      if (!NextUnit()) {
        pool_empty = true;
        break;
      }
    }
    if (linear_left_ > 0) {
      const uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(linear_left_, want - done));
      uapi::DmabufCmsg body{};
      body.frag_size = take;
      put_cmsg(uapi::kScmDevmemLinear, body);
      FillPattern(message, position_ - message_start, iov + host_cursor, take);
      host_cursor += take;
      linear_left_ -= take;
      counters_.linear_bytes += take;
      position_ += take;
      done += take;
      continue;
    }
    const uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(unit_left_, want - done));
    const uint32_t token = IssueToken(unit_niov_, message);
    put_cmsg(uapi::kScmDevmemDmabuf,
             uapi::DmabufCmsg{unit_offset_, take, token, options_.dmabuf_id, 0});
    if (stamping_) Stamp(unit_offset_, position_, take);
    unit_offset_ += take;
    unit_left_ -= take;
    ++counters_.frags;
    counters_.frag_bytes += take;
    position_ += take;
    done += take;
  }
  msg->msg_controllen = control_used;
  msg->msg_flags = 0;
  if (!error_.ok()) {
    errno = EIO;
    return -1;
  }
  if (done == 0) {
    if (want > 0 && !pool_empty) {
      errno = uapi::kEtooSmall;  // not even one cmsg fit
      return -1;
    }
    ++counters_.would_block;
    errno = EAGAIN;
    return -1;
  }
  if (position_ == message_start + message_bytes_) {
    Message& m = MessageAt(message);
    m.fully_described = true;
    m.last_frag = std::chrono::steady_clock::now();
  }
  return static_cast<ssize_t>(done);
}

int SyntheticNic::Release(const uapi::DmabufToken* entries, size_t count) {
  // sock_devmem_dontneed: more than 128 entries is EINVAL, and it stops after inspecting 1024
  // frags (shared/specs/devmem-uapi.md section 5).
  if (count > static_cast<size_t>(uapi::kMaxDontneedTokens)) {
    ++counters_.refused_calls;
    errno = EINVAL;
    return -1;
  }
  const auto now = std::chrono::steady_clock::now();
  int freed = 0;
  uint64_t inspected = 0;
  for (size_t i = 0; i < count; ++i) {
    for (uint32_t k = 0; k < entries[i].token_count; ++k) {
      if (inspected++ == static_cast<uint64_t>(uapi::kMaxDontneedFrags)) break;
      const uint64_t token = uint64_t{entries[i].token_start} + k;
      const size_t word = static_cast<size_t>(token / 64);
      const uint64_t bit = uint64_t{1} << (token % 64);
      if (word >= token_used_.size() || (token_used_[word] & bit) == 0) {
        ++counters_.tokens_unknown;  // the kernel skips what is not outstanding
        continue;
      }
      token_used_[word] &= ~bit;
      token_hint_ = std::min(token_hint_, word);
      DropNiovRef(token_niov_[token]);
      --outstanding_;
      Message& m = MessageAt(token_message_[token]);
      if (--m.tokens_out == 0 && m.fully_described) latencies_.push_back(now - m.last_frag);
      ++freed;
    }
  }
  ++counters_.release_calls;
  counters_.release_ranges += count;
  counters_.tokens_released += static_cast<uint64_t>(freed);
  return freed;
}

ssize_t SyntheticNic::Recvmsg(int /*fd*/, msghdr* msg, int /*flags*/) {
  if (active_nic == nullptr) {
    errno = EBADF;
    return -1;
  }
  const auto start = std::chrono::steady_clock::now();
  const ssize_t r = active_nic->Receive(msg);
  const int err = errno;
  active_nic->counters_.stand_in_time += std::chrono::steady_clock::now() - start;
  errno = err;
  return r;
}

int SyntheticNic::Dontneed(int /*fd*/, const uapi::DmabufToken* entries, size_t count) {
  if (active_nic == nullptr) {
    errno = EBADF;
    return -1;
  }
  const auto start = std::chrono::steady_clock::now();
  const int r = active_nic->Release(entries, count);
  const int err = errno;
  active_nic->counters_.stand_in_time += std::chrono::steady_clock::now() - start;
  errno = err;
  return r;
}

ActiveNic::ActiveNic(SyntheticNic* nic) { active_nic = nic; }
ActiveNic::~ActiveNic() { active_nic = nullptr; }

}  // namespace devmem::perf

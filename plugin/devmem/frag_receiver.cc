#include "plugin/devmem/frag_receiver.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/devmem/uapi.h"

namespace devmem {
namespace {

// The most one receive consumes, emulated or devmem (the devmem bounce is that large because an
// unbound queue delivers everything as plain bytes).
constexpr size_t kReceiveBytes = 256 << 10;

// Pages one emulated receive takes: 256 KiB of them, at least one.
size_t PagesPerReceive(uint32_t page_bytes) {
  return std::max<size_t>(1, kReceiveBytes / page_bytes);
}

Status PeerClosed() {
  return Status::Error(ErrorKind::kRemote,
                       "peer closed a data connection while a message was arriving");
}

}  // namespace

Result<std::unique_ptr<HostRegion>> HostRegion::Create(uint64_t bytes) {
  std::unique_ptr<HostRegion> region(new HostRegion());
  // The fd only names the memory while it is mapped; the mapping keeps it alive after.
  UniqueFd fd(memfd_create("nccl-devmem-rx-region", MFD_CLOEXEC));
  if (!fd.valid()) return Status::Errno(errno, "memfd_create for the RX region");
  if (ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return Status::Errno(errno, "sizing the %llu-byte RX region",
                         static_cast<unsigned long long>(bytes));
  }
  void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (data == MAP_FAILED) {
    return Status::Errno(errno, "mapping the %llu-byte RX region",
                         static_cast<unsigned long long>(bytes));
  }
  region->data_ = static_cast<char*>(data);
  region->bytes_ = bytes;
  return region;
}

HostRegion::~HostRegion() {
  if (data_ != nullptr) munmap(data_, bytes_);
}

Status HostRegion::Write(uint64_t offset, const char* src, size_t len, CopyStream* /*stream*/) {
  if (offset > bytes_ || len > bytes_ - offset) {
    return Status::Error(ErrorKind::kInternal, "write [%llu, +%zu) outside the %llu-byte region",
                         static_cast<unsigned long long>(offset), len,
                         static_cast<unsigned long long>(bytes_));
  }
  memcpy(data_ + offset, src, len);
  return Status::Ok();
}

PagePool::PagePool(uint64_t region_bytes, uint32_t page_bytes)
    : page_bytes_(std::max<uint32_t>(page_bytes, 2)), total_(region_bytes / page_bytes_) {
  free_.reserve(total_);
  for (size_t i = total_; i > 0; --i) free_.push_back(static_cast<uint32_t>(i - 1));
}

size_t PagePool::Take(size_t want, bool oldest, uint32_t* pages) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t reserve = oldest ? 0 : total_ / 2;
  const size_t available = free_.size() > reserve ? free_.size() - reserve : 0;
  const size_t n = std::min(want, available);
  for (size_t i = 0; i < n; ++i) {
    pages[i] = free_.back();
    free_.pop_back();
  }
  return n;
}

void PagePool::Give(const uint32_t* pages, size_t count) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.insert(free_.end(), pages, pages + count);
}

size_t PagePool::free_pages() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return free_.size();
}

// ---------------------------------------------------------------------------------------------

EmulatedFragReceiver::EmulatedFragReceiver(RxRegion* region, PagePool* pool, EmulationMix mix,
                                           uint64_t seed)
    : region_(region), pool_(pool), mix_(mix), rng_(seed | 1) {
  const size_t pages = PagesPerReceive(pool->page_bytes());
  pages_.resize(pages);
  iov_.resize(pages + 1);  // + the linear bytes a receive may start with
  plan_.resize(pages + 1);
}

Result<std::unique_ptr<EmulatedFragReceiver>> EmulatedFragReceiver::Create(
    RxRegion* region, PagePool* pool, EmulationMix mix, uint64_t seed,
    std::chrono::milliseconds gpu_work_limit) {
  auto receiver = std::make_unique<EmulatedFragReceiver>(region, pool, mix, seed);
  if (region->host_base() == nullptr) {
    Result<PinnedBuffer> bounce =
        PinnedBuffer::Allocate(receiver->max_pages() * pool->page_bytes(), region->gpu());
    if (!bounce.ok()) return bounce.status().WithContext("pinned bounce of the emulated NIC");
    receiver->dma_bounce_ = std::move(bounce).value();
    Result<CopyStream> stream = CopyStream::Create(region->gpu(), gpu_work_limit);
    if (!stream.ok()) return stream.status().WithContext("copy stream of the emulated NIC");
    receiver->copy_stream_.emplace(std::move(stream).value());
  }
  return receiver;
}

Status EmulatedFragReceiver::CopyRunsToRegion(const StreamSegment* plan, const iovec* iov, size_t n,
                                              uint64_t bytes) {
  // Frags whose region offsets and bounce addresses both continue the previous one form one
  // run, one copy (fresh pools hand out consecutive pages, so most receives are one run).
  uint64_t left = bytes;
  size_t i = 0;
  bool queued = false;
  while (i < n && left > 0) {
    if (plan[i].kind != StreamSegment::Kind::kRegion) {
      left -= std::min<uint64_t>(plan[i].length, left);
      ++i;
      continue;
    }
    const uint64_t start = plan[i].source_offset;
    const char* source = static_cast<const char*>(iov[i].iov_base);
    uint64_t run = 0;
    while (i < n && left > 0 && plan[i].kind == StreamSegment::Kind::kRegion &&
           plan[i].source_offset == start + run &&
           static_cast<const char*>(iov[i].iov_base) == source + run) {
      const uint64_t len = std::min<uint64_t>(plan[i].length, left);
      run += len;
      left -= len;
      ++i;
      if (len < plan[i - 1].length) break;  // the stream ended inside this frag
    }
    CopyStream* stream = copy_stream_ ? &*copy_stream_ : nullptr;
    DEVMEM_RETURN_IF_ERROR(region_->Write(start, source, run, stream));
    queued = queued || stream != nullptr;
  }
  // The bounce is reused by the next receive, and the frags go to a consumer: both need the
  // bytes in the region now.
  return queued ? copy_stream_->Wait() : Status::Ok();
}

uint64_t EmulatedFragReceiver::NextRandom() {
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  return rng_;
}

uint32_t EmulatedFragReceiver::IssueToken(uint32_t page) {
  uint32_t token;
  if (!free_tokens_.empty()) {
    token = free_tokens_.back();
    free_tokens_.pop_back();
    token_page_[token] = page;
  } else {
    token = static_cast<uint32_t>(token_page_.size());
    token_page_.push_back(page);
  }
  return token;
}

Result<FragReceiver::State> EmulatedFragReceiver::Receive(int fd, uint64_t max_bytes, bool oldest,
                                                          char* host_dst,
                                                          std::vector<StreamSegment>* segments,
                                                          uint64_t* consumed) {
  *consumed = 0;
  const uint32_t page_bytes = pool_->page_bytes();
  const size_t want =
      static_cast<size_t>(std::min<uint64_t>(max_pages(), max_bytes / page_bytes + 2));
  const size_t got = pool_->Take(want, oldest, pages_.data());
  if (got == 0) {
    ++counters_.stalls;
    return State::kStalled;  // like a NIC without buffers: nothing is read until tokens return
  }
  // Lay out the receive the way a header-split NIC fills it: optional linear bytes, then
  // page frags, some of them the second half of a page.
  iovec* iov = iov_.data();
  StreamSegment* plan = plan_.data();
  size_t n = 0;
  uint64_t planned = 0;
  if (static_cast<int>(NextRandom() % 100) < mix_.linear_percent) {
    const uint64_t len =
        std::min<uint64_t>(64 + NextRandom() % (sizeof(linear_bounce_) - 64), max_bytes);
    iov[n] = {linear_bounce_, len};
    plan[n++] = {StreamSegment::Kind::kHost, 0, static_cast<uint32_t>(len), 0};
    planned += len;
  }
  size_t pages_planned = 0;
  for (; pages_planned < got && planned < max_bytes; ++pages_planned) {
    const bool split = static_cast<int>(NextRandom() % 100) < mix_.split_percent;
    const uint32_t offset = split ? page_bytes / 2 : 0;
    const uint64_t len = std::min<uint64_t>(page_bytes - offset, max_bytes - planned);
    const uint64_t at = uint64_t{pages_[pages_planned]} * page_bytes + offset;
    // The bounce mirrors the pages' layout so that runs are contiguous in both.
    char* landing = region_->host_base() != nullptr
                        ? region_->host_base() + at
                        : dma_bounce_.data() + pages_planned * page_bytes + offset;
    iov[n] = {landing, len};
    plan[n++] = {StreamSegment::Kind::kRegion, at, static_cast<uint32_t>(len),
                 pages_[pages_planned]};
    planned += len;
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  ssize_t r = recvmsg(fd, &msg, MSG_DONTWAIT);
  if (r <= 0) {
    const int err = errno;
    pool_->Give(pages_.data(), got);
    if (r == 0) return PeerClosed();
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) return State::kWouldBlock;
    return Status::Errno(err, "recv on a data connection (emulated devmem)");
  }
  if (region_->host_base() == nullptr) {
    // The NIC's DMA into GPU memory, emulated: the bytes must be in the region before the
    // frags are described to the consumer.
    Status written = CopyRunsToRegion(plan, iov, n, static_cast<uint64_t>(r));
    if (!written.ok()) {
      pool_->Give(pages_.data(), got);
      return written;
    }
  }
  uint64_t left = static_cast<uint64_t>(r);
  uint64_t local = 0;
  size_t used_pages = 0;
  {
    std::lock_guard<std::mutex> lock(tokens_mutex_);
    for (size_t i = 0; i < n && left > 0; ++i) {
      StreamSegment segment = plan[i];
      segment.length = static_cast<uint32_t>(std::min<uint64_t>(segment.length, left));
      if (segment.kind == StreamSegment::Kind::kHost) {
        if (host_dst != nullptr) memcpy(host_dst + local, linear_bounce_, segment.length);
        counters_.host_bytes += segment.length;
      } else {
        segment.token = IssueToken(segment.token);  // the plan carried the page number
        ++used_pages;
        ++counters_.frags;
        counters_.region_bytes += segment.length;
      }
      segments->push_back(segment);
      local += segment.length;
      left -= segment.length;
    }
  }
  outstanding_.fetch_add(used_pages, std::memory_order_relaxed);
  if (used_pages < got) pool_->Give(pages_.data() + used_pages, got - used_pages);
  *consumed = static_cast<uint64_t>(r);
  return State::kProgress;
}

Status EmulatedFragReceiver::Release(int /*fd*/, const uint32_t* tokens, size_t count) {
  // Both the receiving worker (host destinations) and the proxy thread (deferred frags) return
  // tokens: everything below is under the token lock (the pool has its own, taken inside).
  std::lock_guard<std::mutex> lock(tokens_mutex_);
  returned_.clear();
  for (size_t i = 0; i < count; ++i) {
    const uint32_t token = tokens[i];
    // Like the kernel: a token that is not outstanding on this socket is skipped.
    if (token >= token_page_.size() || token_page_[token] < 0) continue;
    returned_.push_back(static_cast<uint32_t>(token_page_[token]));
    token_page_[token] = -1;
    free_tokens_.push_back(token);
  }
  pool_->Give(returned_.data(), returned_.size());
  outstanding_.fetch_sub(returned_.size(), std::memory_order_relaxed);
  ++counters_.release.calls;
  counters_.release.tokens_returned += count;
  counters_.release.tokens_not_freed += count - returned_.size();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------

ssize_t DevmemFragReceiver::KernelReceive(int fd, msghdr* msg, int flags) {
  return recvmsg(fd, msg, flags);
}

DevmemFragReceiver::DevmemFragReceiver(RegionBinding binding, const FragGeometry& geometry,
                                       TokenBatch::ReleaseFn release,
                                       SteeringExpectation steering, ReceiveFn receive)
    : binding_(binding),
      bounce_(kReceiveBytes),
      control_(DevmemControlBytes(kReceiveBytes, geometry)),
      release_(release),
      steering_(std::move(steering)),
      receive_(receive) {
  if (steering_.warning == nullptr) steering_.warning = std::make_shared<SteeringMissWarning>(1);
}

Result<FragReceiver::State> DevmemFragReceiver::Receive(int fd, uint64_t max_bytes, bool /*oldest*/,
                                                        char* host_dst,
                                                        std::vector<StreamSegment>* segments,
                                                        uint64_t* consumed) {
  *consumed = 0;
  // The iov length bounds how much of the stream one call consumes; it must be real memory
  // because an unbound queue delivers everything as plain bytes.
  iovec iov{bounce_.data(), static_cast<size_t>(std::min<uint64_t>(max_bytes, bounce_.size()))};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control_.data();
  msg.msg_controllen = control_.size();
  ssize_t r = receive_(fd, &msg, uapi::kMsgSockDevmem | MSG_DONTWAIT);
  if (r == 0) return PeerClosed();
  if (r < 0) {
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) return State::kWouldBlock;
    if (err == uapi::kEtooSmall) {
      return Status::Error(ErrorKind::kInternal,
                           "devmem recvmsg: control buffer of %zu bytes "
                           "holds not even one frag (ETOOSMALL)",
                           control_.size());
    }
    return Status::Errno(err, "recvmsg(MSG_SOCK_DEVMEM) on a data connection");
  }
  const size_t first = segments->size();
  Result<ParsedReceive> parsed = ParseDevmemReceive(msg, r, binding_, bounce_.size(), segments);
  if (!parsed.ok()) return parsed.status();
  uint64_t local = 0;
  for (size_t i = first; i < segments->size(); ++i) {
    const StreamSegment& s = (*segments)[i];
    if (s.kind == StreamSegment::Kind::kHost && host_dst != nullptr) {
      memcpy(host_dst + local, bounce_.data() + s.source_offset, s.length);
    }
    local += s.length;
  }
  if (parsed->plain) {
    // N8: the flow is not steered to the bound queue, and its payload crosses host memory.
    const std::string what = Format(
        "%zd bytes arrived as plain data on a devmem connection (%s, expected on RX queue %u of "
        "%s): flow steering did not apply (rule missing, replaced or not matching the flow)",
        r, steering_.flow.empty() ? "flow unknown" : steering_.flow.c_str(), steering_.queue,
        steering_.nic.empty() ? "its NIC" : steering_.nic.c_str());
    if (steering_.required) {
      return Status::Error(ErrorKind::kSystem, "%s; NCCL_DEVMEM_REQUIRE=1 makes this an error",
                           what.c_str());
    }
    ++counters_.plain_reads;
    steering_.warning->OnPlainRead(what.c_str());
  }
  counters_.frags += parsed->frags;
  counters_.region_bytes += parsed->region_bytes;
  counters_.host_bytes += parsed->host_bytes;
  outstanding_.fetch_add(parsed->frags, std::memory_order_relaxed);
  *consumed = static_cast<uint64_t>(r);
  return State::kProgress;
}

Status DevmemFragReceiver::Release(int fd, const uint32_t* tokens, size_t count) {
  std::lock_guard<std::mutex> lock(release_mutex_);  // worker and proxy thread both release
  for (size_t i = 0; i < count; ++i) batch_.Add(tokens[i]);
  // A failed SO_DEVMEM_DONTNEED freed none of its tokens (sock_devmem_dontneed returns every
  // error before it touches the socket's tokens): they stay pinned, stay in the batch and go
  // back with the next release. So what is no longer outstanding is exactly what left the
  // batch, this call's tokens and earlier failed ones alike; tokens a successful call did not
  // free were not the kernel's to free (counted in tokens_not_freed) and are gone too.
  const size_t pending = batch_.tokens();
  Status status = batch_.Release(fd, &counters_.release, release_);
  outstanding_.fetch_sub(pending - batch_.tokens(), std::memory_order_relaxed);
  return status;
}

}  // namespace devmem

#include "tools/doctor_pair.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "plugin/transport/wire.h"
#include "tools/doctor_json.h"
#include "tools/pair_control.h"
#include "tools/pair_report.h"
#include "tools/pair_session.h"

namespace devmem::doctor {
namespace {

// The buffer each side registers: slots of the largest message, at least 2 and at most 8 (NCCL
// keeps NCCL_STEPS = 8 in flight per connection), within 128 MiB where the messages allow.
constexpr uint64_t kBufferBudget = 128 << 20;
constexpr uint64_t kMaxSlots = 8;
// How long a failing side tries to tell its peer before it exits.
constexpr std::chrono::seconds kErrorNotice{1};

// Direction 0 is pair -> serve, 1 serve -> pair.
bool Sends(bool serve, int direction) { return (direction == 0) != serve; }

// The address the listen handle names; an error when it is not one of the named host's.
Result<std::string> CheckPeerHandle(const HandleMessage& theirs,
                                    const std::vector<SocketAddress>& host_addresses,
                                    const std::string& host) {
  Result<wire::ListenHandle> handle = wire::ListenHandle::Decode(theirs.handle);
  if (!handle.ok()) return handle.status().WithContext("the peer's listen handle");
  if (!IsOneOf(handle->address, host_addresses) || !handle->extra_members.empty()) {
    return Status::Error(ErrorKind::kRemote,
                         "the peer's plugin listens on %s (NIC %s), which is not an address of "
                         "%s: name the peer by the address of the NIC its plugin uses "
                         "(NCCL_SOCKET_IFNAME there)",
                         HostText(handle->address).c_str(), theirs.nic.c_str(), host.c_str());
  }
  return HostText(handle->address);
}

// The peer's rows must be the plan's rows.
Status CheckPeerRows(const std::vector<SizeResult>& rows, const std::vector<uint64_t>& sizes) {
  bool match = rows.size() == sizes.size();
  for (size_t i = 0; match && i < rows.size(); ++i) {
    match = rows[i].size == sizes[i] && rows[i].messages == MessagesPerSize(sizes[i]);
  }
  if (match) return Status::Ok();
  return Status::Error(ErrorKind::kRemote,
                       "the peer's results do not follow the plan (%zu rows "
                       "for %zu sizes)",
                       rows.size(), sizes.size());
}

class PairRun {
 public:
  explicit PairRun(const PairOptions& options)
      : o_(options), deadline_(Clock::now() + options.timeout) {}

  Result<PairReport> Run();
  // Tells the peer (when connected) why this side stops.
  void NotifyPeer(const Status& failure);

 private:
  Status Connect();
  Status Watch();
  const PairOptions& o_;
  const Clock::time_point deadline_;
  std::vector<SocketAddress> host_addresses_;
  std::optional<ControlChannel> channel_;
};

Status PairRun::Connect() {
  Result<std::vector<SocketAddress>> addresses = ResolveHost(o_.host);
  if (!addresses.ok()) return addresses.status();
  host_addresses_ = addresses.value();
  Result<ControlChannel> channel =
      o_.serve ? AcceptPeer(o_.port, host_addresses_, o_.host, deadline_,
                            [](const std::string& line) {
                              fprintf(stderr, "devmem-doctor: %s\n", line.c_str());
                            })
               : ConnectPeer(host_addresses_, o_.port, deadline_);
  if (!channel.ok()) return channel.status();
  channel_.emplace(std::move(channel).value());
  return Status::Ok();
}

Status PairRun::Watch() {
  if (Clock::now() >= deadline_) {
    return Status::Error(ErrorKind::kRemote, "the deadline (--timeout %llds) passed",
                         static_cast<long long>(o_.timeout.count()));
  }
  return channel_->Poll();
}

void PairRun::NotifyPeer(const Status& failure) {
  if (!channel_.has_value()) return;
  // Best effort: the peer also stops at its own deadline if this does not reach it.
  const Status sent = channel_->Send(MessageType::kError, EncodeText(failure.message()),
                                     Clock::now() + kErrorNotice);
  static_cast<void>(sent);
}

Result<PairReport> PairRun::Run() {
  DEVMEM_RETURN_IF_ERROR(Connect());
  ControlChannel& channel = *channel_;
  Hello hello;
  if (o_.serve) {
    Result<std::vector<uint8_t>> payload =
        channel.Expect(MessageType::kHello, "the hello of devmem-doctor --pair", deadline_);
    if (!payload.ok()) return payload.status();
    Result<Hello> decoded = DecodeHello(payload.value());
    if (!decoded.ok()) return decoded.status();
    hello = decoded.value();
  } else {
    hello.max_bytes = o_.max_bytes;
    DEVMEM_RETURN_IF_ERROR(channel.Send(MessageType::kHello, Encode(hello), deadline_));
  }

  Result<std::unique_ptr<PluginSession>> opened = PluginSession::Open(o_.verbose);
  if (!opened.ok()) return opened.status();
  PluginSession& session = *opened.value();
  HandleMessage mine;
  DEVMEM_RETURN_IF_ERROR(session.Listen(mine.handle));
  mine.max_message_bytes = session.max_message_bytes();
  mine.nic = session.nic();
  Result<wire::ListenHandle> own = wire::ListenHandle::Decode(mine.handle);
  if (!own.ok()) return own.status().WithContext("this side's listen handle");
  DEVMEM_RETURN_IF_ERROR(channel.Send(MessageType::kHandle, Encode(mine), deadline_));
  Result<std::vector<uint8_t>> payload =
      channel.Expect(MessageType::kHandle, "the peer's listen handle", deadline_);
  if (!payload.ok()) return payload.status();
  Result<HandleMessage> theirs = DecodeHandle(payload.value());
  if (!theirs.ok()) return theirs.status();
  Result<std::string> peer_address = CheckPeerHandle(theirs.value(), host_addresses_, o_.host);
  if (!peer_address.ok()) return peer_address.status();
  // The slot where connect parks its connector between calls starts empty, whatever the peer
  // sent there (NCCL's own peer handles come from the same plugin; this one came from the wire).
  memset(theirs->handle + wire::ListenHandle::kConnectorSlotOffset, 0, sizeof(void*));

  // Both sides derive the same plan: the hello's sizes within both plugins' message limits.
  const uint64_t largest =
      std::min({hello.max_bytes, mine.max_message_bytes, theirs->max_message_bytes});
  if (largest < hello.min_bytes) {
    return Status::Error(ErrorKind::kSystem,
                         "a plugin takes messages of at most %llu bytes, under the %llu-byte "
                         "smallest size",
                         static_cast<unsigned long long>(largest),
                         static_cast<unsigned long long>(hello.min_bytes));
  }
  const std::vector<uint64_t> sizes = SizeLadder(hello.min_bytes, largest);
  const auto watch = [this] { return Watch(); };
  DEVMEM_RETURN_IF_ERROR(session.Establish(theirs->handle, watch));
  DEVMEM_RETURN_IF_ERROR(
      session.Register(std::clamp<uint64_t>(kBufferBudget / largest, 2, kMaxSlots), largest));

  ResultMessage local;
  for (int direction = 0; direction < 2; ++direction) {
    // The receiver's clock starts when the sender says it sends, not while the sender still
    // receives (and checks) the other direction.
    if (Sends(o_.serve, direction)) {
      DEVMEM_RETURN_IF_ERROR(channel.Send(
          MessageType::kStart, EncodeStart(static_cast<uint32_t>(direction)), deadline_));
    } else {
      payload = channel.Expect(MessageType::kStart, "the peer's start of sending", deadline_);
      if (!payload.ok()) return payload.status();
      Result<uint32_t> started = DecodeStart(payload.value());
      if (!started.ok()) return started.status();
      if (started.value() != static_cast<uint32_t>(direction)) {
        return Status::Error(ErrorKind::kRemote, "the peer started direction %u, not %d",
                             started.value(), direction);
      }
    }
    for (const uint64_t size : sizes) {
      const uint32_t messages = MessagesPerSize(size);
      const auto d = static_cast<uint32_t>(direction);
      if (Sends(o_.serve, direction)) {
        DEVMEM_RETURN_IF_ERROR(session.Send(d, size, messages, watch)
                                   .WithContext(Format("sending %llu-byte messages",
                                                       static_cast<unsigned long long>(size))));
        continue;
      }
      Result<SizeResult> row = session.Receive(d, size, messages, watch);
      if (!row.ok()) {
        return row.status().WithContext(
            Format("receiving %llu-byte messages", static_cast<unsigned long long>(size)));
      }
      local.received.push_back(row.value());
    }
  }
  local.send_path = session.SendPath();
  local.recv_path = session.RecvPath();
  DEVMEM_RETURN_IF_ERROR(channel.Send(MessageType::kResult, Encode(local), deadline_));
  payload = channel.Expect(MessageType::kResult, "the peer's results", deadline_);
  if (!payload.ok()) return payload.status();
  Result<ResultMessage> remote = DecodeResult(payload.value());
  if (!remote.ok()) return remote.status();
  DEVMEM_RETURN_IF_ERROR(CheckPeerRows(remote->received, sizes));

  PairReport report;
  report.role = o_.serve ? "serve" : "pair";
  report.port = o_.port;
  report.local = {report.role, HostText(own->address), session.nic()};
  report.peer = {o_.serve ? "pair" : "serve", peer_address.value(), theirs->nic};
  for (int direction = 0; direction < 2; ++direction) {
    DirectionReport& d = report.directions[direction];
    const bool we_send = Sends(o_.serve, direction);
    d.sender = we_send ? report.local : report.peer;
    d.receiver = we_send ? report.peer : report.local;
    d.sender_path = we_send ? local.send_path : remote->send_path;
    d.receiver_path = we_send ? remote->recv_path : local.recv_path;
    d.sizes = we_send ? remote->received : local.received;
  }
  return report;
}

}  // namespace

int RunPairCheck(const PairOptions& options) {
  PairRun run(options);
  Result<PairReport> report = run.Run();
  if (!report.ok()) {
    run.NotifyPeer(report.status());
    const char* role = options.serve ? "serve" : "pair";
    fprintf(stderr, "devmem-doctor --%s: %s\n", role, report.status().message().c_str());
    if (options.json) {
      printf("{\"ready\": false, \"role\": \"%s\", \"error\": \"%s\"}\n", role,
             JsonString(report.status().message()).c_str());
    }
    return 2;
  }
  const std::string text =
      options.json ? PairReportJson(report.value()) + "\n" : PairReportText(report.value());
  fputs(text.c_str(), stdout);
  return report->corrupt() ? 1 : 0;
}

}  // namespace devmem::doctor

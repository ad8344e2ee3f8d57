// The front door of a listener. Anyone who can reach the port can connect, so a socket earns a
// place only by identifying itself: a full, valid hello carrying this listener's nonce. Until
// then it is "unidentified", and the listener bounds what unidentified sockets can cost it:
//
// - The kernel holds back a connection that sent nothing (TCP_DEFER_ACCEPT, about 1 s): an idle
//   flood costs no file descriptor until then, and the rules below apply after. Real peers send
//   their hello right after connecting, so they are never deferred.
// - Every accepted socket is read at once (at most the hello's 40 bytes, non-blocking), so a peer
//   whose hello already arrived is identified before anything else can push it out; identified
//   sockets leave this class and are never evicted. Bytes that cannot begin a hello, and a nonce
//   that is not ours, drop the socket on arrival.
// - At most max_unidentified sockets wait for the rest of their hello; a new one evicts the
//   socket that made no progress for the longest time (newest byte, or accept if none), and any
//   waits at most the handshake timeout.
// - accept4 out of file descriptors (EMFILE/ENFILE): close the stalest unidentified sockets and
//   hold fewer of them for a while, instead of retrying in a loop; with none to close, pause
//   accepting for 100 ms.
// Each drop goes to the listener's DropLog, which rate-limits the WARNs.
#pragma once

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/socket_address.h"
#include "plugin/core/unique_fd.h"
#include "plugin/transport/listener_drop_log.h"
#include "plugin/transport/wire.h"

namespace devmem {

// An accepted socket whose full hello, with this listener's nonce, arrived.
struct IdentifiedSocket {
  UniqueFd fd;
  SocketAddress peer;
  wire::Hello hello;
  Clock::time_point accepted;
};

class Admission final {
 public:
  struct Limits {
    size_t max_unidentified = 1024;
    std::chrono::milliseconds handshake_timeout{kDefaultHandshakeTimeoutMs};
  };

  // The cap on unidentified sockets for a process whose soft RLIMIT_NOFILE is `soft_nofile`: a
  // quarter of it, at most 1024 and at least 16. A quarter leaves the rest of the descriptors to
  // NCCL, to the comms and to the other listeners of the process; 1024 waiting sockets is more
  // than any real burst of connects (NCCL opens a handful per peer), and past it memory and the
  // per-call sweep would only serve a flood.
  static size_t MaxUnidentifiedFor(rlim_t soft_nofile);
  // The same for this process (getrlimit).
  static size_t MaxUnidentifiedForThisProcess();

  // `listen_fd` stays owned by the caller and must outlive this object; `log` too.
  static std::unique_ptr<Admission> Create(int listen_fd, uint64_t nonce, Limits limits,
                                           DropLog* log);
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Non-blocking. Reads the hellos that arrived, accepts up to a batch of new sockets (reading
  // each at once), expires overdue ones; appends the sockets that identified themselves.
  void Poll(std::vector<IdentifiedSocket>* identified);

  size_t unidentified() const { return waiting_.size(); }
  size_t max_unidentified() const { return cap_; }

 private:
  struct Waiting {
    uint64_t id = 0;
    UniqueFd fd;
    SocketAddress peer;
    uint8_t hello[wire::Hello::kSize] = {};
    size_t received = 0;
    Clock::time_point accepted;
    Clock::time_point progressed;  // the newest byte, or accepted
    bool registered = false;       // in epoll_
  };
  using WaitingList = std::list<Waiting>;  // stalest first

  Admission(int listen_fd, uint64_t nonce, Limits limits, DropLog* log);
  void ReadReady(std::vector<IdentifiedSocket>* identified, Clock::time_point now);
  void AcceptWaiting(std::vector<IdentifiedSocket>* identified, Clock::time_point now);
  // Handles accept4 failing for lack of descriptors or memory; false when accepting must stop.
  bool OnExhausted(int err, Clock::time_point now);
  // Reads a new socket at once; waits for the rest of its hello only if it must.
  void Admit(UniqueFd fd, const SocketAddress& peer, std::vector<IdentifiedSocket>* identified,
             Clock::time_point now);
  // Reads what is missing of the socket's hello: a complete valid one moves to `identified`,
  // an impossible one is dropped, otherwise it keeps waiting (the freshest if bytes came).
  void Read(WaitingList::iterator it, std::vector<IdentifiedSocket>* identified,
            Clock::time_point now);
  void Expire(Clock::time_point now);
  // Removes a waiting socket, closing it unless its fd was moved out.
  void Forget(WaitingList::iterator it);
  void Drop(WaitingList::iterator it, DropReason reason, const std::string& why,
            Clock::time_point now);

  const int listen_fd_;
  UniqueFd epoll_;  // sockets waiting for the rest of their hello; created on first need
  const uint64_t nonce_;
  const Limits limits_;
  DropLog* const log_;
  const size_t cap_;
  size_t cap_now_;  // lower than cap_ for a while after running out of descriptors
  Clock::time_point cap_restore_at_;
  Clock::time_point accept_paused_until_;
  uint64_t next_id_ = 1;
  WaitingList waiting_;
  std::unordered_map<uint64_t, WaitingList::iterator> by_id_;
};

}  // namespace devmem

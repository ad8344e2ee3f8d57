#include "plugin/devmem/netdev_netlink.h"

#include <linux/netlink.h>
#include <netlink/attr.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <utility>

#include "plugin/core/forked_child_release.h"
#include "plugin/devmem/bind_errors.h"
#include "plugin/devmem/uapi.h"

namespace devmem {
namespace {

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif
#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
constexpr int kNlmsgerrAttrMsg = 1;   // NLMSGERR_ATTR_MSG
constexpr int kNlmsgerrAttrOffs = 2;  // NLMSGERR_ATTR_OFFS
constexpr uint16_t kAckTlvs = 0x200;  // NLM_F_ACK_TLVS

struct NlMsgDeleter {
  void operator()(nl_msg* msg) const { nlmsg_free(msg); }
};
using NlMsg = std::unique_ptr<nl_msg, NlMsgDeleter>;
struct NlCbDeleter {
  void operator()(nl_cb* cb) const { nl_cb_put(cb); }
};
using NlCb = std::unique_ptr<nl_cb, NlCbDeleter>;

// What one request produced: the kernel's error (with extack) and the parsed replies.
struct Exchange {
  uint32_t sequence = 0;  // the request's nlmsg_seq; answers to anything else are stale
  bool answered = false;  // its ACK, error or NLMSG_DONE arrived: nothing more will come
  int error = 0;          // negative errno from NLMSG_ERROR, 0 on success
  std::string extack_message;
  int bad_attr_offset = -1;  // byte offset of the offending attribute in our request
  std::vector<std::vector<uint32_t>> replies;  // per reply: attribute values by type (u32)
  std::vector<uint64_t> present;               // per reply: bit N set when attribute N came
  int max_attr = 0;
};

// Every message of the request's sequence number is ours; anything else (the ACK or reply of
// an earlier request whose reader stopped early) is stale and skipped.
int OnSequenceCheck(nl_msg* msg, void* arg) {
  return nlmsg_hdr(msg)->nlmsg_seq == static_cast<Exchange*>(arg)->sequence ? NL_OK : NL_SKIP;
}

int OnError(sockaddr_nl* /*who*/, nlmsgerr* err, void* arg) {
  auto* ex = static_cast<Exchange*>(arg);
  ex->answered = true;
  ex->error = err->error;
  auto* nlh = reinterpret_cast<nlmsghdr*>(reinterpret_cast<char*>(err) - NLMSG_HDRLEN);
  if ((nlh->nlmsg_flags & kAckTlvs) != 0) {
    // With NETLINK_CAP_ACK the request payload is not echoed: TLVs follow the nlmsgerr.
    auto* tlvs = reinterpret_cast<nlattr*>(reinterpret_cast<char*>(err) + sizeof(*err));
    const int len =
        static_cast<int>(nlh->nlmsg_len) - NLMSG_HDRLEN - static_cast<int>(sizeof(*err));
    nlattr* attr;
    int rem;
    nla_for_each_attr(attr, tlvs, len, rem) {
      if (nla_type(attr) == kNlmsgerrAttrMsg) ex->extack_message = nla_get_string(attr);
      if (nla_type(attr) == kNlmsgerrAttrOffs)
        ex->bad_attr_offset = static_cast<int>(nla_get_u32(attr));
    }
  }
  return NL_STOP;
}

int OnValid(nl_msg* msg, void* arg) {
  auto* ex = static_cast<Exchange*>(arg);
  std::vector<nlattr*> tb(static_cast<size_t>(ex->max_attr) + 1, nullptr);
  if (genlmsg_parse(nlmsg_hdr(msg), 0, tb.data(), ex->max_attr, nullptr) < 0) return NL_SKIP;
  std::vector<uint32_t> values(static_cast<size_t>(ex->max_attr) + 1, 0);
  uint64_t present = 0;
  for (int i = 1; i <= ex->max_attr; ++i) {
    if (tb[i] != nullptr) present |= uint64_t{1} << i;
    if (tb[i] != nullptr && nla_len(tb[i]) >= 4) values[i] = nla_get_u32(tb[i]);
  }
  ex->replies.push_back(std::move(values));
  ex->present.push_back(present);
  return NL_OK;
}

// The end of one request's answer: the ACK of a do-request (NLMSG_ERROR with error 0) or the
// NLMSG_DONE of a dump, whose payload is the dump's own errno (net/netlink/af_netlink.c
// netlink_dump_done puts nlk->dump_done_errno there: a dump that failed part-way says so only
// in the DONE).
int OnAnswered(nl_msg* msg, void* arg) {
  auto* ex = static_cast<Exchange*>(arg);
  ex->answered = true;
  const nlmsghdr* header = nlmsg_hdr(msg);
  if (header->nlmsg_type == NLMSG_DONE && nlmsg_datalen(header) >= static_cast<int>(sizeof(int))) {
    int dump_error = 0;
    memcpy(&dump_error, nlmsg_data(header), sizeof(dump_error));
    if (dump_error < 0) ex->error = dump_error;
  }
  return NL_STOP;
}

Result<NlSocket> ConnectGenl(int* family) {
  NlSocket sock(nl_socket_alloc());
  if (!sock) return Status::Error(ErrorKind::kSystem, "nl_socket_alloc failed");
  if (int err = genl_connect(sock.get()); err < 0) {
    return Status::Error(ErrorKind::kSystem, "connecting generic netlink: %s", nl_geterror(err));
  }
  const int fd = nl_socket_get_fd(sock.get());
  // libnl opens it with SOCK_CLOEXEC since 3.2.x; older ones did not, and an exec'd child
  // must not inherit a binding either.
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return Status::Errno(errno, "close-on-exec on the generic netlink socket");
  }
  // A binding lives as long as this socket: no forked child may share it
  // (forked_child_release.h).
  KeepOutOfForkedChildren(fd);
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  int id = genl_ctrl_resolve(sock.get(), uapi::kNetdevFamilyName);
  if (id < 0) {
    return Status::Error(ErrorKind::kSystem,
                         "the kernel has no \"netdev\" generic netlink family (%s): devmem TCP "
                         "needs Linux >= 6.12 with CONFIG_NET_DEVMEM",
                         nl_geterror(id));
  }
  *family = id;
  return sock;
}

// Where each attribute we put starts in the request, so an extack offset can be named.
using AttributeMap = std::vector<std::pair<int, std::string>>;

void Mark(nl_msg* msg, AttributeMap* map, std::string name) {
  map->push_back({static_cast<int>(nlmsg_hdr(msg)->nlmsg_len), std::move(name)});
}

// Sends `msg` and collects replies until the ACK, error or NLMSG_DONE of THIS request arrives.
// A genl do-request is answered in two datagrams, the reply (genlmsg_reply) and then the ACK
// (netlink_rcv_skb -> netlink_ack, net/netlink/af_netlink.c, for NLM_F_ACK, which nl_send_auto
// always sets), and libnl's nl_recvmsgs reads one datagram unless it carries NLM_F_MULTI
// (lib/nl.c recvmsgs, thom311/libnl @063a2ebf): one call would leave the ACK queued for the
// next request to mistake for its own answer.
Status Transact(nl_sock* sock, nl_msg* msg, Exchange* ex, const std::string& what,
                const AttributeMap& attributes = {}) {
  NlCb cb(nl_cb_alloc(NL_CB_DEFAULT));
  if (!cb) return Status::Error(ErrorKind::kSystem, "nl_cb_alloc failed");
  nl_cb_err(cb.get(), NL_CB_CUSTOM, OnError, ex);
  nl_cb_set(cb.get(), NL_CB_SEQ_CHECK, NL_CB_CUSTOM, OnSequenceCheck, ex);
  nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, OnValid, ex);
  nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, OnAnswered, ex);
  nl_cb_set(cb.get(), NL_CB_FINISH, NL_CB_CUSTOM, OnAnswered, ex);
  if (int err = nl_send_auto(sock, msg); err < 0) {
    return Status::Error(ErrorKind::kSystem, "%s: sending: %s", what.c_str(), nl_geterror(err));
  }
  ex->sequence = nlmsg_hdr(msg)->nlmsg_seq;  // nl_send_auto numbered it
  int err = 0;
  while (!ex->answered && err >= 0) err = nl_recvmsgs(sock, cb.get());
  if (ex->error != 0) {
    char text[128];
    std::string message = Format("%s: %s (errno %d)", what.c_str(),
                                 strerror_r(-ex->error, text, sizeof(text)), -ex->error);
    if (!ex->extack_message.empty()) message += "; kernel says: " + ex->extack_message;
    if (ex->bad_attr_offset >= 0) {
      std::string name = "?";
      for (const auto& [offset, attr] : attributes) {
        if (offset <= ex->bad_attr_offset) name = attr;
      }
      message += Format("; the kernel rejects attribute %s (byte %d of the request)", name.c_str(),
                        ex->bad_attr_offset);
    }
    return Status::Error(ErrorKind::kSystem, "%s", message.c_str());
  }
  if (err < 0) return Status::Error(ErrorKind::kSystem, "%s: %s", what.c_str(), nl_geterror(err));
  return Status::Ok();
}

}  // namespace

void NlSocketDeleter::operator()(nl_sock* sock) const {
  StopKeepingOutOfForkedChildren(nl_socket_get_fd(sock));
  nl_socket_free(sock);
}

Result<NetdevNetlink> NetdevNetlink::Open() {
  int family = 0;
  Result<NlSocket> sock = ConnectGenl(&family);
  if (!sock.ok()) return sock.status();
  return NetdevNetlink(std::move(sock).value(), family);
}

Result<bool> NetdevNetlink::DeviceKnown(int ifindex) {
  NlMsg msg(nlmsg_alloc());
  if (!msg) return Status::Error(ErrorKind::kSystem, "nlmsg_alloc failed");
  genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family_, 0, NLM_F_REQUEST | NLM_F_ACK,
              uapi::kNetdevCmdDevGet, uapi::kNetdevFamilyVersion);
  nla_put_u32(msg.get(), uapi::kDevIfindex, static_cast<uint32_t>(ifindex));
  Exchange ex;
  ex.max_attr = 6;
  Status status = Transact(sock_.get(), msg.get(), &ex, Format("dev-get ifindex %d", ifindex));
  if (ex.error == -ENODEV) return false;  // netdev_nl_dev_get_doit: no such device
  if (!status.ok()) return status;
  return !ex.replies.empty();
}

Result<std::vector<RxQueueInfo>> NetdevNetlink::RxQueues(int ifindex) {
  NlMsg msg(nlmsg_alloc());
  if (!msg) return Status::Error(ErrorKind::kSystem, "nlmsg_alloc failed");
  genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family_, 0, NLM_F_REQUEST | NLM_F_DUMP,
              uapi::kNetdevCmdQueueGet, uapi::kNetdevFamilyVersion);
  nla_put_u32(msg.get(), uapi::kQueueIfindex, static_cast<uint32_t>(ifindex));
  Exchange ex;
  ex.max_attr = uapi::kQueueAttrMax;
  DEVMEM_RETURN_IF_ERROR(
      Transact(sock_.get(), msg.get(), &ex, Format("queue-get ifindex %d", ifindex)));
  std::vector<RxQueueInfo> queues;
  for (size_t i = 0; i < ex.replies.size(); ++i) {
    const std::vector<uint32_t>& values = ex.replies[i];
    if (values[uapi::kQueueIfindex] != static_cast<uint32_t>(ifindex)) continue;
    if (values[uapi::kQueueType] != uapi::kQueueTypeRx) continue;
    // io_uring zcrx and AF_XDP announce themselves with empty nests (netdev-genl.c
    // __netdev_nl_queue_fill_mp): only their presence says anything.
    const uint64_t present = ex.present[i];
    queues.push_back({values[uapi::kQueueId], values[uapi::kQueueNapiId],
                      values[uapi::kQueueDmabuf], (present >> uapi::kQueueIoUring & 1) != 0,
                      (present >> uapi::kQueueXsk & 1) != 0});
  }
  return queues;
}

namespace {

// bind-rx and bind-tx share their request: ifindex, dmabuf fd, then `add_more` (bind-rx's
// queues). Returns the binding's netlink socket (it must stay open for the binding to live)
// and the dmabuf id the kernel gave it.
// A refusal without an extack message (or with one the table knows) also says what it means
// and where to look (bind_errors.h); `refusal`, when given, gets the kernel's errno and extack.
Result<std::pair<NlSocket, uint32_t>> BindDmabuf(
    BindCommand command, int ifindex, int dmabuf_fd, const std::string& what,
    const std::function<void(nl_msg*, AttributeMap*)>& add_more, BindRefusal* refusal) {
  int family = 0;
  Result<NlSocket> sock = ConnectGenl(&family);
  if (!sock.ok()) return sock.status();
  NlMsg msg(nlmsg_alloc());
  if (!msg) return Status::Error(ErrorKind::kSystem, "nlmsg_alloc failed");
  const uint8_t cmd =
      command == BindCommand::kRx ? uapi::kNetdevCmdBindRx : uapi::kNetdevCmdBindTx;
  genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, NLM_F_REQUEST | NLM_F_ACK, cmd,
              uapi::kNetdevFamilyVersion);
  AttributeMap attributes;
  Mark(msg.get(), &attributes, "ifindex");
  nla_put_u32(msg.get(), uapi::kDmabufIfindex, static_cast<uint32_t>(ifindex));
  Mark(msg.get(), &attributes, "fd");
  nla_put_u32(msg.get(), uapi::kDmabufFd, static_cast<uint32_t>(dmabuf_fd));
  if (add_more) add_more(msg.get(), &attributes);
  Exchange ex;
  ex.max_attr = uapi::kDmabufAttrMax;
  if (Status status = Transact(sock->get(), msg.get(), &ex, what, attributes); !status.ok()) {
    if (ex.error == 0) return status;  // not the kernel's refusal: sending or reading failed
    if (refusal != nullptr) *refusal = BindRefusal{-ex.error, ex.extack_message};
    const std::string meaning = ExplainBindRefusal(command, -ex.error, ex.extack_message);
    if (meaning.empty()) return status;
    return Status::Error(status.kind(), "%s; what it means: %s", status.message().c_str(),
                         meaning.c_str());
  }
  if (ex.replies.empty() || ex.replies.front()[uapi::kDmabufId] == 0) {
    return Status::Error(ErrorKind::kSystem, "%s: the kernel returned no dmabuf id", what.c_str());
  }
  return std::make_pair(std::move(sock).value(), ex.replies.front()[uapi::kDmabufId]);
}

}  // namespace

Result<RxQueueBinding> RxQueueBinding::Bind(int ifindex, int dmabuf_fd,
                                            const std::vector<uint32_t>& queues,
                                            uint32_t rx_page_bytes) {
  if (queues.empty()) {
    return Status::Error(ErrorKind::kInvalidArgument, "bind-rx needs at least one RX queue");
  }
  const std::string what = Format("bind-rx of dmabuf fd %d to ifindex %d, %zu queue(s)", dmabuf_fd,
                                  ifindex, queues.size());
  auto add_queues = [&](nl_msg* msg, AttributeMap* attributes) {
    for (uint32_t queue : queues) {
      Mark(msg, attributes, Format("queues[id %u]", queue));
      // Strict genl validation wants NLA_F_NESTED on nests.
      nlattr* nest = nla_nest_start(msg, NLA_F_NESTED | uapi::kDmabufQueues);
      nla_put_u32(msg, uapi::kQueueId, queue);
      nla_put_u32(msg, uapi::kQueueType, uapi::kQueueTypeRx);
      nla_nest_end(msg, nest);
    }
    // 0: the kernel's PAGE_SIZE niovs, and no attribute a pre-7.x kernel would refuse.
    if (rx_page_bytes != 0) {
      Mark(msg, attributes, "rx-page-size");
      nla_put_u32(msg, uapi::kDmabufRxPageSize, rx_page_bytes);
    }
  };
  Result<std::pair<NlSocket, uint32_t>> bound =
      BindDmabuf(BindCommand::kRx, ifindex, dmabuf_fd, what, add_queues, nullptr);
  if (!bound.ok()) return bound.status();
  return RxQueueBinding(std::move(bound->first), bound->second, ifindex);
}

Result<TxBinding> TxBinding::Bind(int ifindex, int dmabuf_fd, BindRefusal* refusal) {
  const std::string what = Format("bind-tx of dmabuf fd %d to ifindex %d", dmabuf_fd, ifindex);
  Result<std::pair<NlSocket, uint32_t>> bound =
      BindDmabuf(BindCommand::kTx, ifindex, dmabuf_fd, what, nullptr, refusal);
  if (!bound.ok()) return bound.status();
  return TxBinding(std::move(bound->first), bound->second, ifindex);
}

}  // namespace devmem

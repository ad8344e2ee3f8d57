#include "tools/pair_protocol.h"

#include <algorithm>
#include <cstring>

namespace devmem::doctor {
namespace {

// The largest payload each type may announce; a header announcing more is refused before any
// payload byte is read.
constexpr uint32_t kMaxHelloBytes = 16;
constexpr uint32_t kMaxHandleBytes = nccl::kNetHandleMaxSize + 8 + 2 + kMaxNicName;
constexpr uint32_t kMaxPathBytes = 1 + 2 + kMaxWireText + 4 * 8;
constexpr uint32_t kSizeRowBytes = 8 + 4 + 4 + 8 + 4 + 8 + 1 + 1 + 8;
constexpr uint32_t kMaxResultBytes = 2 * kMaxPathBytes + 2 + kMaxSizeRows * kSizeRowBytes;
constexpr uint32_t kMaxTextBytes = 2 + kMaxWireText;

Status Cut(const char* field) {
  return Status::Error(ErrorKind::kRemote, "truncated control message: %s is cut", field);
}

class Writer {
 public:
  void U8(uint8_t v) { bytes_.push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(const uint8_t* data, size_t n) { bytes_.insert(bytes_.end(), data, data + n); }
  void Text(const std::string& text, size_t limit) {
    const std::string clean = PrintableText(text, limit);
    U16(static_cast<uint16_t>(clean.size()));
    Bytes(reinterpret_cast<const uint8_t*>(clean.data()), clean.size());
  }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> bytes_;
};

// Reads a payload front to back; every read names its field, so a short payload says which
// field it cut.
class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  Status U8(const char* field, uint8_t* v) { return Le(field, 1, v); }
  Status U16(const char* field, uint16_t* v) { return Le(field, 2, v); }
  Status U32(const char* field, uint32_t* v) { return Le(field, 4, v); }
  Status U64(const char* field, uint64_t* v) { return Le(field, 8, v); }
  Status Bytes(const char* field, uint8_t* out, size_t n) {
    if (bytes_.size() - pos_ < n) return Cut(field);
    memcpy(out, bytes_.data() + pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  Status Text(const char* field, size_t limit, std::string* out) {
    uint16_t length = 0;
    DEVMEM_RETURN_IF_ERROR(U16(field, &length));
    if (length > limit) {
      return Status::Error(ErrorKind::kRemote, "control message: %s is %u bytes, over %zu", field,
                           length, limit);
    }
    if (bytes_.size() - pos_ < length) return Cut(field);
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), length);
    pos_ += length;
    for (const char c : *out) {
      if (c < 0x20 || c > 0x7e) {
        return Status::Error(ErrorKind::kRemote,
                             "control message: %s holds byte 0x%02x, not printable text", field,
                             static_cast<unsigned>(static_cast<unsigned char>(c)));
      }
    }
    return Status::Ok();
  }
  Status End(const char* message) const {
    if (pos_ == bytes_.size()) return Status::Ok();
    return Status::Error(ErrorKind::kRemote, "control message %s: %zu bytes after its last field",
                         message, bytes_.size() - pos_);
  }

 private:
  template <typename T>
  Status Le(const char* field, int n, T* v) {
    if (bytes_.size() - pos_ < static_cast<size_t>(n)) {
      return Cut(field);
    }
    uint64_t value = 0;
    for (int i = 0; i < n; ++i) value |= static_cast<uint64_t>(bytes_[pos_ + i]) << (8 * i);
    pos_ += static_cast<size_t>(n);
    *v = static_cast<T>(value);
    return Status::Ok();
  }
  const std::vector<uint8_t>& bytes_;
  size_t pos_ = 0;
};

uint32_t MaxPayload(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return kMaxHelloBytes;
    case MessageType::kHandle:
      return kMaxHandleBytes;
    case MessageType::kResult:
      return kMaxResultBytes;
    case MessageType::kReject:
    case MessageType::kError:
      return kMaxTextBytes;
    case MessageType::kStart:
      return 1;
  }
  return 0;
}

void EncodePath(const PathReport& path, Writer* w) {
  w->U8(static_cast<uint8_t>(path.mode));
  w->Text(path.detail, kMaxWireText);
  w->U64(path.frags);
  w->U64(path.frag_bytes);
  w->U64(path.linear_bytes);
  w->U64(path.plain_reads);
}

Status DecodePath(Reader* r, PathReport* path) {
  uint8_t mode = 0;
  DEVMEM_RETURN_IF_ERROR(r->U8("path mode", &mode));
  if (mode > static_cast<uint8_t>(PathMode::kEmulated)) {
    return Status::Error(ErrorKind::kRemote, "control message: path mode %u is unknown", mode);
  }
  path->mode = static_cast<PathMode>(mode);
  DEVMEM_RETURN_IF_ERROR(r->Text("path detail", kMaxWireText, &path->detail));
  DEVMEM_RETURN_IF_ERROR(r->U64("frags", &path->frags));
  DEVMEM_RETURN_IF_ERROR(r->U64("frag bytes", &path->frag_bytes));
  DEVMEM_RETURN_IF_ERROR(r->U64("linear bytes", &path->linear_bytes));
  return r->U64("plain reads", &path->plain_reads);
}

Status CheckSizes(uint64_t min_bytes, uint64_t max_bytes) {
  if (min_bytes < 1 || min_bytes > max_bytes || max_bytes > kPairMaxBytes) {
    return Status::Error(
        ErrorKind::kRemote, "control message hello: sizes %llu..%llu outside 1..%llu or reversed",
        static_cast<unsigned long long>(min_bytes), static_cast<unsigned long long>(max_bytes),
        static_cast<unsigned long long>(kPairMaxBytes));
  }
  return Status::Ok();
}

}  // namespace

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "hello";
    case MessageType::kReject:
      return "reject";
    case MessageType::kHandle:
      return "handle";
    case MessageType::kResult:
      return "result";
    case MessageType::kError:
      return "error";
    case MessageType::kStart:
      return "start";
  }
  return "unknown";
}

const char* PathModeName(PathMode mode) {
  switch (mode) {
    case PathMode::kPlain:
      return "plain";
    case PathMode::kDevmem:
      return "devmem";
    case PathMode::kEmulated:
      return "emulated";
    case PathMode::kUnknown:
      break;
  }
  return "unknown";
}

Result<FrameHeader> DecodeFrameHeader(const uint8_t* bytes) {
  const std::vector<uint8_t> header(bytes, bytes + kFrameHeaderBytes);
  Reader r(header);
  uint32_t magic = 0;
  uint16_t version = 0;
  uint16_t type = 0;
  FrameHeader out;
  DEVMEM_RETURN_IF_ERROR(r.U32("magic", &magic));
  DEVMEM_RETURN_IF_ERROR(r.U16("version", &version));
  DEVMEM_RETURN_IF_ERROR(r.U16("type", &type));
  DEVMEM_RETURN_IF_ERROR(r.U32("length", &out.length));
  if (magic != kPairMagic) {
    return Status::Error(ErrorKind::kRemote,
                         "not a devmem-doctor control message (magic 0x%08x): is another "
                         "program using this port?",
                         magic);
  }
  if (version != kPairVersion) {
    return Status::Error(ErrorKind::kRemote,
                         "the peer speaks control protocol version %u, this side %u: run the "
                         "same devmem-doctor on both hosts",
                         version, kPairVersion);
  }
  if (type < static_cast<uint16_t>(MessageType::kHello) ||
      type > static_cast<uint16_t>(MessageType::kStart)) {
    return Status::Error(ErrorKind::kRemote, "control message type %u is unknown", type);
  }
  out.type = static_cast<MessageType>(type);
  if (out.length > MaxPayload(out.type)) {
    return Status::Error(ErrorKind::kRemote, "control message %s announces %u bytes, over its %u",
                         MessageTypeName(out.type), out.length, MaxPayload(out.type));
  }
  return out;
}

std::vector<uint8_t> EncodeFrame(MessageType type, const std::vector<uint8_t>& payload) {
  Writer w;
  w.U32(kPairMagic);
  w.U16(kPairVersion);
  w.U16(static_cast<uint16_t>(type));
  w.U32(static_cast<uint32_t>(payload.size()));
  w.Bytes(payload.data(), payload.size());
  return w.Take();
}

std::vector<uint8_t> Encode(const Hello& hello) {
  Writer w;
  w.U64(hello.min_bytes);
  w.U64(hello.max_bytes);
  return w.Take();
}

Result<Hello> DecodeHello(const std::vector<uint8_t>& payload) {
  Reader r(payload);
  Hello hello;
  DEVMEM_RETURN_IF_ERROR(r.U64("min bytes", &hello.min_bytes));
  DEVMEM_RETURN_IF_ERROR(r.U64("max bytes", &hello.max_bytes));
  DEVMEM_RETURN_IF_ERROR(r.End("hello"));
  DEVMEM_RETURN_IF_ERROR(CheckSizes(hello.min_bytes, hello.max_bytes));
  return hello;
}

std::vector<uint8_t> Encode(const HandleMessage& message) {
  Writer w;
  w.Bytes(message.handle, sizeof(message.handle));
  w.U64(message.max_message_bytes);
  w.Text(message.nic, kMaxNicName);
  return w.Take();
}

Result<HandleMessage> DecodeHandle(const std::vector<uint8_t>& payload) {
  Reader r(payload);
  HandleMessage message;
  DEVMEM_RETURN_IF_ERROR(r.Bytes("listen handle", message.handle, sizeof(message.handle)));
  DEVMEM_RETURN_IF_ERROR(r.U64("max message bytes", &message.max_message_bytes));
  DEVMEM_RETURN_IF_ERROR(r.Text("NIC name", kMaxNicName, &message.nic));
  DEVMEM_RETURN_IF_ERROR(r.End("handle"));
  if (message.max_message_bytes == 0) {
    return Status::Error(ErrorKind::kRemote, "control message handle: max message bytes is 0");
  }
  return message;
}

std::vector<uint8_t> Encode(const ResultMessage& message) {
  Writer w;
  EncodePath(message.send_path, &w);
  EncodePath(message.recv_path, &w);
  w.U16(static_cast<uint16_t>(message.received.size()));
  for (const SizeResult& row : message.received) {
    w.U64(row.size);
    w.U32(row.messages);
    w.U32(row.bad_messages);
    w.U64(row.nanoseconds);
    w.U32(row.first_bad_message);
    w.U64(row.first_bad_offset);
    w.U8(row.expected);
    w.U8(row.got);
    w.U64(row.bad_bytes);
  }
  return w.Take();
}

Result<ResultMessage> DecodeResult(const std::vector<uint8_t>& payload) {
  Reader r(payload);
  ResultMessage message;
  DEVMEM_RETURN_IF_ERROR(DecodePath(&r, &message.send_path));
  DEVMEM_RETURN_IF_ERROR(DecodePath(&r, &message.recv_path));
  uint16_t rows = 0;
  DEVMEM_RETURN_IF_ERROR(r.U16("size rows", &rows));
  if (rows > kMaxSizeRows) {
    return Status::Error(ErrorKind::kRemote, "control message result: %u size rows, over %zu", rows,
                         kMaxSizeRows);
  }
  message.received.resize(rows);
  for (SizeResult& row : message.received) {
    DEVMEM_RETURN_IF_ERROR(r.U64("size", &row.size));
    DEVMEM_RETURN_IF_ERROR(r.U32("messages", &row.messages));
    DEVMEM_RETURN_IF_ERROR(r.U32("bad messages", &row.bad_messages));
    DEVMEM_RETURN_IF_ERROR(r.U64("nanoseconds", &row.nanoseconds));
    DEVMEM_RETURN_IF_ERROR(r.U32("first bad message", &row.first_bad_message));
    DEVMEM_RETURN_IF_ERROR(r.U64("first bad offset", &row.first_bad_offset));
    DEVMEM_RETURN_IF_ERROR(r.U8("expected byte", &row.expected));
    DEVMEM_RETURN_IF_ERROR(r.U8("received byte", &row.got));
    DEVMEM_RETURN_IF_ERROR(r.U64("bad bytes", &row.bad_bytes));
    if (row.bad_messages > row.messages ||
        (row.bad_messages > 0 &&
         (row.first_bad_message >= row.messages || row.first_bad_offset >= row.size))) {
      return Status::Error(ErrorKind::kRemote,
                           "control message result: the row of size %llu is inconsistent",
                           static_cast<unsigned long long>(row.size));
    }
  }
  DEVMEM_RETURN_IF_ERROR(r.End("result"));
  return message;
}

std::vector<uint8_t> EncodeStart(uint32_t direction) { return {static_cast<uint8_t>(direction)}; }

Result<uint32_t> DecodeStart(const std::vector<uint8_t>& payload) {
  Reader r(payload);
  uint8_t direction = 0;
  DEVMEM_RETURN_IF_ERROR(r.U8("direction", &direction));
  DEVMEM_RETURN_IF_ERROR(r.End("start"));
  if (direction > 1) {
    return Status::Error(ErrorKind::kRemote, "control message start: direction %u", direction);
  }
  return static_cast<uint32_t>(direction);
}

std::vector<uint8_t> EncodeText(const std::string& text) {
  Writer w;
  w.Text(text, kMaxWireText);
  return w.Take();
}

Result<std::string> DecodeText(const std::vector<uint8_t>& payload) {
  Reader r(payload);
  std::string text;
  DEVMEM_RETURN_IF_ERROR(r.Text("text", kMaxWireText, &text));
  DEVMEM_RETURN_IF_ERROR(r.End("text"));
  return text;
}

std::vector<uint64_t> SizeLadder(uint64_t min_bytes, uint64_t max_bytes) {
  std::vector<uint64_t> sizes;
  if (min_bytes < 1 || min_bytes > max_bytes) return sizes;
  for (uint64_t size = min_bytes; size <= max_bytes && sizes.size() < kMaxSizeRows;
       size *= kPairSizeFactor) {
    sizes.push_back(size);
    if (size > max_bytes / kPairSizeFactor) break;
  }
  if (sizes.back() != max_bytes && sizes.size() < kMaxSizeRows) sizes.push_back(max_bytes);
  return sizes;
}

uint32_t MessagesPerSize(uint64_t size) {
  constexpr uint64_t kBytesPerSize = 128 << 20;
  return static_cast<uint32_t>(
      std::clamp<uint64_t>(kBytesPerSize / std::max<uint64_t>(size, 1), 2, 64));
}

std::string PrintableText(const std::string& text, size_t limit) {
  std::string out = text.substr(0, limit);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

}  // namespace devmem::doctor

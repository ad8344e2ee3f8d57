// Readiness checks against the real kernel and devmem-doctor as an operator runs it. On this
// CI class of machine nothing is devmem-ready: the checks must say exactly why.
#include "plugin/setup/readiness.h"
#include "gpu/scatter_engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "plugin/core/unique_fd.h"
#include "plugin/core/version.h"
#include "tests/common/report_rows.h"

namespace devmem {
namespace {

using testing::Find;
using testing::Row;

int RunCommand(const std::string& command, std::string* out) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out->append(buffer, n);
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ParseQueueListTest, AcceptsListsAndRejectsGarbage) {
  EXPECT_TRUE(ParseQueueList("").value().empty());
  EXPECT_EQ(ParseQueueList("8").value(), std::vector<uint32_t>{8});
  EXPECT_EQ(ParseQueueList("8,9,15").value(), (std::vector<uint32_t>{8, 9, 15}));
  EXPECT_EQ(ParseQueueList("010,0x9").value(), (std::vector<uint32_t>{8, 9}));  // NCCL's syntax
  for (const char* bad :
       {"x", "8,", ",8", "8,8", "-1", "65536", "1 2", "8;9", "8, 9", " 8", "08", "8K", "010,8"}) {
    Result<std::vector<uint32_t>> parsed = ParseQueueList(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    if (!parsed.ok()) {
      EXPECT_NE(parsed.status().message().find("NCCL_DEVMEM_RX_QUEUES"), std::string::npos);
    }
  }
}

TEST(PcieDistanceTest, ComparesSysfsPaths) {
  const std::string nic = "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0";
  EXPECT_EQ(PcieDistance(nic, "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0"),
            "same PCIe switch");
  EXPECT_EQ(PcieDistance(nic, "/sys/devices/pci0000:00/0000:00:03.0/0000:05:00.0"),
            "same root complex");
  EXPECT_EQ(PcieDistance(nic, "/sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0"),
            "different root complexes");
  EXPECT_EQ(PcieDistance("", nic), "unknown");
}

TEST(ReadinessTest, KernelChecksPassOnADevmemKernel) {
  ReadinessReport report = CheckKernel();
  const CheckOutcome* family = Find(report, "netdev family");
  ASSERT_NE(family, nullptr);
  EXPECT_EQ(family->verdict, Verdict::kPass) << family->detail;
  const CheckOutcome* sockopts = Find(report, "devmem sockopts");
  ASSERT_NE(sockopts, nullptr);
  EXPECT_EQ(sockopts->verdict, Verdict::kPass) << sockopts->detail;
}

TEST(ReadinessTest, LoopbackIsNeverDevmemReady) {
  NetDevice lo;
  lo.name = "lo";
  lo.ifindex = static_cast<int>(if_nametoindex("lo"));
  lo.loopback = true;
  ReadinessReport report = CheckNic(lo, {});
  ASSERT_FALSE(report.ready());
  EXPECT_EQ(report.first_failure()->check, "device");
  EXPECT_NE(report.ToJson().find("\"ready\": false"), std::string::npos);
}

class VethReadinessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a veth";
    name_ = "dmrd" + std::to_string(getpid() % 100000);
    ASSERT_EQ(system(("ip link add " + name_ + " type veth peer name " + name_ +
                      "p && ip link set " + name_ + " up")
                         .c_str()),
              0);
  }
  void TearDown() override {
    if (!name_.empty()) system(("ip link del " + name_ + " 2>/dev/null").c_str());
  }
  std::string name_;
};

TEST_F(VethReadinessTest, ChecksNameWhatAVethLacks) {
  NetDevice veth;
  veth.name = name_;
  veth.ifindex = static_cast<int>(if_nametoindex(name_.c_str()));
  veth.speed_mbps = 10000;
  veth.speed_from_driver = true;
  std::vector<uint32_t> chosen;
  ReadinessReport report = CheckNic(veth, {}, &chosen);
  EXPECT_FALSE(report.ready());
  const CheckOutcome* driver = Find(report, "driver");
  ASSERT_NE(driver, nullptr);
  EXPECT_EQ(driver->detail, "veth");
  const CheckOutcome* split = Find(report, "tcp-data-split");
  ASSERT_NE(split, nullptr);
  EXPECT_EQ(split->verdict, Verdict::kFail);
  EXPECT_NE(split->detail.find("not supported by driver"), std::string::npos) << split->detail;
  EXPECT_NE(split->fix.find("ethtool -G " + name_ + " tcp-data-split on"), std::string::npos);
  const CheckOutcome* ntuple = Find(report, "ntuple");
  ASSERT_NE(ntuple, nullptr);
  EXPECT_EQ(ntuple->verdict, Verdict::kFail);
  EXPECT_EQ(ntuple->fix, "ethtool -K " + name_ + " ntuple on");
  // Asking for a queue the veth does not have is named as such.
  report = CheckNic(veth, {7});
  const CheckOutcome* queues = Find(report, "rx queues");
  ASSERT_NE(queues, nullptr);
  EXPECT_EQ(queues->verdict, Verdict::kFail);
}

TEST_F(VethReadinessTest, DoctorReportsNotReadyWithTheFailingChecks) {
  std::string out;
  int status = RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --json --ifname " + name_, &out);
  EXPECT_EQ(status, 1) << out;  // 1 = not ready
  EXPECT_NE(out.find("\"ready\": false"), std::string::npos) << out;
  EXPECT_NE(out.find("{\"scope\": \"" + name_ +
                     "\", \"check\": \"tcp-data-split\", \"result\": "
                     "\"FAIL\", \"detail\": \"ethtool rings-get on ifindex"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"check\": \"ntuple\", \"result\": \"FAIL\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"check\": \"netdev family\", \"result\": \"PASS\""), std::string::npos);
  std::string text;
  EXPECT_EQ(RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --ifname " + name_, &text), 1);
  EXPECT_NE(text.find("devmem RX: NOT READY"), std::string::npos) << text;
  EXPECT_NE(text.find("[fix: ethtool -K " + name_ + " ntuple on]"), std::string::npos) << text;
}

// Veth pairs whose checks need the kernel's own answers: a veth with two RX queues, its link
// state, XDP and AF_XDP on it.
class VethBindChecksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a veth";
    name_ = "dmbc" + std::to_string(getpid() % 100000);
    ASSERT_EQ(system(("ip link add " + name_ + " numrxqueues 2 numtxqueues 2 type veth peer name " +
                      name_ + "p numrxqueues 2 numtxqueues 2")
                         .c_str()),
              0);
    device_.name = name_;
    device_.ifindex = static_cast<int>(if_nametoindex(name_.c_str()));
  }
  void TearDown() override {
    if (!name_.empty()) system(("ip link del " + name_ + " 2>/dev/null").c_str());
  }
  void Up() { ASSERT_EQ(system(("ip link set " + name_ + " up").c_str()), 0); }
  std::string name_;
  NetDevice device_;
};

TEST_F(VethBindChecksTest, ADownInterfaceFailsTheLinkAndQueueRows) {
  // netdev-genl.c netdev_nl_queue_dump_one: a device that is not up lists no queue; the row
  // says so instead of vanishing.
  ReadinessReport report = CheckNic(device_, {});
  const CheckOutcome* link = Find(report, "link");
  ASSERT_NE(link, nullptr);
  EXPECT_EQ(link->verdict, Verdict::kFail);
  EXPECT_EQ(link->fix, "ip link set dev " + name_ + " up");
  const CheckOutcome* queues = Find(report, "rx queues");
  ASSERT_NE(queues, nullptr);
  EXPECT_EQ(queues->verdict, Verdict::kFail);
  EXPECT_NE(queues->detail.find("device that is down"), std::string::npos) << queues->detail;
  Up();
  report = CheckNic(device_, {1});
  EXPECT_EQ(Find(report, "link")->verdict, Verdict::kPass);
  EXPECT_EQ(Find(report, "rx queues")->verdict, Verdict::kPass)
      << Find(report, "rx queues")->detail;
  // A veth has no parent device: bind-rx refuses its queues (netdev_rx_queue.c:226).
  EXPECT_EQ(Find(report, "device")->verdict, Verdict::kFail);
  // veth checksums in software but claims the offloads (veth.c VETH_FEATURES): both on.
  EXPECT_EQ(Find(report, "rx checksum")->verdict, Verdict::kPass)
      << Find(report, "rx checksum")->detail;
}

// An XDP program that passes every packet (r0 = XDP_PASS; exit), loaded with bpf(2), and a BPF
// link attaching it to one interface in generic mode; closing the link fd detaches it.
UniqueFd AttachXdpPass(int ifindex, std::string* why) {
  bpf_insn program[2] = {};
  program[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  program[0].dst_reg = BPF_REG_0;
  program[0].imm = XDP_PASS;
  program[1].code = BPF_JMP | BPF_EXIT;
  static const char kLicense[] = "GPL";
  bpf_attr load{};
  load.prog_type = BPF_PROG_TYPE_XDP;
  load.insns = reinterpret_cast<uint64_t>(program);
  load.insn_cnt = 2;
  load.license = reinterpret_cast<uint64_t>(kLicense);
  UniqueFd prog(static_cast<int>(syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof(load))));
  if (!prog.valid()) {
    *why = std::string("BPF_PROG_LOAD: ") + strerror(errno);
    return UniqueFd();
  }
  bpf_attr attach{};
  attach.link_create.prog_fd = static_cast<uint32_t>(prog.get());
  attach.link_create.target_ifindex = static_cast<uint32_t>(ifindex);
  attach.link_create.attach_type = BPF_XDP;
  attach.link_create.flags = XDP_FLAGS_SKB_MODE;
  UniqueFd link(static_cast<int>(syscall(SYS_bpf, BPF_LINK_CREATE, &attach, sizeof(attach))));
  if (!link.valid()) *why = std::string("BPF_LINK_CREATE: ") + strerror(errno);
  return link;
}

TEST_F(VethBindChecksTest, AnAttachedXdpProgramFailsAndIsGoneOnceDetached) {
  // netdev_rx_queue.c:241: dev_xdp_prog_count(dev) → EEXIST, whatever the XDP mode.
  Up();
  EXPECT_EQ(Row(CheckNic(device_, {1}), "xdp").verdict, Verdict::kPass);
  std::string why;
  UniqueFd link = AttachXdpPass(device_.ifindex, &why);
  if (!link.valid()) GTEST_SKIP() << "cannot attach an XDP program here: " << why;
  const CheckOutcome xdp = Row(CheckNic(device_, {1}), "xdp");
  EXPECT_EQ(xdp.verdict, Verdict::kFail);
  EXPECT_NE(xdp.detail.find("attached (generic): bind-rx fails with EEXIST"), std::string::npos)
      << xdp.detail;
  link.reset();
  EXPECT_EQ(Row(CheckNic(device_, {1}), "xdp").verdict, Verdict::kPass);
}

// An AF_XDP socket bound in copy mode to one queue: xsk_bind registers its pool on the queue
// (xsk_reg_pool_at_qid), which queue-get reports as an empty NETDEV_A_QUEUE_XSK nest.
struct XskOnQueue {
  UniqueFd socket_fd;
  void* umem = MAP_FAILED;
  size_t umem_bytes = 16 * 4096;
  ~XskOnQueue() {
    if (umem != MAP_FAILED) munmap(umem, umem_bytes);
  }
  std::string Bind(int ifindex, uint32_t queue) {
    socket_fd = UniqueFd(socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0));
    if (!socket_fd.valid()) return std::string("socket(AF_XDP): ") + strerror(errno);
    umem = mmap(nullptr, umem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (umem == MAP_FAILED) return std::string("mmap: ") + strerror(errno);
    xdp_umem_reg reg{};
    reg.addr = reinterpret_cast<uint64_t>(umem);
    reg.len = umem_bytes;
    reg.chunk_size = 4096;
    const int entries = 16;
    if (setsockopt(socket_fd.get(), SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) != 0 ||
        setsockopt(socket_fd.get(), SOL_XDP, XDP_UMEM_FILL_RING, &entries, sizeof(entries)) != 0 ||
        setsockopt(socket_fd.get(), SOL_XDP, XDP_UMEM_COMPLETION_RING, &entries, sizeof(entries)) !=
            0 ||
        setsockopt(socket_fd.get(), SOL_XDP, XDP_RX_RING, &entries, sizeof(entries)) != 0) {
      return std::string("AF_XDP setsockopt: ") + strerror(errno);
    }
    sockaddr_xdp address{};
    address.sxdp_family = AF_XDP;
    address.sxdp_ifindex = static_cast<uint32_t>(ifindex);
    address.sxdp_queue_id = queue;
    address.sxdp_flags = XDP_COPY;
    if (bind(socket_fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      return std::string("AF_XDP bind: ") + strerror(errno);
    }
    return "";
  }
};

TEST_F(VethBindChecksTest, AQueueHeldByAfXdpFailsAndTheOtherStaysFree) {
  // netdev_rx_queue.c:252: rxq->pool → EBUSY "designated queue already in use by AF_XDP".
  Up();
  XskOnQueue xsk;
  if (std::string why = xsk.Bind(device_.ifindex, 1); !why.empty()) {
    GTEST_SKIP() << "no AF_XDP socket here: " << why;
  }
  const CheckOutcome held = Row(CheckNic(device_, {1}), "rx queues");
  EXPECT_EQ(held.verdict, Verdict::kFail);
  EXPECT_EQ(held.detail.rfind("queue 1 is held by an AF_XDP socket (bind-rx: EBUSY", 0), 0u)
      << held.detail;
  EXPECT_EQ(Row(CheckNic(device_, {0}), "rx queues").verdict, Verdict::kPass);
}

TEST(PrivilegesTest, RootInTheInitialNamespacesMayBind) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  const ReadinessReport report = CheckPrivileges();
  const CheckOutcome* scope = Find(report, "bind-rx scope");
  ASSERT_NE(scope, nullptr);
  // The kernel answered the family query: the flags are this kernel's, not a guess.
  EXPECT_EQ(scope->verdict, Verdict::kPass) << scope->detail;
  EXPECT_NE(scope->detail.find("ADMIN_PERM"), std::string::npos) << scope->detail;
}

TEST(DoctorTest, InAUserNamespaceBindRxScopeFails) {
  // A container with user-namespace remapping that shares the host's network namespace: root
  // inside, yet genetlink.c refuses bind-rx (GENL_ADMIN_PERM wants the initial user namespace,
  // GENL_UNS_ADMIN_PERM the netns owner, here the initial one).
  if (geteuid() != 0) GTEST_SKIP() << "needs root to create a user namespace";
  if (system("unshare -U -r true 2>/dev/null") != 0) GTEST_SKIP() << "no user namespaces here";
  std::string out;
  EXPECT_EQ(
      RunCommand("unshare -U -r " + std::string(DEVMEM_DOCTOR_PATH) + " --json --ifname lo", &out),
      1)
      << out;
  EXPECT_NE(out.find("\"check\": \"bind-rx scope\", \"result\": \"FAIL\""), std::string::npos)
      << out;
}

TEST(DoctorTest, BadArgumentsExitWithTwo) {
  std::string out;
  EXPECT_EQ(RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --queues 1,x", &out), 2);
  EXPECT_NE(out.find("is not a queue id"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(RunCommand(std::string(DEVMEM_DOCTOR_PATH) + " --ifname nosuchif0", &out), 2);
  EXPECT_NE(out.find("no usable network interface"), std::string::npos) << out;
}

// The JSON string body of an ASCII message without control characters.
std::string JsonBody(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// Runs devmem-doctor with `env` as its whole environment (no shell, so values reach it byte
// for byte); *out gets its stdout alone.
int RunDoctor(const std::vector<std::string>& env, const std::vector<std::string>& args,
              std::string* out) {
  std::vector<std::string> argv_strings = {DEVMEM_DOCTOR_PATH};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = env;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  write_end.reset();
  if (spawned != 0) return -1;
  char buffer[4096];
  ssize_t n;
  while ((n = read(read_end.get(), buffer, sizeof(buffer))) > 0) {
    out->append(buffer, static_cast<size_t>(n));
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(DoctorTest, VersionIsTheProjectVersion) {
  std::string out;
  ASSERT_EQ(RunDoctor({}, {"--version"}, &out), 0);
  std::string expected("devmem-doctor (nccl-net-devmem) ");
  expected.append(kVersion).append("\n");
  EXPECT_EQ(out, expected);
}

TEST(DoctorTest, RejectsEveryValueInitRejectsWithInitsMessage) {
  const std::pair<const char*, const char*> cases[] = {
      {"NCCL_SOCKET_IFNAME", "^"},
      {"NCCL_SOCKET_IFNAME", "^="},
      {"NCCL_DEVMEM_UNPACK", "garbage"},
      {"NCCL_DEVMEM_NSOCKS", " 4"},
      {"NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS", "1K"},
      {"NCCL_DEVMEM_RX_REGION_BYTES", "1048577"},
      {"NCCL_DEVMEM_RX_QUEUES", ""},
      {"NCCL_SOCKET_FAMILY", "AF_UNIX"},
  };
  for (const auto& [name, value] : cases) {
    // What init would say: the plugin's own configuration reader on the same environment.
    Result<Config> init = Config::FromEnvironment(
        [&](const char* n) -> const char* { return strcmp(n, name) == 0 ? value : nullptr; });
    ASSERT_FALSE(init.ok()) << name << "=" << value;
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"--json"},
          std::vector<std::string>{"--json", "--ifname", "lo"}}) {
      std::string out;
      EXPECT_EQ(RunDoctor({std::string(name) + "=" + value}, args, &out), 2)
          << name << "=\"" << value << "\" " << args.back() << ": " << out;
      EXPECT_EQ(out,
                "{\"ready\": false, \"error\": \"" + JsonBody(init.status().message()) + "\"}\n")
          << name << "=\"" << value << "\" " << args.back();
    }
  }
}

TEST(DoctorTest, JsonErrorsAreAnObjectOnStdout) {
  std::string out;
  EXPECT_EQ(RunDoctor({}, {"--json", "--queues", "1,x"}, &out), 2);
  EXPECT_EQ(out.rfind("{\"ready\": false, \"error\": \"NCCL_DEVMEM_RX_QUEUES=", 0), 0u) << out;
  EXPECT_NE(out.find("is not a queue id in [0, 65535] (not an integer); read from --queues\"}\n"),
            std::string::npos)
      << out;
  out.clear();
  EXPECT_EQ(RunDoctor({}, {"--bogus", "--json"}, &out), 2);
  EXPECT_EQ(out, "{\"ready\": false, \"error\": \"unknown argument --bogus\"}\n");
  out.clear();
  EXPECT_EQ(RunDoctor({}, {"--json", "--ifname", "nosuchif0"}, &out), 2);
  EXPECT_EQ(out,
            "{\"ready\": false, \"error\": \"no usable network interface named nosuchif0\"}\n");
  out.clear();
  // A value with a quote, a backslash, a tab and a non-ASCII byte still gives valid JSON.
  EXPECT_EQ(RunDoctor({"NCCL_DEVMEM_UNPACK=a\"b\\c\td\xff"}, {"--json"}, &out), 2);
  EXPECT_EQ(out,
            "{\"ready\": false, \"error\": \"NCCL_DEVMEM_UNPACK=\\\"a\\\"b\\\\c\\u0009d"
            "\\u00ff\\\" is invalid; accepted values are plugin and nccl\"}\n");
}

}  // namespace
}  // namespace devmem

namespace devmem {
namespace {

TEST(GpuConsumerCheckTest, NamesWhoConsumesGpuFragsInThisBuild) {
  ReadinessReport plugin = CheckGpuConsumer(UnpackMode::kPlugin);
  ASSERT_EQ(plugin.checks().size(), 1u);
  EXPECT_EQ(plugin.checks()[0].scope, "build");
  // With nvcc our kernel is in the build (CI's has it); without, the check says so.
  EXPECT_EQ(plugin.ready(), gpu::BuiltWithCudaKernels());
  EXPECT_NE(plugin.checks()[0].detail.find(gpu::BuiltWithCudaKernels() ? "scatter kernel"
                                                                       : "no CUDA kernels"),
            std::string::npos)
      << plugin.checks()[0].detail;
  ReadinessReport nccl = CheckGpuConsumer(UnpackMode::kNccl);
  EXPECT_TRUE(nccl.ready());
  EXPECT_NE(nccl.checks()[0].detail.find("NCCL's device unpack"), std::string::npos);
}

}  // namespace
}  // namespace devmem

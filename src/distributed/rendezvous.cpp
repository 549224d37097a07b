#include "rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "volt/error.h"
#include "volt/torch_compat.h"

namespace volt::detail {
namespace {

using Clock = std::chrono::steady_clock;

// One TCPStore per master address and port in a process, kept until the process ends: rank 0 hosts the
// server, and groups created later (in the same order on every rank) share it under their own prefix.
struct StoreRegistry {
  std::mutex mutex;
  std::map<std::string, c10::intrusive_ptr<c10d::Store>> stores;
  std::map<std::string, int> groups_created;
};
StoreRegistry& registry() {
  static auto* stores = new StoreRegistry;  // never destroyed: the server must outlive every group
  return *stores;
}

// Under torchrun the agent already serves a store at its MASTER_ADDR:MASTER_PORT and says so; then every
// rank is a client, as torch.distributed's _create_c10d_store does.
bool torchrun_agent_serves(const ClusterEnvironment& env) {
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const char* agent_addr = std::getenv("MASTER_ADDR");
  const char* agent_port = std::getenv("MASTER_PORT");
  return agent != nullptr && std::string(agent) == "True" && agent_addr != nullptr && agent_port != nullptr &&
         env.master_addr == agent_addr && std::to_string(env.master_port) == agent_port;
}

[[noreturn]] void fail_unreachable(const ClusterEnvironment& env, const std::string& where,
                                   std::chrono::milliseconds timeout, const std::string& why) {
  VOLT_FAIL("rank ", env.global_rank, " of ", env.world_size, " cannot reach the rendezvous store at ", where,
            " within ", seconds(timeout), why,
            ". Is rank 0 running, and are MASTER_ADDR and MASTER_PORT the same on every node?");
}

c10::intrusive_ptr<c10d::Store> connect_store(const ClusterEnvironment& env,
                                              std::chrono::milliseconds timeout, const std::string& where) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(env.master_port);
  options.isServer = env.global_rank == 0 && !torchrun_agent_serves(env);
  options.numWorkers = static_cast<std::size_t>(env.world_size);
  options.waitWorkers = false;  // volt waits itself, to name the ranks that did not come
  options.timeout = timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (const std::exception& error) {
    if (options.isServer)
      VOLT_FAIL("rank 0 cannot host the rendezvous store at ", where, ": ", message_of(error),
                ". Set MASTER_PORT to a free port (another run may be using ", env.master_port, ")");
    fail_unreachable(env, where, timeout, ": " + message_of(error));
  }
}

// Publishes this rank (host and pid) under `store` and waits, at most `timeout`, for the other members.
// `members` are the global ranks of the group's ranks (the world: 0..N-1, `world` true).
std::vector<Peer> rendezvous(c10d::Store& store, int64_t rank, const std::vector<int64_t>& members,
                             bool world, std::chrono::milliseconds timeout, const std::string& where,
                             std::promise<void>& answered) {
  const auto deadline = Clock::now() + timeout;
  const auto size = static_cast<int64_t>(members.size());
  auto key = [](int64_t r) { return "volt/rank/" + std::to_string(r); };
  std::vector<std::string> keys;
  for (int64_t r = 0; r < size; ++r) keys.push_back(key(r));
  try {
    const std::string me = this_host() + " " + std::to_string(::getpid());
    store.set(key(rank), std::vector<uint8_t>(me.begin(), me.end()));
    bool all = store.check(keys);
    answered.set_value();
    while (!all) {
      if (Clock::now() >= deadline) {
        std::vector<int64_t> missing;
        for (int64_t r = 0; r < size; ++r)
          if (!store.check({key(r)})) missing.push_back(members[r]);
        std::ostringstream names;
        for (size_t i = 0; i < missing.size(); ++i) names << (i ? ", " : "") << missing[i];
        if (!world) {
          std::ostringstream all_members;
          for (size_t i = 0; i < members.size(); ++i) all_members << (i ? ", " : "") << members[i];
          VOLT_FAIL("global rank", missing.size() == 1 ? " " : "s ", names.str(),
                    " did not join the subgroup of global ranks [", all_members.str(), "] within ",
                    seconds(timeout),
                    ": every rank must call new_group with the same ranks in the same order",
                    ", and a rank that died or is stuck before it stops its subgroups");
        }
        VOLT_FAIL("rank", missing.size() == 1 ? " " : "s ", names.str(), " of ", size,
                  " did not join the rendezvous at ", where, " within ", seconds(timeout),
                  ": check that every rank was started (", size, " processes in all, RANK 0..", size - 1,
                  ") with the same MASTER_ADDR and MASTER_PORT, and that none failed before creating its "
                  "process group");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      all = store.check(keys);
    }
    std::vector<Peer> peers(size);
    for (int64_t r = 0; r < size; ++r) {
      const auto value = store.get(key(r));
      std::istringstream fields(std::string(value.begin(), value.end()));
      fields >> peers[r].host >> peers[r].pid;
    }
    return peers;
  } catch (const volt::Error&) {
    throw;
  } catch (const std::exception& error) {
    VOLT_FAIL("global rank ", members[rank], " lost the rendezvous store at ", where,
              " (global rank 0 hosts it; it has probably exited): ", message_of(error));
  }
}

}  // namespace

std::string seconds(std::chrono::milliseconds duration) {
  std::ostringstream out;
  out << duration.count() / 1000.0 << " s";
  return out.str();
}

std::string message_of(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error))
    return c10_error->what_without_backtrace();
  return error.what();
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

// A connected UDP socket sends nothing, but the kernel picks the local address it would use.
std::string local_address_towards(const std::string& master_addr) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const int resolved = ::getaddrinfo(master_addr.c_str(), "9", &hints, &found);
  VOLT_CHECK(resolved == 0, "cannot resolve MASTER_ADDR '", master_addr, "' (", gai_strerror(resolved),
             "): set MASTER_ADDR to an address or host name of the node of global rank 0");
  std::string local;
  for (addrinfo* candidate = found; candidate != nullptr && local.empty(); candidate = candidate->ai_next) {
    const int fd = ::socket(candidate->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::connect(fd, candidate->ai_addr, candidate->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* raw = address.ss_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&address)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&address)->sin6_addr);
      if (::inet_ntop(address.ss_family, raw, text, sizeof text) != nullptr) local = text;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  VOLT_CHECK(!local.empty(), "no network route from this host to MASTER_ADDR '", master_addr,
             "': set MASTER_ADDR to an address of global rank 0's node that this node can reach");
  return local;
}

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto state_at = line.rfind(')');
  return state_at != std::string::npos && state_at + 2 < line.size() &&
         (line[state_at + 2] == 'Z' || line[state_at + 2] == 'X');
}
Joined join_world(const ClusterEnvironment& env, std::chrono::milliseconds timeout,
                  const std::string& where) {
  auto& stores = registry();
  std::lock_guard<std::mutex> lock(stores.mutex);
  const auto cached = stores.stores.find(where);
  c10::intrusive_ptr<c10d::Store> store;
  if (cached != stores.stores.end()) store = cached->second;
  const std::string prefix = "volt/group" + std::to_string(stores.groups_created[where]++);

  // Connecting and the rendezvous run in a thread of their own, waited for with a deadline: a TCPStore client
  // can block in recv without a timeout when the server stops answering (a stopped rank 0, or a store that
  // speaks another protocol), and a process group must never hang.
  auto answered = std::make_shared<std::promise<void>>();
  auto first_answer = answered->get_future();
  // Whether the TCPStore client was built: past the deadline, one that was not never reached the store
  // (PyTorch 2.x's client retries its connect with backoff, past the timeout it was given).
  auto connected = std::make_shared<std::atomic<bool>>(store != nullptr);
  auto join = std::make_shared<std::packaged_task<Joined()>>([=]() {
    try {
      Joined joined;
      joined.store = store ? store : connect_store(env, timeout, where);
      connected->store(true);
      joined.group_store = c10::make_intrusive<c10d::PrefixStore>(prefix, joined.store);
      joined.prefix = prefix;
      std::vector<int64_t> world(env.world_size);
      for (int64_t r = 0; r < env.world_size; ++r) world[r] = r;
      joined.peers = rendezvous(*joined.group_store, env.global_rank, world, true, timeout, where, *answered);
      return joined;
    } catch (...) {
      try {
        answered->set_value();  // no answer will come: do not keep the caller waiting for one
      } catch (const std::future_error&) {
      }
      throw;
    }
  });
  auto result = join->get_future();
  std::thread([join] { (*join)(); }).detach();
  const auto deadline = Clock::now() + timeout + std::chrono::seconds(2);
  // LibTorch 1.13's TCPStore client and the store of a PyTorch 2.x torchrun agent do not understand each
  // other (2.x sends a VALIDATE query first and numbers its queries differently): the client gets a reset
  // or no answer at all. A store that answers at all answers the first query in milliseconds.
  const bool old_client_on_agent = !compat::kTcpStoreSpeaksTorch2Protocol && torchrun_agent_serves(env);
  const std::string agent_hint =
      old_client_on_agent
          ? detail::concat(
                ". If torchrun comes from PyTorch 2.x, its store speaks a newer protocol than LibTorch ",
                compat::torch_version(),
                "'s TCPStore client: start torchrun with --rdzv-backend c10d --rdzv-endpoint <host:port> "
                "and TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (rank 0 then hosts volt's "
                "own store), or use the torchrun of PyTorch ",
                compat::torch_version())
          : std::string();
  if (old_client_on_agent &&
      first_answer.wait_until(std::min(deadline, Clock::now() + std::chrono::seconds(5))) !=
          std::future_status::ready)
    VOLT_FAIL("rank ", env.global_rank, " of ", env.world_size, ": the store torchrun's agent serves at ",
              where, " does not answer", agent_hint);
  if (result.wait_until(deadline) != std::future_status::ready) {
    if (!connected->load())
      fail_unreachable(env, where, timeout,
                       " (its client got no answer: nothing listens there, or rank 0 is stopped)");
    VOLT_FAIL("rank ", env.global_rank, " of ", env.world_size, ": the rendezvous store at ", where,
              " stopped answering (no reply within ", seconds(timeout),
              "): is the process of global rank 0 stopped or overloaded?", agent_hint);
  }
  Joined joined;
  try {
    joined = result.get();
  } catch (const volt::Error& error) {
    VOLT_FAIL(error.what(), agent_hint);
  }
  if (!store) stores.stores.emplace(where, joined.store);
  return joined;
}

void join_subgroup(const c10::intrusive_ptr<c10d::Store>& group_store, int64_t rank,
                   const std::vector<int64_t>& members, std::chrono::milliseconds timeout,
                   const std::string& where) {
  // In a thread of its own, as join_world: a store that stops answering must not hang this rank.
  auto answered = std::make_shared<std::promise<void>>();
  auto join = std::make_shared<std::packaged_task<void()>>(
      [=] { rendezvous(*group_store, rank, members, false, timeout, where, *answered); });
  auto result = join->get_future();
  std::thread([join] { (*join)(); }).detach();
  if (result.wait_until(Clock::now() + timeout + std::chrono::seconds(2)) != std::future_status::ready)
    VOLT_FAIL("global rank ", members[rank], ": the rendezvous store at ", where, " stopped answering while ",
              "a subgroup formed (no reply within ", seconds(timeout), "): is global rank 0 stopped?");
  result.get();
}

}  // namespace volt::detail

// The rendezvous, the CPU communicator and their failures, with ranks as processes on the
// loopback address. Every failure test checks that the surviving ranks stop with a message
// naming the rank, well before the rank processes' watchdog would kill them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <atomic>
#include <cstring>
#include <mutex>
#include <fmt/format.h>
#include <vector>

#include "dist/rank_processes.h"
#include "dist/socket.h"
#include "quartet/dist/communicator.h"
#include "quartet/dist/launcher.h"
#include "quartet/dist/peer_watch.h"
#include "quartet/dist/rendezvous.h"

namespace quartet {
namespace {

using test::run_ranks;

DistEnvironment env_for(int rank, int world, int port) {
  DistEnvironment e;
  e.rank = rank;
  e.world_size = world;
  e.local_rank = rank;
  e.local_world_size = world;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A peer killed with our data unread in its buffer resets the connection rather than closing
// it (which of the two a killed rank's peers see is a race): both are the peer closing its
// connection, and say so.
TEST(Socket, AResetConnectionIsAClosedPeer) {
  dist::Socket listener = dist::listen_tcp("127.0.0.1", 0, 1);
  const int port = dist::local_port(listener);
  dist::Socket ours = dist::connect_with_retry("127.0.0.1", port, dist::deadline_after(5), "the test's peer");
  dist::Socket theirs = dist::accept_until(listener, dist::deadline_after(5), "the test's peer");
  const char byte = 1;
  ours.send_all(&byte, 1, dist::deadline_after(5), "rank 1");
  // Closing with unread data (and no lingering) sends a reset.
  const linger reset{1, 0};
  ASSERT_EQ(setsockopt(theirs.fd(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset), 0);
  theirs.close();
  char got = 0;
  try {
    ours.recv_all(&got, 1, dist::deadline_after(5), "rank 1");
    ADD_FAILURE() << "a reset connection gave data";
  } catch (const dist::PeerLost& e) {
    EXPECT_TRUE(contains(e.what(), "rank 1 closed its connection")) << e.what();
  }
}

TEST(Rendezvous, RanksMeetAndExchangeBlobs) {
  const int port = dist::free_tcp_port("127.0.0.1");
  const auto out = run_ranks(4, [&](int r) {
    // The others start before rank 0 listens: they retry.
    if (r == 0) usleep(200 * 1000);
    auto rv = Rendezvous::connect(env_for(r, 4, port), 20);
    const std::string id = rv->broadcast(r == 0 ? std::string("unique-id\0bytes", 15) : std::string());
    const std::vector<std::string> all = rv->all_gather("rank" + std::to_string(r));
    std::string joined;
    for (const auto& s : all) joined += s + ",";
    return fmt::format("{}|{}|{}", id.size(), id.substr(0, 9), joined);
  });
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(out[r].ok) << out[r].text;
    EXPECT_EQ(out[r].text, "15|unique-id|rank0,rank1,rank2,rank3,");
  }
}

TEST(Rendezvous, ARankThatNeverJoinsStopsEveryRankWithItsNumber) {
  const int port = dist::free_tcp_port("127.0.0.1");
  // World of 4; rank 2 never starts.
  const auto out = run_ranks(3, [&](int i) {
    const int rank = i == 2 ? 3 : i;
    Rendezvous::connect(env_for(rank, 4, port), 1.0);
    return std::string("joined");
  });
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(out[i].ok);
    EXPECT_TRUE(contains(out[i].text, "rank 2 of 4 did not arrive")) << out[i].text;
    EXPECT_TRUE(contains(out[i].text, fmt::format("127.0.0.1:{}", port))) << out[i].text;
    EXPECT_LT(out[i].seconds, 15);
  }
}

TEST(Rendezvous, RankZeroMissingIsATimeoutNamingTheAddress) {
  const int port = dist::free_tcp_port("127.0.0.1");
  const auto out = run_ranks(1, [&](int) {
    Rendezvous::connect(env_for(1, 2, port), 0.5);
    return std::string("joined");
  });
  EXPECT_FALSE(out[0].ok);
  EXPECT_TRUE(contains(out[0].text, fmt::format("could not reach rank 0 at 127.0.0.1:{}", port))) << out[0].text;
}

TEST(Rendezvous, MismatchedWorldSizeAndDuplicateRanksAreRefused) {
  {
    const int port = dist::free_tcp_port("127.0.0.1");
    const auto out = run_ranks(2, [&](int r) {
      Rendezvous::connect(env_for(r, r == 0 ? 2 : 3, port), 10);
      return std::string("joined");
    });
    for (int r = 0; r < 2; ++r) {
      EXPECT_FALSE(out[r].ok);
      EXPECT_TRUE(contains(out[r].text, "rank 1 has WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2")) << out[r].text;
    }
  }
  {
    const int port = dist::free_tcp_port("127.0.0.1");
    const auto out = run_ranks(3, [&](int i) {
      Rendezvous::connect(env_for(i == 0 ? 0 : 1, 3, port), 10);
      return std::string("joined");
    });
    EXPECT_TRUE(contains(out[0].text, "two processes arrived with RANK=1")) << out[0].text;
  }
}

TEST(SocketCommunicator, CollectivesSumInRankOrder) {
  const int port = dist::free_tcp_port("127.0.0.1");
  constexpr int kWorld = 3;
  // Values whose float sum depends on the order: ((1e8 + 1) + -1e8) = 0 in float, but
  // (1e8 + (1 + -1e8)) = 0 too; use 1e8, 3, 3: (1e8 + 3) + 3 = 1e8 + 8 vs 1e8 + 6.
  const float v[kWorld] = {1e8f, 3.0f, 3.0f};
  const auto out = run_ranks(kWorld, [&](int r) {
    auto comm = make_socket_communicator(Rendezvous::connect(env_for(r, kWorld, port), 20));
    std::string result;
    // all_reduce_sum
    std::vector<float> a = {v[r], static_cast<float>(r)};
    comm->all_reduce_sum(a.data(), a.size(), CommType::f32);
    float expected = v[0];
    for (int i = 1; i < kWorld; ++i) expected += v[i];
    if (a[0] != expected || a[1] != 3.0f) result += fmt::format("all_reduce {} {} ", a[0], a[1]);
    // reduce_scatter_sum: 2 elements a shard; rank r's element j is 10 r + j.
    std::vector<double> b(2 * kWorld);
    for (int j = 0; j < 2 * kWorld; ++j) b[j] = 10.0 * r + j;
    comm->reduce_scatter_sum(b.data(), 2, CommType::f64);
    for (int j = 2 * r; j < 2 * r + 2; ++j) {
      if (b[j] != 30.0 + 3.0 * j) result += fmt::format("reduce_scatter[{}] {} ", j, b[j]);
    }
    // all_gather: each rank fills its own shard.
    std::vector<std::uint16_t> c(2 * kWorld, 0);
    c[2 * r] = static_cast<std::uint16_t>(100 + r);
    c[2 * r + 1] = static_cast<std::uint16_t>(200 + r);
    comm->all_gather(c.data(), 2, CommType::bf16);
    for (int q = 0; q < kWorld; ++q) {
      if (c[2 * q] != 100 + q || c[2 * q + 1] != 200 + q) result += fmt::format("all_gather[{}] ", q);
    }
    // broadcast from rank 2, and from rank 0.
    std::vector<std::uint8_t> d(3, static_cast<std::uint8_t>(r));
    comm->broadcast(d.data(), d.size(), CommType::u8, 2);
    if (d != std::vector<std::uint8_t>(3, 2)) result += "broadcast2 ";
    std::vector<std::uint8_t> e(3, static_cast<std::uint8_t>(r + 7));
    comm->broadcast(e.data(), e.size(), CommType::u8, 0);
    if (e != std::vector<std::uint8_t>(3, 7)) result += "broadcast0 ";
    double flags[2] = {r == 1 ? 1.0 : 0.0, 1.0};
    comm->all_reduce_sum_host(flags, 2);
    if (flags[0] != 1.0 || flags[1] != 3.0) result += "host_sum ";
    comm->barrier();
    return result.empty() ? std::string("ok") : result;
  });
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(out[r].text, "ok") << "rank " << r;
}

// The gradient buckets: ranges reduced one after another (crossing shard boundaries, inside
// one shard, empty) leave each rank's shard holding exactly what one reduce_scatter_sum of the
// whole buffer leaves there, bit for bit (values whose float sum depends on the order); the
// elements outside the rank's shard are not written by other ranks' sums. A range outside the
// buffer is refused. gather_to_first: rank 0 gets every shard, the others pass no buffer.
TEST(SocketCommunicator, RangeReductionsAreTheReduceScatterAndGatherReachesRankZero) {
  const int port = dist::free_tcp_port("127.0.0.1");
  constexpr int kWorld = 3;
  constexpr std::size_t kShard = 5, kTotal = kShard * kWorld;
  const auto values = [](int r) {
    std::vector<float> x(kTotal);
    for (std::size_t j = 0; j < kTotal; ++j) x[j] = r == 0 ? 1e8f + static_cast<float>(j) : 3.0f + static_cast<float>(r * j);
    return x;
  };
  const auto out = run_ranks(kWorld, [&](int r) {
    auto comm = make_socket_communicator(Rendezvous::connect(env_for(r, kWorld, port), 20));
    std::string result;
    std::vector<float> whole = values(r), ranges = values(r);
    comm->reduce_scatter_sum(whole.data(), kShard, CommType::f32);
    // Backward order (the end of the buffer first), boundaries inside and across shards.
    const std::size_t cuts[][2] = {{12, 15}, {7, 12}, {7, 7}, {3, 7}, {0, 3}};
    for (const auto& c : cuts) comm->reduce_range_to_owners(ranges.data(), c[0], c[1], kShard, CommType::f32);
    comm->wait_range_reductions();
    for (std::size_t j = r * kShard; j < (r + 1) * kShard; ++j) {
      if (std::memcmp(&whole[j], &ranges[j], sizeof(float)) != 0) {
        result += fmt::format("element {}: {} vs {} ", j, ranges[j], whole[j]);
      }
    }
    try {
      comm->reduce_range_to_owners(ranges.data(), 10, 16, kShard, CommType::f32);
      result += "a range past the end was accepted ";
    } catch (const Error& e) {
      if (!contains(e.what(), "range [10, 16) outside the buffer of 3 shards of 5 elements")) result += e.what();
    }
    std::vector<double> mine(2, 10.0 * r), all(r == 0 ? 2 * kWorld : 0, -1.0);
    mine[1] += 1;
    comm->gather_to_first(mine.data(), r == 0 ? all.data() : nullptr, 2, CommType::f64);
    if (r == 0) {
      for (int q = 0; q < kWorld; ++q) {
        if (all[2 * q] != 10.0 * q || all[2 * q + 1] != 10.0 * q + 1) result += fmt::format("gathered[{}] ", q);
      }
    }
    comm->barrier();  // still in step after the gather
    return result.empty() ? std::string("ok") : result;
  });
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(out[r].text, "ok") << "rank " << r;
}

TEST(SocketCommunicator, RanksInDifferentCollectivesFailWithAMessage) {
  const int port = dist::free_tcp_port("127.0.0.1");
  const auto out = run_ranks(2, [&](int r) {
    auto comm = make_socket_communicator(Rendezvous::connect(env_for(r, 2, port), 20));
    std::vector<float> a(r == 0 ? 4 : 5, 1.0f);
    comm->all_reduce_sum(a.data(), a.size(), CommType::f32);
    return std::string("ok");
  });
  EXPECT_FALSE(out[0].ok);
  EXPECT_TRUE(contains(out[0].text, "out of step")) << out[0].text;
  EXPECT_FALSE(out[1].ok);
  EXPECT_TRUE(contains(out[1].text, "out of step")) << out[1].text;
}

TEST(SocketCommunicator, ARankKilledMidRunStopsTheOthersNamingIt) {
  const int port = dist::free_tcp_port("127.0.0.1");
  const auto out = run_ranks(3, [&](int r) {
    // A long timeout: the others must notice the closed connection, not wait it out.
    auto comm = make_socket_communicator(Rendezvous::connect(env_for(r, 3, port), 120));
    std::vector<float> g(1000, 1.0f);
    for (int step = 0; step < 1000; ++step) {
      if (r == 2 && step == 3) ::raise(SIGKILL);
      comm->all_reduce_sum(g.data(), g.size(), CommType::f32);
      std::fill(g.begin(), g.end(), 1.0f);
    }
    return std::string("finished");
  });
  EXPECT_TRUE(WIFSIGNALED(out[2].wait_status));
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(out[r].ok);
    EXPECT_TRUE(contains(out[r].text, "rank 2 closed its connection")) << "rank " << r << ": " << out[r].text;
    EXPECT_LT(out[r].seconds, 30);
  }
}

TEST(SocketCommunicator, ARankThatHangsIsATimeout) {
  const int port = dist::free_tcp_port("127.0.0.1");
  const auto out = run_ranks(2, [&](int r) {
    auto comm = make_socket_communicator(Rendezvous::connect(env_for(r, 2, port), 1.0));
    if (r == 1) usleep(2500 * 1000);  // alive but silent
    comm->barrier();
    return std::string("ok");
  });
  EXPECT_FALSE(out[0].ok);
  EXPECT_TRUE(contains(out[0].text, "rank 1 did not answer within the timeout")) << out[0].text;
  EXPECT_LT(out[0].seconds, 2.5);
}

// What PeerWatch saw, read by the rank's main thread.
struct Seen {
  std::mutex mutex;
  std::string message;
  std::string get() {
    std::lock_guard<std::mutex> lock(mutex);
    return message;
  }
};

TEST(PeerWatch, AKilledRankIsReportedToEveryOtherRank) {
  const int port = dist::free_tcp_port("127.0.0.1");
  const auto out = run_ranks(3, [&](int r) {
    Seen seen;
    PeerWatch watch(Rendezvous::connect(env_for(r, 3, port), 20), [&](const std::string& why) {
      std::lock_guard<std::mutex> lock(seen.mutex);
      seen.message = why;
    });
    if (r == 2) ::raise(SIGKILL);
    // A rank blocked in a GPU collective would wait here forever: the watch must tell.
    for (int i = 0; i < 1000 && seen.get().empty(); ++i) usleep(10 * 1000);
    return seen.get();
  });
  EXPECT_TRUE(contains(out[0].text, "rank 2 closed its connection")) << out[0].text;
  EXPECT_TRUE(contains(out[1].text, "rank 2 closed its connection")) << out[1].text;  // told by rank 0
}

TEST(PeerWatch, AnOrderlyEndIsNoFailure) {
  const int port = dist::free_tcp_port("127.0.0.1");
  const auto out = run_ranks(3, [&](int r) {
    Seen seen;
    {
      PeerWatch watch(Rendezvous::connect(env_for(r, 3, port), 20), [&](const std::string& why) {
        std::lock_guard<std::mutex> lock(seen.mutex);
        seen.message = why;
      });
      usleep(static_cast<useconds_t>(r) * 100 * 1000);  // the ranks end at different moments
      watch.finish();
      usleep(300 * 1000);
    }
    return seen.get().empty() ? std::string("quiet") : seen.get();
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(out[r].text, "quiet") << "rank " << r;
}

TEST(LocalLauncher, SetsTheVariablesAndSucceedsWhenEveryRankDoes) {
  char dir_template[] = "/tmp/quartet-launch-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  LocalLaunch l;
  l.program = "/bin/sh";
  l.args = {"-c", "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT $EXTRA\" > " + dir +
                      "/rank$RANK"};
  l.processes = 3;
  l.master_port = 29999;
  l.extra_environment = {{"EXTRA", "x"}};
  EXPECT_EQ(launch_local(l), 0);
  for (int r = 0; r < 3; ++r) {
    FILE* f = std::fopen((dir + "/rank" + std::to_string(r)).c_str(), "r");
    ASSERT_NE(f, nullptr);
    char line[256] = {};
    ASSERT_NE(std::fgets(line, sizeof(line), f), nullptr);
    std::fclose(f);
    EXPECT_EQ(std::string(line), fmt::format("{} 3 {} 3 127.0.0.1 29999 x\n", r, r));
    std::remove((dir + "/rank" + std::to_string(r)).c_str());
  }
  ::rmdir(dir.c_str());
}

TEST(LocalLauncher, AFailedRankStopsTheOthersAndNamesIt) {
  LocalLaunch l;
  l.program = "/bin/sh";
  // Rank 1 fails at once; the others would run for a minute.
  l.args = {"-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60"};
  l.processes = 3;
  std::vector<std::string> logged;
  l.log = [&](const std::string& s) { logged.push_back(s); };
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(launch_local(l), 3);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
  ASSERT_FALSE(logged.empty());
  EXPECT_EQ(logged[0], "rank 1 exited with status 3; stopping the other 2 ranks");
}

TEST(LocalLauncher, RanksThatIgnoreSigtermAreKilledAfterTheGracePeriod) {
  LocalLaunch l;
  l.program = "/bin/sh";
  l.args = {"-c", "trap '' TERM; if [ \"$RANK\" = 0 ]; then sleep 0.3; kill -9 $$; fi; sleep 60"};
  l.processes = 2;
  l.grace_seconds = 0.5;
  std::vector<std::string> logged;
  l.log = [&](const std::string& s) { logged.push_back(s); };
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(launch_local(l), 128 + SIGKILL);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
  ASSERT_FALSE(logged.empty());
  EXPECT_TRUE(contains(logged[0], "rank 0 was killed by signal 9")) << logged[0];
}

}  // namespace
}  // namespace quartet

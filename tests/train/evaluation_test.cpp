// Evaluation shared among the ranks of a data-parallel run (evaluation.h), ranks as forked
// processes with the CPU communicator: with 1, 2 and 3 ranks (a window count that does not
// divide evenly), every rank gets the one-process loss and bits per byte bit for bit, having
// run only its own windows.
#include "quartet/train/evaluation.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <fmt/format.h>

#include "dist/rank_processes.h"
#include "dist/socket.h"
#include "quartet/dist/rendezvous.h"

namespace quartet {
namespace {

LlamaConfig eval_model(std::int64_t vocab) {
  LlamaConfig c;
  c.size = "micro";
  c.vocab_size = vocab;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_hidden = 64;
  c.max_seq_len = 16;
  c.init_std = 0.05;
  return c;
}

std::string bits(const Evaluation& e) {
  return fmt::format("{:016x} {:016x}", std::bit_cast<std::uint64_t>(e.loss), std::bit_cast<std::uint64_t>(e.bpb));
}

TEST(Evaluation, RanksShareTheWindowsAndGetTheOneProcessResultBitForBit) {
  const Dataset data = load_dataset("embedded:austen", "byte");
  const auto tokenizer = make_tokenizer(data.tokenizer);
  const std::int64_t batch = 2, seq = 16, windows = 7;
  const auto evaluate_with = [&](Communicator* comm) {
    auto be = make_cpu_backend();
    LlamaModel model(*be, eval_model(tokenizer->vocab_size()), make_recipe("bf16"), 3);
    return evaluate(*be, model, data, *tokenizer, batch, seq, windows, comm);
  };
  // In a forked process too: this process runs no OpenMP region before it forks the ranks.
  const auto plain = test::run_ranks(1, [&](int) {
    const Evaluation e = evaluate_with(nullptr);
    if (!std::isfinite(e.loss) || !(e.bpb > 0)) return fmt::format("no result: loss {} bpb {}", e.loss, e.bpb);
    return bits(e);
  });
  ASSERT_TRUE(plain[0].ok) << plain[0].text;
  const std::string alone = plain[0].text;
  ASSERT_EQ(alone.size(), 33u) << alone;
  for (const int world : {1, 2, 3}) {
    const int port = dist::free_tcp_port("127.0.0.1");
    const auto out = test::run_ranks(world, [&](int r) {
      DistEnvironment env;
      env.rank = r;
      env.world_size = world;
      env.local_rank = r;
      env.local_world_size = world;
      env.master_addr = "127.0.0.1";
      env.master_port = port;
      auto comm = make_socket_communicator(Rendezvous::connect(env, 30));
      const std::string result = bits(evaluate_with(comm.get()));
      comm->finish();
      return result;
    });
    for (int r = 0; r < world; ++r) {
      EXPECT_TRUE(out[r].ok) << world << " ranks, rank " << r << ": " << out[r].text;
      EXPECT_EQ(out[r].text, alone) << world << " ranks, rank " << r;
    }
  }
}

}  // namespace
}  // namespace quartet

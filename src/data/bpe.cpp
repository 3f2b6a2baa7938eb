#include "data/bpe.h"

#include <fmt/format.h>

#include <queue>

#include "quartet/error.h"

namespace quartet::detail {

namespace {

// A candidate merge: the pair starting at symbol `left` had rank `rank` when it was queued.
// Ties go to the leftmost pair, which makes a run of equal-rank pairs merge left to right
// exactly as a scan does ("aaa" with a+a -> "aa" gives [aa, a], not [a, aa]).
struct Candidate {
  std::int32_t rank;
  std::size_t left;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
};

constexpr std::size_t kNone = static_cast<std::size_t>(-1);

}  // namespace

std::vector<std::int32_t> bpe_merge(std::span<const std::int32_t> symbols, const BpeMergeTable& merges) {
  const std::size_t n = symbols.size();
  if (n < 2) return {symbols.begin(), symbols.end()};
  // A doubly linked list over the symbols; a symbol merged into its left neighbour is dead.
  std::vector<std::int32_t> id(symbols.begin(), symbols.end());
  std::vector<std::size_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = i == 0 ? kNone : i - 1;
    next[i] = i + 1 == n ? kNone : i + 1;
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push = [&](std::size_t left) {
    if (left == kNone || next[left] == kNone) return;
    const auto it = merges.find(bpe_pair_key(id[left], id[next[left]]));
    if (it != merges.end()) queue.push({it->second.rank, left});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    // Stale entries (a side was merged away since) are skipped: the pair now starting at
    // `left` must still be the one with this rank.
    if (!alive[c.left] || next[c.left] == kNone) continue;
    const std::size_t right = next[c.left];
    const auto it = merges.find(bpe_pair_key(id[c.left], id[right]));
    if (it == merges.end() || it->second.rank != c.rank) continue;
    id[c.left] = it->second.merged;
    alive[right] = false;
    next[c.left] = next[right];
    if (next[right] != kNone) prev[next[right]] = c.left;
    push(prev[c.left]);
    push(c.left);
  }
  std::vector<std::int32_t> out;
  for (std::size_t i = 0; i != kNone; i = next[i]) out.push_back(id[i]);
  return out;
}

void check_bpe_merge_order(const BpeMergeTable& merges, const std::string& origin) {
  // The highest rank among the merges that make each token.
  std::unordered_map<std::int32_t, std::int32_t> made_at;
  for (const auto& [pair, m] : merges) {
    auto [it, fresh] = made_at.emplace(m.merged, m.rank);
    if (!fresh && m.rank > it->second) it->second = m.rank;
  }
  for (const auto& [pair, m] : merges) {
    for (const auto side : {static_cast<std::int32_t>(pair >> 32), static_cast<std::int32_t>(pair & 0xFFFFFFFFu)}) {
      const auto it = made_at.find(side);
      if (it != made_at.end() && it->second >= m.rank) {
        throw Error(fmt::format("{}: merge {} uses token {}, which merge {} makes later (merges must be in the order "
                                "BPE learned them)",
                                origin, m.rank, side, it->second));
      }
    }
  }
}

}  // namespace quartet::detail

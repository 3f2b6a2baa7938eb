// Byte-pair merging on integer ids, the inner loop of the GPT-2 tokenizer (private to
// src/data; the tests include it to compare against the plain quadratic algorithm).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace quartet {
class Tokenizer;
}

namespace quartet::detail {

struct BpeMerge {
  std::int32_t rank;    // lower merges first
  std::int32_t merged;  // the id the pair becomes
};

inline std::uint64_t bpe_pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
}

struct BpePairHash {
  std::size_t operator()(std::uint64_t v) const { return std::hash<std::uint64_t>()(v * 0x9E3779B97F4A7C15ull); }
};

// (left id, right id) -> merge, keyed by bpe_pair_key.
using BpeMergeTable = std::unordered_map<std::uint64_t, BpeMerge, BpePairHash>;

// Applies the merges to `symbols`: repeatedly the lowest-ranked adjacent pair, every
// occurrence of it left to right. O(n log n) in the number of symbols (a heap of candidate
// pairs over a linked list), where rescanning the whole word per merge took O(n^2) and more.
//
// It gives the same ids as that rescanning loop when every token is made by merges ranked
// below every merge that uses it, as in any vocabulary learned by BPE (GPT-2's included;
// check_bpe_merge_order verifies it when a vocabulary is loaded).
std::vector<std::int32_t> bpe_merge(std::span<const std::int32_t> symbols, const BpeMergeTable& merges);

// Throws Error naming `origin` and the first merge that uses a token made by a merge ranked
// after it (for such a table the fast loop above could differ from the reference).
void check_bpe_merge_order(const BpeMergeTable& merges, const std::string& origin);

// A GPT-2 tokenizer's merge table and the ids of the 256 single bytes (for tests that check
// bpe_merge against the reference loop on the real vocabulary). Throws Error for others.
struct Gpt2BpeTables {
  const BpeMergeTable& merges;
  const std::int32_t (&byte_ids)[256];
};
Gpt2BpeTables gpt2_bpe_tables(const Tokenizer& tokenizer);

}  // namespace quartet::detail

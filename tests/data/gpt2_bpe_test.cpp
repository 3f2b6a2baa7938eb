// The GPT-2 tokenizer's merge loop (data/bpe.h) against the plain algorithm it replaced, which
// rescans the word for its lowest-ranked pair after every merge: same ids on random inputs,
// with random learned vocabularies and with GPT-2's own, and no blow-up on a long piece.
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "data/bpe.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"

namespace quartet {
namespace {

using detail::BpeMergeTable;

// The reference: the tokenizer's loop before the heap (O(n^2) and worse per piece).
std::vector<std::int32_t> reference_bpe(std::vector<std::int32_t> word, const BpeMergeTable& merges) {
  while (word.size() > 1) {
    std::int32_t best_rank = std::numeric_limits<std::int32_t>::max(), merged = -1;
    std::uint64_t best_pair = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merges.find(detail::bpe_pair_key(word[i], word[i + 1]));
      if (it != merges.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        merged = it->second.merged;
        best_pair = it->first;
      }
    }
    if (merged < 0) break;
    std::vector<std::int32_t> next;
    for (std::size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && detail::bpe_pair_key(word[i], word[i + 1]) == best_pair) {
        next.push_back(merged);
        ++i;
      } else {
        next.push_back(word[i]);
      }
    }
    word.swap(next);
  }
  return word;
}

// A vocabulary as BPE learns one: each merge joins two tokens that already exist (bytes or
// the results of earlier merges) into a new token.
BpeMergeTable random_learned_merges(std::mt19937& rng, int alphabet, int count) {
  BpeMergeTable merges;
  std::int32_t tokens = alphabet;
  for (std::int32_t rank = 0; rank < count;) {
    std::uniform_int_distribution<std::int32_t> pick(0, tokens - 1);
    const std::int32_t a = pick(rng), b = pick(rng);
    if (merges.emplace(detail::bpe_pair_key(a, b), detail::BpeMerge{rank, tokens}).second) {
      ++rank;
      ++tokens;
    }
  }
  return merges;
}

TEST(Bpe, MatchesTheReferenceOnRandomLearnedVocabularies) {
  std::mt19937 rng(20261206);
  int words = 0;
  for (int vocab = 0; vocab < 40; ++vocab) {
    const int alphabet = 2 + vocab % 6;  // few symbols: long chains of merges and ties
    const BpeMergeTable merges = random_learned_merges(rng, alphabet, 10 + 5 * vocab);
    detail::check_bpe_merge_order(merges, "random");
    for (int w = 0; w < 100; ++w, ++words) {
      std::vector<std::int32_t> word(std::uniform_int_distribution<std::size_t>(0, 200)(rng));
      for (auto& s : word) s = std::uniform_int_distribution<std::int32_t>(0, alphabet - 1)(rng);
      ASSERT_EQ(detail::bpe_merge(word, merges), reference_bpe(word, merges)) << "vocabulary " << vocab << " word " << w;
    }
  }
  EXPECT_EQ(words, 4000);
}

TEST(Bpe, RunsOfOnePairMergeLeftToRight) {
  BpeMergeTable merges;
  merges.emplace(detail::bpe_pair_key(0, 0), detail::BpeMerge{0, 1});  // a a -> aa
  EXPECT_EQ(detail::bpe_merge(std::vector<std::int32_t>{0, 0, 0}, merges), (std::vector<std::int32_t>{1, 0}));
  merges.emplace(detail::bpe_pair_key(1, 1), detail::BpeMerge{1, 2});  // aa aa -> aaaa
  EXPECT_EQ(detail::bpe_merge(std::vector<std::int32_t>{0, 0, 0, 0, 0}, merges), (std::vector<std::int32_t>{2, 0}));
  EXPECT_TRUE(detail::bpe_merge(std::vector<std::int32_t>{}, merges).empty());
  EXPECT_EQ(detail::bpe_merge(std::vector<std::int32_t>{7}, merges), (std::vector<std::int32_t>{7}));
}

TEST(Bpe, RefusesMergesOutOfLearnedOrder) {
  BpeMergeTable merges;
  merges.emplace(detail::bpe_pair_key(2, 0), detail::BpeMerge{0, 3});  // uses token 2 ...
  merges.emplace(detail::bpe_pair_key(0, 1), detail::BpeMerge{1, 2});  // ... made only later
  try {
    detail::check_bpe_merge_order(merges, "bad/vocab.bpe");
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad/vocab.bpe: merge 0 uses token 2, which merge 1 makes"), std::string::npos)
        << e.what();
  }
}

// Letters only: " ?\p{L}+" makes the whole string one piece, so encode() is one bpe_merge.
std::string random_letters(std::mt19937& rng, std::size_t n) {
  static const std::vector<std::string> letters = {"e", "t", "a", "o", "i", "n", "s", "h", "r", "l", "E", "Q", "z",
                                                   "é", "ß", "λ", "Ж", "東"};
  std::string s;
  std::uniform_int_distribution<std::size_t> pick(0, letters.size() - 1);
  while (s.size() < n) s += letters[pick(rng)];
  return s;
}

TEST(Gpt2Bpe, MatchesTheReferenceOnGpt2sVocabulary) {
  const auto tokenizer = make_tokenizer("gpt2");
  const detail::Gpt2BpeTables tables = detail::gpt2_bpe_tables(*tokenizer);
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::string piece = i % 2 ? " " : "";  // a leading space joins the piece (" ?\p{L}+")
    piece += random_letters(rng, 1 + static_cast<std::size_t>(i) * 7 % 1500);
    std::vector<std::int32_t> bytes;
    for (char c : piece) bytes.push_back(tables.byte_ids[static_cast<unsigned char>(c)]);
    ASSERT_EQ(tokenizer->encode(piece), reference_bpe(bytes, tables.merges)) << "piece of " << piece.size() << " bytes";
  }
  EXPECT_THROW(detail::gpt2_bpe_tables(*make_tokenizer("byte")), Error);
}

// Regression: 64 KB of letters took 14 s (the rescan after every merge); 1 MB now takes well
// under a second. The bound is only a guard against a return to super-linear time.
TEST(Gpt2Bpe, OneMegabytePieceIsFast) {
  const auto tokenizer = make_tokenizer("gpt2");
  std::mt19937 rng(11);
  const std::string text = random_letters(rng, 1 << 20);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::int32_t> ids = tokenizer->encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);
  EXPECT_EQ(tokenizer->decode(ids), text);
  EXPECT_LT(ids.size(), text.size());
}

// Long runs of the other pre-tokenizer classes (whitespace, digits, punctuation) come back whole:
// a regex failure on them must never drop the rest of the text.
TEST(Gpt2Bpe, LongRunsOfEveryCharacterClassRoundTrip) {
  const auto tokenizer = make_tokenizer("gpt2");
  for (const std::string& run : {std::string(1 << 20, ' '), std::string(1 << 20, '\n'), std::string(1 << 20, '7'),
                                 std::string(1 << 20, '!')}) {
    std::string text = "a";  // appended piece by piece: "a" + run trips GCC 12's false -Wrestrict
    text += run;
    text += 'b';
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text) << "a run of " << static_cast<int>(run[0]);
  }
}

}  // namespace
}  // namespace quartet

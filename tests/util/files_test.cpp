// Safe files (util/files.h): temporary names nobody can plant, no write through a symlink, and
// the clean-up of what killed processes left, which removes nothing else.
#include "quartet/util/files.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <set>

#include "quartet/error.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

namespace fs = std::filesystem;

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

// The pid of a process that has exited (and been reaped): the owner of a stale temporary.
long dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

// The temporary name used to be ".<name>.tmp-<pid>", opened without O_EXCL or O_NOFOLLOW: a
// symlink planted there made the write truncate and fill whatever it named.
TEST(SafeFiles, APlantedSymlinkAtTheOldTemporaryNameIsNotFollowed) {
  testing::TempDir dir;
  write_file_atomic(dir.path() / "victim", "precious");
  const fs::path planted = dir.path() / (".out.txt.tmp-" + std::to_string(::getpid()));
  fs::create_symlink(dir.path() / "victim", planted);
  write_file_atomic(dir.path() / "out.txt", "new contents");
  EXPECT_EQ(read_file(dir.path() / "victim"), "precious");
  EXPECT_EQ(read_file(dir.path() / "out.txt"), "new contents");
  EXPECT_TRUE(fs::is_symlink(planted));
}

TEST(SafeFiles, TemporaryNamesAreUnpredictableAndNothingIsLeftBehind) {
  testing::TempDir dir;
  const fs::path a = make_temporary_folder(dir.path(), "step-000001");
  const fs::path b = make_temporary_folder(dir.path(), "step-000001");
  EXPECT_NE(a, b);
  const std::regex pattern("\\.step-000001\\.tmp-" + std::to_string(::getpid()) + "-[A-Za-z0-9]{6}");
  EXPECT_TRUE(std::regex_match(a.filename().string(), pattern)) << a;
  EXPECT_TRUE(std::regex_match(b.filename().string(), pattern)) << b;
  EXPECT_TRUE(fs::is_directory(a) && fs::is_empty(a));
  fs::remove(a);
  fs::remove(b);
  write_file_atomic(dir.path() / "out.txt", "x");
  write_file_atomic(dir.path() / "out.txt", "y");
  EXPECT_EQ(names_in(dir.path()), (std::set<std::string>{"out.txt"}));
  EXPECT_EQ(read_file(dir.path() / "out.txt"), "y");
}

TEST(SafeFiles, AppendingRefusesASymlink) {
  testing::TempDir dir;
  write_file_atomic(dir.path() / "victim", "precious\n");
  fs::create_symlink(dir.path() / "victim", dir.path() / "metrics.jsonl");
  try {
    AppendFile f(dir.path() / "metrics.jsonl");
    ADD_FAILURE() << "appending through a symlink was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("symlink"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(dir.path() / "victim"), "precious\n");
  {
    AppendFile f(dir.path() / "plain.jsonl");
    f.write("a\n");
    f.write("b\n");
  }
  AppendFile(dir.path() / "plain.jsonl").write("c\n");
  EXPECT_EQ(read_file(dir.path() / "plain.jsonl"), "a\nb\nc\n");
}

TEST(SafeFiles, StaleTemporariesOfDeadProcessesAreRemovedAndNothingElse) {
  testing::TempDir dir, elsewhere;
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(::getpid());
  const fs::path d = dir.path();
  const std::vector<std::string> stale = {".step-000002.tmp-" + dead + "-AbC123",  // a killed save
                                          ".step-000002.old-" + dead + "-zzzzzz",  // a killed replace
                                          ".step-000003.tmp-" + dead,              // an older version's name
                                          ".latest.tmp-" + dead + "-q1w2e3"};      // a killed write_file_atomic
  for (const std::string& n : stale) {
    if (n.rfind(".latest", 0) == 0) {
      write_file_atomic(d / n, "step-0000");
    } else {
      fs::create_directories(d / n);
      write_file_atomic(d / n / "model.safetensors", "torn");
    }
  }
  // A planted symlink with our pattern: the link goes, what it names stays.
  write_file_atomic(elsewhere.path() / "keep.txt", "keep");
  fs::create_symlink(elsewhere.path(), d / (".evil.tmp-" + dead + "-abcdef"));
  const std::vector<std::string> kept = {"step-000002",
                                         "notes.txt",
                                         ".hidden",
                                         ".step-000004.tmp-" + live + "-AbC123",  // a live process's save
                                         ".step-000002.tmp-" + dead + "-toolong7",
                                         ".step-000002.tmp-x" + dead,
                                         "step-000002.tmp-" + dead + "-AbC123"};
  for (const std::string& n : kept) fs::create_directories(d / n);
  const std::vector<fs::path> removed = remove_stale_temporaries(d);
  EXPECT_EQ(removed.size(), stale.size() + 1);
  std::set<std::string> expected(kept.begin(), kept.end());
  EXPECT_EQ(names_in(d), expected);
  EXPECT_EQ(read_file(elsewhere.path() / "keep.txt"), "keep");
  EXPECT_TRUE(remove_stale_temporaries(d / "no-such-folder").empty());
}

TEST(PlainNames, OnlyOneOrdinaryPathComponent) {
  for (const char* good : {"step-000100", "a", "..a", "a..", ".hidden", "x y", "run_1"}) {
    EXPECT_TRUE(is_plain_name(good)) << good;
  }
  for (const char* bad : {"", ".", "..", "../x", "a/b", "/abs", "a/", "/"}) EXPECT_FALSE(is_plain_name(bad)) << bad;
  EXPECT_FALSE(is_plain_name(std::string("a\0b", 3)));
  try {
    check_plain_name("../../x", "--name");
    ADD_FAILURE() << "accepted ../../x";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--name '../../x'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quartet

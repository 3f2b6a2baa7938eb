// Running programs without a shell, and gnuplot string literals: nothing a user names (an
// output folder, a data source in a shared config) may be read as a command.
#include "quartet/util/process.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "quartet/util/text.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

TEST(RunProgram, PassesArgumentsAsTheyAre) {
  const ProgramResult r = run_program({"printf", "%s|%s", "$(echo injected); `id`", "a'b;c && d"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "$(echo injected); `id`|a'b;c && d");
}

TEST(RunProgram, RunsInTheGivenFolder) {
  testing::TempDir dir;
  const std::filesystem::path odd = dir.path() / "it's; rm -rf $HOME";
  std::filesystem::create_directories(odd);
  const ProgramResult r = run_program({"pwd"}, odd);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(std::filesystem::path(r.output.substr(0, r.output.size() - 1)), std::filesystem::canonical(odd));
}

TEST(RunProgram, ReportsStatusAndMissingPrograms) {
  EXPECT_EQ(run_program({"sh", "-c", "exit 3"}).exit_code, 3);
  EXPECT_EQ(run_program({"quartet-no-such-program-here"}).exit_code, 127);
  EXPECT_EQ(run_program({"sh", "-c", "echo out; echo err >&2"}).output, "out\nerr\n");
  EXPECT_EQ(run_program({"sh", "-c", "echo out; echo err >&2"}, {}, false).output, "out\n");
}

TEST(GnuplotQuoted, NoTextCanLeaveTheLiteral) {
  EXPECT_EQ(gnuplot_quoted("plain"), "'plain'");
  EXPECT_EQ(gnuplot_quoted("a'b"), "'a''b'");
  EXPECT_EQ(gnuplot_quoted("x'\nsystem('touch /tmp/p')\n'"), "'x'' system(''touch /tmp/p'') '''");
}

}  // namespace
}  // namespace quartet

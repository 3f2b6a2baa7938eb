// The progress line's times, with a fake clock: the ETA of a resumed run and the elapsed time
// the final report quotes.
#include "cli/progress.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace quartet::cli {
namespace {

// Everything the line printed (it writes to a FILE*; a temporary file stands in for stderr).
class Captured {
 public:
  Captured() : file_(std::tmpfile()) {}
  ~Captured() { std::fclose(file_); }
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    std::rewind(file_);
    std::string s;
    for (int c; (c = std::fgetc(file_)) != EOF;) s += static_cast<char>(c);
    return s;
  }

 private:
  std::FILE* file_;
};

TEST(Progress, EtaOfAResumedRunCountsOnlyTheStepsDoneSinceTheResume) {
  double now = 100.0;
  Captured out;
  ProgressLine line("train", [&] { return now; }, out.file());
  line.set_start(40);  // resumed at step 40 of 100
  now += 10.0;         // 10 steps in 10 s: 1 s a step, 50 steps to go
  line.update(50, 100, "loss 1");
  // Counting the 40 steps before the resume gave 10 s x 50 / 50 = 10 s.
  EXPECT_NE(out.text().find("elapsed 10s  eta 50s"), std::string::npos) << out.text();
}

TEST(Progress, EtaOfAFreshRun) {
  double now = 0.0;
  Captured out;
  ProgressLine line("train", [&] { return now; }, out.file());
  now = 30.0;
  line.update(3, 10, "x");
  EXPECT_NE(out.text().find("elapsed 30s  eta 1m10s"), std::string::npos) << out.text();
}

TEST(Progress, EtaLeavesOutTheTimeBeforeTheFirstStep) {
  double now = 0.0;
  Captured out;
  ProgressLine line("train", [&] { return now; }, out.file());
  now = 20.0;  // 19 s of loading, then a 1 s step... so far indistinguishable
  line.update(1, 11, "x");
  now = 30.0;  // step 2 took 10 s: 9 steps to go at 10 s
  line.update(2, 11, "y");
  // Counting the loading as work gave 30 s x 9 / 2 = 2m15s.
  EXPECT_NE(out.text().find("[2/11] y  elapsed 30s  eta 1m30s"), std::string::npos) << out.text();
}

TEST(Progress, EtaHelper) {
  EXPECT_DOUBLE_EQ(eta_seconds(10.0, 40, 50, 100), 50.0);
  EXPECT_DOUBLE_EQ(eta_seconds(10.0, 0, 50, 100), 10.0);
  EXPECT_DOUBLE_EQ(eta_seconds(10.0, 50, 50, 100), 0.0);  // nothing done here yet: no estimate
  EXPECT_DOUBLE_EQ(eta_seconds(10.0, 0, 100, 100), 0.0);
}

TEST(Progress, LastElapsedIsWhatTheLastUpdateShowedEvenWhenSilent) {
  double now = 5.0;
  Captured out;
  ProgressLine line("train", [&] { return now; }, out.file());
  now = 65.0;
  line.update(1, 2, "x");
  EXPECT_DOUBLE_EQ(line.last_elapsed(), 60.0);
  EXPECT_NE(out.text().find("elapsed 1m00s"), std::string::npos) << out.text();
  line.set_silent(true);
  now = 125.0;
  line.update(2, 2, "y");
  EXPECT_DOUBLE_EQ(line.last_elapsed(), 120.0);
  EXPECT_EQ(out.text().find("[2/2]"), std::string::npos) << "a silent line prints nothing";
}

}  // namespace
}  // namespace quartet::cli

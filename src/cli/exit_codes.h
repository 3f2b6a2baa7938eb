// The program's exit status, one scheme for every command (documented in
// docs/hardening-cli.md). Scripts tell "fix the command line" (2) from "the run failed" (1)
// without parsing messages; CLI11's own codes (104-114) never leak out.
#pragma once

namespace quartet::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntimeError = 1;   // the work failed: missing data, unwritable folder, bad checkpoint...
inline constexpr int kExitUsageError = 2;     // the command line or config file is wrong; nothing was started
inline constexpr int kExitInternalError = 3;  // an unexpected exception: a bug
// Interrupted runs end by the signal itself (the shell reports 128 + signal: 130 for Ctrl-C,
// 143 for SIGTERM); checkpoints are written atomically, so the last complete one stays valid.

}  // namespace quartet::cli

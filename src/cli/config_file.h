// `quartet <command> --config FILE`: options read from a TOML file (CLI11's parser), with the
// flags given on the command line taking precedence. Keys are option names without the
// dashes, with '-' or '_' between words (steps = 600, recipe = "quartet2", forward_only = true);
// a [<command>] section may hold them too, and sections of the other commands are skipped, so
// one file can serve train and compare. Unknown keys and sections, values of the wrong type,
// keys given twice and a second --config are refused, naming the file and the key (see
// docs/hardening-cli.md). CLI11 itself reads config files only for the top-level program, so
// the file's items are turned into that command's arguments, placed before the user's own.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace quartet::cli {

// Registers --config on a subcommand (for --help) and makes later values of an option win.
void add_config_option(CLI::App& command, std::string& path);

// args: the command line without the program name. Returns it with any --config expanded.
// Throws Error naming the file and the key (or the unreadable file).
std::vector<std::string> expand_config_files(CLI::App& app, std::vector<std::string> args);

}  // namespace quartet::cli
